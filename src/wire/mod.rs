//! The wire: the contract. The generated protobuf and gRPC types of `ratingd.v1` ([`proto`]), the
//! codec every service uses ([`codec`]), and pure conversions between proto and domain types
//! ([`convert`], [`balance`], [`paging`]), whose only error is bad input ([`InputError`]); the
//! usage file formats ([`usage_file`], [`mapping`]). It knows nothing of the pipeline or the
//! store: their errors are mapped to statuses at the service edge (`edge`). Nothing below the
//! services (domain, rating, store, pipeline, telemetry) names tonic or a proto type.

pub mod balance;
pub mod codec;
pub mod convert;
pub mod error;
pub mod mapping;
pub mod paging;
pub mod proto;
pub mod usage_file;

pub use error::{InputError, SubscriptionInputError};
