//! The wire: the generated protobuf and gRPC types of `ratingd.v1` ([`proto`]), the codec every
//! service uses ([`codec`]), every conversion between proto and domain types, and the one mapping
//! of errors to gRPC statuses. Services speak proto through here; nothing below them (domain,
//! rating, store, pipeline, telemetry) names tonic or a proto type.

pub mod balance;
pub mod codec;
pub mod convert;
pub mod mapping;
pub mod paging;
pub mod proto;
pub mod status;
pub mod usage_file;

pub use status::ApiError;
