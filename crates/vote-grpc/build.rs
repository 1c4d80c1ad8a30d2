//! Generates the VoteService server and client from `proto/votes.proto`, reusing vote-core's
//! message types, plus the descriptor set that the reflection service serves.
fn main() -> std::io::Result<()> {
    // Read at run time, not baked in when the script is compiled: a target directory shared by
    // clones at different paths reuses the compiled script.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let proto_dir = format!("{manifest_dir}/../../proto");
    println!("cargo:rerun-if-changed={proto_dir}/votes.proto");
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    tonic_prost_build::configure()
        .extern_path(".votes.v1", "::vote_core::proto")
        .file_descriptor_set_path(out_dir.join("votes_descriptor.bin"))
        .compile_protos(&[format!("{proto_dir}/votes.proto")], &[proto_dir.clone()])
}
