//! Compiles proto/*.proto with protox (pure Rust, so no protoc install is needed).
//!
//! The messages of admin.proto also derive serde's `Serialize`/`Deserialize` (every field
//! defaulted, unknown fields rejected), so tools can print them as JSON and read job
//! specs from JSON files with the same field names as the proto.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto");
    println!("cargo:rerun-if-changed={proto_dir}");
    let files =
        ["admin.proto", "raft.proto", "agent.proto"].map(|name| format!("{proto_dir}/{name}"));
    let existing: Vec<&String> = files
        .iter()
        .filter(|path| std::path::Path::new(path).exists())
        .collect();
    let descriptors = protox::compile(existing, [proto_dir])?;
    let mut builder = tonic_prost_build::configure().btree_map(".");
    for file in descriptors
        .file
        .iter()
        .filter(|file| file.name() == "admin.proto")
    {
        for message in &file.message_type {
            let path = format!(".{}.{}", file.package(), message.name());
            builder = builder
                .message_attribute(&path, "#[derive(::serde::Serialize, ::serde::Deserialize)]")
                .message_attribute(&path, "#[serde(default, deny_unknown_fields)]");
        }
    }
    builder.compile_fds(descriptors)?;
    Ok(())
}
