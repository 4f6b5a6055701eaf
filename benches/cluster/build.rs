//! Compiles the subset of etcd's v3 API the benchmark uses (proto/etcd_subset.proto)
//! with protox, so neither `protoc` nor the etcd-client crate (whose build needs
//! `protoc`) is required.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
    println!("cargo:rerun-if-changed={proto_dir}");
    let descriptors = protox::compile([format!("{proto_dir}/etcd_subset.proto")], [proto_dir])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(descriptors)?;
    Ok(())
}
