//! The generated protobuf and gRPC code of `proto/segmentd/v1/segmentd.proto`.

#![allow(
    missing_docs,
    clippy::large_enum_variant,
    clippy::doc_lazy_continuation
)]

tonic::include_proto!("segmentd.v1");

/// The encoded file descriptor set of segmentd's protos, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("segmentd_descriptor");

/// The full gRPC name of the segment service, as health checks name it.
pub const SERVICE_NAME: &str = "segmentd.v1.SegmentService";

/// The full gRPC name of the admin service (tenants and API keys).
pub const ADMIN_SERVICE_NAME: &str = "segmentd.v1.AdminService";
