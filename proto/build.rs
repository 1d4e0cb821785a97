//! Compiles the wire contract with protox (a pure-Rust protobuf compiler), so building needs no
//! `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "arqon/v1/arqon.proto",
        "arqon/nvm/v1/nvm.proto",
        "arqon/policy/v1/policy.proto",
        "arqon/operator/v1/operator.proto",
        "arqon/sim/v1/sim.proto",
        "arqon/circuit/v1/circuit.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["."])?;
    // The descriptor set itself, for tools that read payloads given as JSON (`policy test`).
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("arqon_descriptor_set.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    prost_build::Config::new()
        .bytes(["."])
        // Maps encode in key order, so one envelope always encodes to the same bytes: replay
        // compares operator outputs bit for bit, across processes.
        .btree_map(["."])
        .enable_type_names()
        .type_name_domain(["."], "type.googleapis.com")
        .compile_fds(descriptors)?;
    Ok(())
}
