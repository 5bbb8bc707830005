//! Internet checksum arithmetic (RFC 1071, incremental update per RFC 1624).
//!
//! Pure functions on big-endian 16-bit values so that the same code runs in the XDP program,
//! in the userspace fallback and in host unit tests. Callers read checksum fields and words with
//! `u16::from_be_bytes` and write them back with `to_be_bytes`.

/// Folds a 32-bit one's-complement accumulator into 16 bits.
#[inline(always)]
pub const fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// One's-complement sum of `bytes` (an odd trailing byte is padded with zero), added to `sum`.
/// Returns an unfolded accumulator; call [`fold`] and invert to get a checksum.
#[inline(always)]
pub fn sum_bytes(mut sum: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        sum = sum.wrapping_add(u16::from_be_bytes([c[0], c[1]]) as u32);
        // Keep headroom: fold whenever the high half grows, so long inputs never overflow.
        if sum > 0xffff_0000 {
            sum = fold(sum) as u32;
        }
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add((*last as u32) << 8);
    }
    sum
}

/// Checksum of a buffer from scratch: the value to store in the field.
#[inline(always)]
pub fn checksum(sum: u32, bytes: &[u8]) -> u16 {
    !fold(sum_bytes(sum, bytes))
}

/// RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')` for one 16-bit word changing from `old` to `new`.
#[inline(always)]
pub const fn replace_u16(check: u16, old: u16, new: u16) -> u16 {
    let sum = (!check as u32) + (!old as u32) + (new as u32);
    !fold(sum)
}

/// Incremental update for a run of bytes (even length: addresses, ports) changing.
#[inline(always)]
pub fn replace_bytes<const N: usize>(check: u16, old: &[u8; N], new: &[u8; N]) -> u16 {
    let mut sum = (!check) as u32;
    let mut i = 0;
    while i + 1 < N {
        sum += (!u16::from_be_bytes([old[i], old[i + 1]])) as u32;
        sum += u16::from_be_bytes([new[i], new[i + 1]]) as u32;
        i += 2;
    }
    !fold(sum)
}

/// UDP over IPv4: a zero checksum means "none" and must stay zero; a computed zero is sent as
/// 0xffff (RFC 768).
#[inline(always)]
pub const fn udp4_finish(updated: u16) -> u16 {
    if updated == 0 { 0xffff } else { updated }
}

/// IPv4/IPv6 UDP pseudo-header sum (unfolded) for a full recomputation in userspace and tests.
pub fn pseudo_header_sum(src: &[u8], dst: &[u8], proto: u8, len: u32) -> u32 {
    let mut sum = sum_bytes(0, src);
    sum = sum_bytes(sum, dst);
    sum = sum.wrapping_add(proto as u32);
    sum = sum.wrapping_add(len >> 16).wrapping_add(len & 0xffff);
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 1071 section 3 example words.
    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum_bytes(0, &data)), 0xddf2);
        assert_eq!(checksum(0, &data), !0xddf2);
    }

    #[test]
    fn ipv4_header_checksum_known_vector() {
        // Wikipedia's IPv4 header example: checksum 0xb861.
        let mut hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(0, &hdr), 0xb861);
        hdr[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(checksum(0, &hdr), 0);
    }

    #[test]
    fn incremental_equals_recompute() {
        let mut hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let c = checksum(0, &hdr);
        let old: [u8; 4] = hdr[16..20].try_into().unwrap();
        let new = [10, 1, 2, 3];
        hdr[16..20].copy_from_slice(&new);
        assert_eq!(replace_bytes(c, &old, &new), checksum(0, &hdr));
        let c2 = checksum(0, &hdr);
        hdr[8] = 0x3f; // TTL 64 -> 63
        let upd = replace_u16(c2, 0x4011, 0x3f11);
        assert_eq!(upd, checksum(0, &hdr));
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum_bytes(0, &[0xab]), 0xab00);
    }
}
