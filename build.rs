//! Regenerates include/pfn.h from the Rust sources with cbindgen, and sets the soname.

use std::env;
use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets this"));
    let major = env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets this");
    let minor = env::var("CARGO_PKG_VERSION_MINOR").expect("cargo sets this");
    let patch = env::var("CARGO_PKG_VERSION_PATCH").expect("cargo sets this");

    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libpfn.so.{major}");
    // Never unloaded: dlclose() leaves it resident, so the thread-exit and fork handlers it
    // installs never point into unloaded code.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");

    let mut config =
        cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml parses");
    config.after_includes = Some(format!(
        "\n#define PFN_VERSION_MAJOR {major}\n#define PFN_VERSION_MINOR {minor}\n\
         #define PFN_VERSION_PATCH {patch}\n#define PFN_VERSION_STRING \"{major}.{minor}.{patch}\"\n"
    ));
    cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write_to_file(dir.join("include/pfn.h"));
}
