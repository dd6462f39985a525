//! Compiles `protos/` with a pure-Rust protobuf compiler (protox), so that building
//! korder never needs a system `protoc`.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "common/common.proto",
    "common/ledger.proto",
    "common/configtx.proto",
    "common/configuration.proto",
    "common/policies.proto",
    "msp/msp_principal.proto",
    "msp/identities.proto",
    "msp/msp_config.proto",
    "orderer/ab.proto",
    "orderer/kafka.proto",
    "orderer/configuration.proto",
    "orderer/etcdraft.proto",
    "peer/configuration.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("protos");
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    println!("cargo:rerun-if-changed=protos");
    let descriptors = protox::compile(&files, [&root])?;
    // The AtomicBroadcast client and server stubs need tonic; only the `grpc` feature
    // brings it in, so that the crates that merely read Fabric's messages compile no
    // transport.
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure()
        // Bytes fields share one allocation with the buffer they were decoded from.
        .bytes(".")
        // Sorted maps: a config tree re-encodes the same way every time.
        .btree_map(".")
        .build_client(grpc)
        .build_server(grpc)
        .compile_fds(descriptors)?;
    Ok(())
}
