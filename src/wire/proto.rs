//! Generated protobuf and gRPC types of package `ratingd.v1`.
#![allow(clippy::all, missing_docs)]

tonic::include_proto!("ratingd.v1");

/// The encoded file descriptor set, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ratingd_descriptor");
