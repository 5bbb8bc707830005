use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// Builds relay-ebpf for bpfel with nightly + bpf-linker and leaves the object in OUT_DIR, where
/// `include_bytes_aligned!` picks it up. `AYA_BUILD_SKIP=1` skips it (clippy/doc runs that do not
/// need the object) and the loader then reports the object as missing.
///
/// aya-build runs the nested cargo itself and passes every line it prints on as
/// `cargo:warning=`, so its progress (`Compiling …`, `Finished …`) would show as dozens of
/// warnings. The nested cargo is therefore told to be quiet (`CARGO_TERM_QUIET`): what is left
/// are compiler diagnostics (warnings and errors, which aya-build forwards from the JSON
/// messages) and cargo's errors, so a failing eBPF build still shows all of why.
fn main() -> anyhow::Result<()> {
    let out_dir = std::path::PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR")?);
    let skip =
        std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        // Keeps include_bytes! compiling; the loader rejects an empty object with a clear error.
        let obj = out_dir.join("relay-ebpf");
        if !obj.exists() {
            std::fs::write(&obj, b"").context("placeholder object")?;
        }
    }
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "relay-ebpf")
        .ok_or_else(|| anyhow!("relay-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("relay-ebpf manifest has no parent"))?;
    // The object is built from relay-ebpf and its path dependencies (relay-common): a change to
    // any of them must rebuild it. aya-build watches relay-ebpf's directory; these are the rest.
    for dep in &ebpf.dependencies {
        if let Some(path) = &dep.path {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    // SAFETY: the build script is single-threaded here; the variable is read by the child cargo
    // aya-build spawns.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
