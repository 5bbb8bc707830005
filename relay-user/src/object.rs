//! The compiled XDP object, embedded at build time by `build.rs` (aya-build).

/// The ELF object of `relay-ebpf`. Empty when built with `AYA_BUILD_SKIP=1`.
pub fn ebpf_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/relay-ebpf"))
}
