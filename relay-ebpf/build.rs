use which::which;

/// Rebuild when bpf-linker changes (e.g. `cargo xtask setup` installs a new one), and fail early
/// with the fix when it is missing.
fn main() {
    match which("bpf-linker") {
        Ok(p) => println!("cargo:rerun-if-changed={}", p.display()),
        Err(e) => panic!("bpf-linker not found ({e}): run `cargo xtask setup`"),
    }
}
