//! Generates the tonic/prost code from `proto/kdfs.proto` and `proto/raft.proto` (the
//! namenodes' Raft traffic), both package `kdfs.v1`.
//!
//! `protoc` comes from the `protoc-bin-vendored` crate so a fresh machine needs nothing
//! installed; `$PROTOC` still overrides it.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing else reads the environment.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    println!("cargo:rerun-if-changed=proto/kdfs.proto");
    println!("cargo:rerun-if-changed=proto/raft.proto");
    tonic_prost_build::configure()
        .bytes(".")
        .compile_protos(&["proto/kdfs.proto", "proto/raft.proto"], &["proto"])?;
    Ok(())
}
