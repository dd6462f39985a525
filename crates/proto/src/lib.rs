//! Fabric's wire format, as korder speaks it.
//!
//! The `.proto` files under `protos/` are korder's own definitions of the messages a
//! Fabric orderer exchanges and stores; field numbers and types are Fabric's, so the
//! bytes are interchangeable with Fabric's. Fields that Fabric treats as opaque
//! `bytes` (an envelope's payload, a block's data entries, a config update) are kept
//! as received: whatever is hashed or signed is never re-encoded.
//!
//! This crate holds types only. It must never grow I/O, policy or business logic.
//! The `grpc` feature adds the AtomicBroadcast client and server stubs, and with them
//! tonic's transport; crates that only read or write Fabric's messages (the chain
//! state machine, the ledger, the config tree) leave it off and compile no transport.

#![allow(clippy::all, missing_docs)]

/// `package common`: envelopes, headers, blocks, config transactions, policies, principals.
pub mod common {
    include!(concat!(env!("OUT_DIR"), "/common.rs"));
}

/// `package msp`: serialized identities and MSP configuration.
pub mod msp {
    include!(concat!(env!("OUT_DIR"), "/msp.rs"));
}

/// `package orderer`: seek messages, log records, orderer config values; with the `grpc`
/// feature, the AtomicBroadcast client and server stubs.
pub mod orderer {
    include!(concat!(env!("OUT_DIR"), "/orderer.rs"));
}

/// `package etcdraft`: the Raft consensus metadata of a channel config, decoded only to
/// check consensus-type migrations.
pub mod etcdraft {
    include!(concat!(env!("OUT_DIR"), "/etcdraft.rs"));
}

/// `package protos`: peer values an orderer parses in application channel configs.
pub mod peer {
    include!(concat!(env!("OUT_DIR"), "/protos.rs"));
}

pub use prost::Message;
pub use prost_types::Timestamp;
