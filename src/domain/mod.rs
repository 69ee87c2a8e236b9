//! Pure domain types and rules: money, usage events, tariffs, billing periods, subscriptions.
//! Nothing here does I/O or knows of tokio, tonic, sled or redis.

pub mod aggregate;
pub mod alert;
pub mod balance;
pub mod charge;
pub mod correction;
pub mod hex;
pub mod keyed;
pub mod localtime;
pub mod mediation;
pub mod money;
pub mod origin;
pub mod partial;
pub mod period;
pub mod record;
pub mod subscription;
pub mod tariff;
pub mod tariff_file;
pub mod usage;
