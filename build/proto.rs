//! Generates the Rust types of the image schema (`proto/*.proto`, package
//! `criu`) into `$OUT_DIR/criu.rs`. protox parses the files in pure Rust, so
//! no `protoc` is needed; prost-build turns the descriptors into code.

use std::path::{Path, PathBuf};

pub fn generate() {
    // Read at run time: a build script compiled for one checkout may be
    // run again for another that shares its target directory.
    let manifest =
        std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR is set by cargo");
    let proto_dir = Path::new(&manifest).join("proto");
    println!("cargo:rerun-if-changed=proto");

    let mut files: Vec<PathBuf> = std::fs::read_dir(&proto_dir)
        .unwrap_or_else(|e| panic!("{}: {e}", proto_dir.display()))
        .map(|entry| entry.expect("reading proto/").path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    files.sort();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }

    let fds = match protox::compile(&files, [&proto_dir]) {
        Ok(fds) => fds,
        // protox errors render best with their Debug (miette) form.
        Err(e) => panic!("compiling proto/*.proto: {e:?}"),
    };

    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    prost_build::Config::new()
        .out_dir(&out_dir)
        .compile_fds(fds)
        .unwrap_or_else(|e| panic!("generating Rust code for proto/: {e}"));

    // Every file declares `package criu;`, so prost writes one criu.rs.
    assert!(
        out_dir.join("criu.rs").exists(),
        "prost-build did not produce criu.rs (is every proto/ file in package criu?)"
    );
}
