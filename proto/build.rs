//! Compiles the contract with protox (pure Rust: no system `protoc` needed).

use prost::Message;

const PROTOS: &[&str] = &[
    "cii/common/v1/common.proto",
    "cii/gateway/v1/gateway.proto",
    "cii/node/v1/node.proto",
    "cii/consent/v1/consent.proto",
    "cii/audit/v1/audit.proto",
    "cii/audit/v1/entry.proto",
    "cii/policy/v1/policy.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=cii");
    let fds = protox::compile(PROTOS, ["."])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // Kept with source info: reflection serves the doc comments, and the
    // contract test checks that every element has one.
    std::fs::write(out.join("cii_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // The stubs exist only behind the crate's features, so that crates
        // wanting messages only never link tonic.
        .server_mod_attribute(".", "#[cfg(feature = \"server\")]")
        .client_mod_attribute(".", "#[cfg(feature = \"client\")]")
        .compile_fds(fds)?;
    Ok(())
}
