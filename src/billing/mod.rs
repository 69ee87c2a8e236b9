//! The billing cycle: what happens as a billing period runs and closes. Below the services (they
//! call it), above the pipeline (it writes through the pipeline's door and reads the committed
//! view).
//!
//! - [`proration`]: what fees and minimum commitments are due for a period, prorated by the
//!   second over the time subscriptions are in force (pure);
//! - [`fees`]: the [`fees::Biller`] writes fees (in advance, in arrears) and minimum true-ups as
//!   records through the pipeline, exactly once;
//! - [`close`]: the closer's loop (fees, closes, retention every interval) and the close of a
//!   period: barrier, final totals, announcement;
//! - [`retention`]: which closed periods' records leave the data dir, and when;
//! - [`statement`]: invoice-ready line items rebuilt from the records, with what is still
//!   accruing ([`accrual`]);
//! - [`part`]: how one plan's part of an account-period stands (bounds, closed, coverage);
//! - [`projection`]: the projected period-end charge;
//! - [`explain`]: the explanation of records ratingd writes itself.

pub mod accrual;
pub mod close;
pub mod explain;
pub mod fees;
pub mod part;
pub mod projection;
pub mod proration;
pub mod retention;
pub mod statement;
