//! Every type that crosses the kernel/user boundary.
//!
//! Rules (DESIGN.md): `#[repr(C)]`, explicit padding, `u32` flags instead of `bool`, addresses
//! and ports as network-order byte arrays behind constructors, and a size assertion per type so a
//! layout change breaks the build instead of silently corrupting a pinned map.
//!
//! Addresses: IPv4 is stored v4-mapped (`::ffff:a.b.c.d`) so one key type serves both families.
#![no_std]
#![warn(missing_docs)]

pub mod addr;
pub mod csum;
pub mod frag;
pub mod fw;
pub mod guard;
pub mod maps;
pub mod ratelimit;
pub mod relay;
pub mod route;
pub mod rtp;
pub mod stats;

pub use addr::Addr;

/// How far behind CLOCK_MONOTONIC the XDP program's clock may be: it reads the coarse clock
/// (`bpf_ktime_get_coarse_ns`, updated once a tick; 10 ms at HZ=100, the lowest usual), so a
/// ban, fragment verdict or learning window ends up to this much later than its deadline, and
/// a last-seen time reads up to this much early. (The SIP guard's rates use the precise
/// clock.)
pub const KERNEL_CLOCK_LAG_NS: u64 = 10_000_000;

/// Implements `aya::Pod` for map types in userspace builds and asserts their size everywhere.
macro_rules! map_type {
    ($t:ty, $size:expr) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $size);
        #[cfg(feature = "user")]
        // SAFETY: `$t` is `#[repr(C)]`, `Copy`, has no implicit padding (asserted by size) and
        // every bit pattern is a valid value.
        unsafe impl aya::Pod for $t {}
    };
}
pub(crate) use map_type;
