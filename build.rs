//! Compiles the protos with protox (pure Rust), so a fresh `cargo build` needs no `protoc`.

use std::path::PathBuf;

use protox::prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/segmentd/v1/segmentd.proto"];
    println!("cargo:rerun-if-changed=proto");

    let file_descriptors = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    std::fs::write(
        out_dir.join("segmentd_descriptor.bin"),
        file_descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(file_descriptors)?;
    Ok(())
}
