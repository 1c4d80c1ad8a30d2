//! The gRPC side of the `votes.v1` contract: the generated `VoteService` server and client, and
//! the encoded descriptor set for gRPC reflection. Messages come from [`vote_core::proto`].

include!(concat!(env!("OUT_DIR"), "/votes.v1.rs"));

/// The encoded `FileDescriptorSet` of `proto/votes.proto`, for the reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/votes_descriptor.bin"));

pub use vote_service_client::VoteServiceClient;
pub use vote_service_server::{VoteService, VoteServiceServer};
