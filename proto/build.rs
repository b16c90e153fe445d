//! Compiles the contract with protox (pure Rust: no system `protoc` needed).

const PROTOS: &[&str] = &[
    "cii/common/v1/common.proto",
    "cii/gateway/v1/gateway.proto",
    "cii/node/v1/node.proto",
    "cii/consent/v1/consent.proto",
    "cii/audit/v1/audit.proto",
    "cii/audit/v1/entry.proto",
    "cii/policy/v1/policy.proto",
    "cii/exchange/v1/catalogue.proto",
    "cii/witness/v1/witness.proto",
    "cii/transcryptor/v1/transcryptor.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=cii");
    let mut compiler = protox::Compiler::new(["."])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files(PROTOS)?;
    let fds = compiler.file_descriptor_set();
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // Kept with source info (reflection serves the doc comments, and the
    // contract test checks that every element has one) and with the custom
    // options (the data category of every payload field), which
    // `prost_types` alone would drop.
    std::fs::write(out.join("cii_descriptor.bin"), compiler.encode_file_descriptor_set())?;
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
