//! Compiles the sidecar's gRPC service (proto/arqon/sidecar/v1/sidecar.proto) with protox, so
//! building needs no `protoc`. The bus's own messages come from `arqonbus-proto`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = "arqon/sidecar/v1/sidecar.proto";
    println!("cargo:rerun-if-changed=../proto/{file}");
    let descriptors = protox::compile([file], ["../proto"])?;
    // prost-build needs every descriptor the file refers to; `extern_path` makes the generated
    // code use arqonbus-proto's types, and lib.rs includes only the sidecar's own module.
    tonic_prost_build::configure()
        .build_transport(false)
        .bytes(".")
        .btree_map(".")
        .extern_path(".arqon.v1", "::arqonbus_proto::v1")
        .compile_fds(descriptors)?;
    Ok(())
}
