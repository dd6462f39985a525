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
    tonic_prost_build::configure()
        // Bytes fields share one allocation with the buffer they were decoded from.
        .bytes(".")
        // Sorted maps: a config tree re-encodes the same way every time.
        .btree_map(".")
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
