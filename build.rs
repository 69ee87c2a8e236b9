//! Compiles `proto/ratingd/v1/*.proto` with protox (no system protoc) and tonic-prost-build, and
//! writes the encoded descriptor set to OUT_DIR for server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/ratingd/v1/ingest.proto"];
    for proto in &protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("ratingd_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    // A message that does not parse is INVALID_ARGUMENT, not INTERNAL (see src/wire/codec.rs).
    tonic_prost_build::configure()
        .codec_path("crate::wire::codec::StrictCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
