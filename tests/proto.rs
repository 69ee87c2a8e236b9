//! The gRPC contract as other languages' tools see it: stock `protoc` (Debian's
//! protobuf-compiler, installed by scripts/test.sh) compiles proto/ratingd/v1/ingest.proto, and
//! its descriptors agree with the ones ratingd is built from (protox) on every message, field,
//! service and method: what Python, Go or Java stubs are generated from is what ratingd serves.

mod common;

use std::collections::BTreeMap;

use prost::Message;
use prost_types::FileDescriptorSet;

/// Every message's fields and every service's methods, as comparable text.
fn shape(set: &FileDescriptorSet) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for file in set.file.iter().filter(|f| f.package() == "ratingd.v1") {
        for m in &file.message_type {
            let fields = m
                .field
                .iter()
                .map(|f| {
                    format!(
                        "{} = {} {:?} {:?} {}",
                        f.name(),
                        f.number(),
                        f.label(),
                        f.r#type(),
                        f.type_name()
                    )
                })
                .collect();
            out.insert(format!("message {}", m.name()), fields);
        }
        for e in &file.enum_type {
            let values = e
                .value
                .iter()
                .map(|v| format!("{} = {}", v.name(), v.number()))
                .collect();
            out.insert(format!("enum {}", e.name()), values);
        }
        for s in &file.service {
            let methods = s
                .method
                .iter()
                .map(|m| {
                    format!(
                        "{}({}{}) -> {}{}",
                        m.name(),
                        if m.client_streaming() { "stream " } else { "" },
                        m.input_type(),
                        if m.server_streaming() { "stream " } else { "" },
                        m.output_type()
                    )
                })
                .collect();
            out.insert(format!("service {}", s.name()), methods);
        }
    }
    out
}

#[test]
fn stock_protoc_compiles_the_contract_as_ratingd_is_built_from_it() {
    let dir = common::TempDir::new("protoc");
    let out = dir.0.join("ratingd.bin");
    let mut protoc = std::process::Command::new("protoc");
    protoc
        .current_dir(common::repo())
        .arg("-Iproto")
        .arg(format!("--descriptor_set_out={}", out.display()))
        .arg("proto/ratingd/v1/ingest.proto");
    let run = common::output_within(&mut protoc, 60);
    assert!(
        run.status.success(),
        "protoc (scripts/test.sh installs protobuf-compiler) refused the contract:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let by_protoc = FileDescriptorSet::decode(std::fs::read(&out).unwrap().as_slice()).unwrap();
    let built = FileDescriptorSet::decode(ratingd::wire::proto::FILE_DESCRIPTOR_SET).unwrap();
    let (protoc_shape, built_shape) = (shape(&by_protoc), shape(&built));
    assert!(protoc_shape.len() > 30, "{protoc_shape:?}");
    assert_eq!(protoc_shape, built_shape);
    // The method whose reply named the rpc instead of the message to protoc.
    let query = &built_shape["service Query"];
    assert!(
        query.contains(&"Statement(.ratingd.v1.StatementRequest) -> .ratingd.v1.Statement".to_string()),
        "{query:?}"
    );
}
