//! Addresses as two machine words.
//!
//! `relay_common::Addr` is sixteen bytes with alignment 1. The BPF backend cannot load a
//! misaligned word, so every copy or comparison of an `Addr` becomes sixteen byte operations,
//! and with ten registers most of those bytes get their own 8-byte spill slot: a few addresses
//! in flight exhaust the 512-byte stack. [`Words`] is the same bytes, 8-aligned, handled as two
//! `u64`s. (Its `==` would also avoid `bcmp`, which BPF cannot call.)

use relay_common::Addr;

#[derive(Clone, Copy, Default)]
#[repr(C, align(8))]
pub struct Words(pub [u64; 2]);

const _: () = assert!(core::mem::size_of::<Words>() == core::mem::size_of::<Addr>());

/// The first word and the masked half of the second of `::ffff:0:0/96`.
const V4_HI: u64 = 0;
const V4_LO_MASK: u64 = u64::from_ne_bytes([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
const V4_LO: u64 = u64::from_ne_bytes([0, 0, 0xff, 0xff, 0, 0, 0, 0]);

impl Words {
    /// From network-order bytes as read from a packet.
    #[inline(always)]
    pub fn from_bytes(hi: [u8; 8], lo: [u8; 8]) -> Words {
        Words([u64::from_ne_bytes(hi), u64::from_ne_bytes(lo)])
    }

    #[inline(always)]
    pub fn from_v4(o: [u8; 4]) -> Words {
        Words::from_bytes([0; 8], [0, 0, 0xff, 0xff, o[0], o[1], o[2], o[3]])
    }

    /// Reads an `Addr` that sits at an 8-aligned address, in two loads.
    ///
    /// # Safety
    /// `p` must be valid for reads and 8-aligned: `Addr` fields at offsets that are multiples of
    /// 8 in map values (the kernel aligns values to 8) or in `Words` itself.
    #[inline(always)]
    pub unsafe fn read(p: *const Addr) -> Words {
        // SAFETY: forwarded to the caller; every bit pattern is a valid `Words`.
        unsafe { p.cast::<Words>().read() }
    }

    /// Writes the address to an 8-aligned `Addr`, in two stores.
    ///
    /// # Safety
    /// As for [`Words::read`], for writes.
    #[inline(always)]
    pub unsafe fn write(self, p: *mut Addr) {
        // SAFETY: forwarded to the caller.
        unsafe { p.cast::<Words>().write(self) }
    }

    /// Borrowed as a map key.
    #[inline(always)]
    pub fn as_addr(&self) -> &Addr {
        // SAFETY: same size, `Addr` is plain bytes with alignment 1, which `Words` exceeds.
        unsafe { &*(self as *const Words).cast::<Addr>() }
    }

    #[inline(always)]
    pub fn eq(self, other: Words) -> bool {
        self.0[0] == other.0[0] && self.0[1] == other.0[1]
    }

    #[inline(always)]
    pub fn is_v4(self) -> bool {
        self.0[0] == V4_HI && self.0[1] & V4_LO_MASK == V4_LO
    }

    /// The IPv4 address of a v4-mapped one, network order.
    #[inline(always)]
    pub fn v4_octets(self) -> [u8; 4] {
        let b = self.0[1].to_ne_bytes();
        [b[4], b[5], b[6], b[7]]
    }

    /// The sixteen network-order bytes.
    #[inline(always)]
    pub fn bytes(self) -> [u8; 16] {
        let (h, l) = (self.0[0].to_ne_bytes(), self.0[1].to_ne_bytes());
        [
            h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], l[0], l[1], l[2], l[3], l[4], l[5],
            l[6], l[7],
        ]
    }

    /// As the four network-order `u32`s of `bpf_fib_lookup`'s address fields.
    #[inline(always)]
    pub fn fib_words(self) -> [u32; 4] {
        let b = self.bytes();
        [
            u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
            u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
            u32::from_ne_bytes([b[12], b[13], b[14], b[15]]),
        ]
    }
}
