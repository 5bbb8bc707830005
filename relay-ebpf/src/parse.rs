//! Header parsing and the packet accessor.
//!
//! Every byte this program reads or writes goes through [`ptr_at`], the one place that turns an
//! offset into a pointer. The verifier rejects any packet access it cannot prove in bounds, and
//! a forgotten check would otherwise surface as an opaque load failure; here it cannot be
//! forgotten. Fields are read one at a time as byte arrays rather than as whole header structs:
//! frames have no alignment guarantee, and a 40-byte header copied out byte by byte would spill
//! most of the 512-byte stack.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;

use relay_common::{frag::MAX_EXT_HEADERS, guard::INVITE_WINDOW};

use crate::addr::Words;

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
/// 802.1ad service tag, the outer tag of QinQ.
const ETH_P_8021AD: u16 = 0x88a8;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_DSTOPTS: u8 = 60;

/// IPv4 flags+offset: More Fragments, and the offset bits (Don't Fragment is harmless).
const IPV4_MF: u16 = 0x2000;
const IPV4_OFFSET: u16 = 0x1fff;
/// IPv6 fragment header's offset+flags word: the offset bits, and More Fragments.
const IPV6_FRAG_OFFSET: u16 = 0xfff8;
const IPV6_FRAG_MF: u16 = 0x0001;

/// The furthest a transport header may start: offsets travel as bytes (see [`Packet`]), and
/// a chain this long is no legitimate signalling or media.
const MAX_L4_OFF: usize = u8::MAX as usize;
/// TCP flag bits (the byte after the data offset).
pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;
pub const IPV4_HLEN: usize = 20;
pub const IPV6_HLEN: usize = 40;
pub const UDP_HLEN: usize = 8;
pub const TCP_HLEN: usize = 20;

/// Field offsets within their headers.
pub mod off {
    pub const ETH_DST: usize = 0;
    pub const ETH_SRC: usize = 6;
    pub const ETH_TYPE: usize = 12;
    /// Inner ethertype of an 802.1Q tag, from the tag's start.
    pub const VLAN_TYPE: usize = 2;

    pub const IPV4_VER_IHL: usize = 0;
    pub const IPV4_TOS: usize = 1;
    pub const IPV4_TOT_LEN: usize = 2;
    pub const IPV4_ID: usize = 4;
    pub const IPV4_FRAG: usize = 6;
    pub const IPV4_TTL: usize = 8;
    pub const IPV4_PROTO: usize = 9;
    pub const IPV4_CHECK: usize = 10;
    pub const IPV4_SRC: usize = 12;
    pub const IPV4_DST: usize = 16;

    pub const IPV6_FLOW: usize = 0;
    pub const IPV6_PAYLOAD_LEN: usize = 4;
    pub const IPV6_NEXT: usize = 6;
    pub const IPV6_HOP_LIMIT: usize = 7;
    pub const IPV6_SRC: usize = 8;
    pub const IPV6_DST: usize = 24;

    /// Source and destination ports, contiguous (UDP and TCP alike).
    pub const L4_PORTS: usize = 0;
    pub const UDP_LEN: usize = 4;
    pub const UDP_CHECK: usize = 6;
    pub const TCP_DOFF: usize = 12;
}

/// Why parsing stopped the pipeline.
#[derive(Clone, Copy)]
pub enum ParseError {
    /// Not IPv4 or IPv6 (ARP, LLDP, a third VLAN tag, ...).
    NotIp,
    /// Truncated or inconsistent headers.
    Malformed,
    /// An IPv6 extension-header chain longer than the bounded walk takes.
    ExtHeaders,
    /// A first fragment too short to carry what the firewall judges.
    TinyFragment,
}

/// Where a packet stands in a fragmented datagram.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Frag {
    /// A whole datagram (IPv6's atomic fragment, offset 0 without More Fragments, included).
    No,
    /// Offset 0 with More Fragments: carries the transport header.
    First,
    /// Offset > 0: carries no header to judge, follows the first fragment's verdict.
    Later,
}

/// The VLAN tags in front of the IP header.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Vlan {
    None,
    /// One 802.1Q tag.
    Tag,
    /// An 802.1ad service tag, or two tags: only the diagnostics tell it from [`Vlan::Tag`].
    QinQ,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

#[derive(Clone, Copy)]
pub struct Udp {
    pub sport: u16,
    pub dport: u16,
    /// The UDP length field, validated against the IP payload.
    pub len: u16,
    pub check: u16,
}

#[derive(Clone, Copy)]
pub enum L4 {
    Udp(Udp),
    Tcp {
        dport: u16,
        /// The flags byte (SYN, ACK, ...).
        flags: u8,
    },
    /// A later fragment: no transport header.
    Fragment,
    /// Another protocol (ICMP, ESP, AH, ...).
    Other,
}

/// A parsed frame: everything the later stages need, by value, plus the offsets to rewrite.
#[derive(Clone, Copy)]
pub struct Packet {
    pub src: Words,
    pub dst: Words,
    /// VLAN tags carried (802.1Q, or QinQ).
    pub vlan: Vlan,
    /// IPv6 extension headers precede the transport header: the relay leaves such packets to
    /// the stack rather than rewrite around headers it does not own.
    pub v6_ext: bool,
    pub family: Family,
    pub frag: Frag,
    /// IP protocol (IPv6: the fragment header's next header) and identification of a
    /// fragment's datagram: with the addresses, the key of its verdict.
    pub frag_proto: u8,
    pub frag_id: u32,
    /// Header offsets as bytes: a `Packet` crosses BPF function boundaries through the stack,
    /// and a byte load is what tells the verifier these are small (0..=255) when they are added
    /// to a packet pointer. (l3 at most 22; l4 capped at `MAX_L4_OFF`, a deeper one is dropped.)
    l3_off: u8,
    l4_off: u8,
    /// TTL or hop limit.
    pub ttl: u8,
    /// IPv4 TOS.
    pub tos: u8,
    /// IPv6 traffic class and flow label word (network order, version masked off).
    pub flowinfo: u32,
    /// Length of the IP packet (header included), for the route's MTU check.
    pub ip_len: u16,
    pub l4: L4,
}

/// A pointer to a `T` at `offset` bytes into the frame, or `Malformed` if it would run past the
/// end. The only bounds check on packet memory in this program.
///
/// `data_end` is loaded volatile so LLVM cannot fold this check into an earlier one at a larger
/// offset: it would be sound, but the verifier only trusts a check made on the very pointer
/// (register id) it guards, and offsets that depend on the IHL get a fresh id each time.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, ParseError> {
    let start = ctx.data();
    // SAFETY: `ctx.ctx` is the live `xdp_md` the kernel passed in; reading a field is a plain
    // context load the verifier rewrites.
    let end = unsafe { core::ptr::read_volatile(&raw const (*ctx.ctx).data_end) } as usize;
    if start + offset + checked_len::<T>() > end {
        return Err(ParseError::Malformed);
    }
    Ok((start + offset) as *mut T)
}

/// Bytes that must exist for a `T` to be read: its size, but at least two. For one byte, LLVM
/// rewrites `p + 1 > end` as `p >= end`, and the verifier learns no range from that form when
/// the offset is variable. Every single-byte field read here is followed by another byte of the
/// same fixed header, so demanding it rejects nothing valid.
const fn checked_len<T>() -> usize {
    if size_of::<T>() < 2 {
        2
    } else {
        size_of::<T>()
    }
}

impl Packet {
    #[inline(always)]
    pub fn l3_off(&self) -> usize {
        self.l3_off as usize
    }

    #[inline(always)]
    pub fn l4_off(&self) -> usize {
        self.l4_off as usize
    }
}

/// Copies a `T` out of the frame.
#[inline(always)]
pub fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Result<T, ParseError> {
    let p = ptr_at::<T>(ctx, offset)?;
    // SAFETY: `ptr_at` proved `[p, p + size_of::<T>())` lies inside the frame the kernel handed
    // us, which stays mapped and unmoved for the whole program run (we never adjust head or
    // tail). The read is unaligned because frames have no alignment guarantee, and every `T`
    // read here is plain bytes or an integer, so any content is a valid value.
    Ok(unsafe { p.read_unaligned() })
}

/// Copies a `T` into the frame.
#[inline(always)]
pub fn write<T: Copy>(ctx: &XdpContext, offset: usize, value: T) -> Result<(), ParseError> {
    let p = ptr_at::<T>(ctx, offset)?;
    // SAFETY: as in `read`; XDP frames are writable, and nothing else holds a Rust reference
    // into packet memory (all access is by copy through these two functions).
    unsafe { p.write_unaligned(value) };
    Ok(())
}

#[inline(always)]
pub fn read16(ctx: &XdpContext, offset: usize) -> Result<u16, ParseError> {
    read::<[u8; 2]>(ctx, offset).map(u16::from_be_bytes)
}

/// An IPv6 address as two native-order words: one register each, not sixteen bytes.
#[inline(always)]
fn read_addr6(ctx: &XdpContext, offset: usize) -> Result<Words, ParseError> {
    Ok(Words([read(ctx, offset)?, read(ctx, offset + 8)?]))
}

/// What [`parse`] returns across its BPF function boundary: `Result<Packet, ParseError>` with
/// its tag at offset 0.
///
/// Types in a BPF function's signature go into the object's BTF. A plain
/// `Result<Packet, ParseError>` hides its discriminant in a niche inside `Packet` (the `L4` tag,
/// 38 bytes in); LLVM describes that as a BTF union whose tag member sits at that offset, and
/// the kernel's BTF checker refuses a union member at any offset but 0 ("Invalid member
/// bits_offset"). So the kernel rejected the object's whole BTF at every load (aya's "object
/// BTF couldn't be loaded in the kernel" warning), leaving the verifier and bpftool without
/// function and line info. `repr(C)` rules out the niche: the tag leads, every member is at 0.
#[repr(C)]
pub enum Parsed {
    Ok(Packet),
    Err(ParseError),
}

/// Parses Ethernet (+ up to two VLAN tags), IPv4/IPv6 (+ IPv6 extension headers) and the
/// UDP/TCP header.
///
/// A BPF function of its own, so its stack frame is not part of the deepest call chain
/// (pipeline -> relay -> route lookup); the verifier limits the whole chain to 512 bytes.
#[inline(never)]
pub fn parse(ctx: &XdpContext) -> Parsed {
    match parse_frame(ctx) {
        Ok(p) => Parsed::Ok(p),
        Err(e) => Parsed::Err(e),
    }
}

#[inline(always)]
fn parse_frame(ctx: &XdpContext) -> Result<Packet, ParseError> {
    let mut ethertype = read16(ctx, off::ETH_TYPE)?;
    let mut l3_off = ETH_HLEN;
    // An outer 802.1ad (or 802.1Q) tag, then an inner 802.1Q one: a stack with VLAN devices
    // delivers either to a socket, so the firewall must see through both.
    let mut vlan = match ethertype {
        ETH_P_8021Q => Vlan::Tag,
        ETH_P_8021AD => Vlan::QinQ,
        _ => Vlan::None,
    };
    if vlan != Vlan::None {
        ethertype = read16(ctx, l3_off + off::VLAN_TYPE)?;
        l3_off += VLAN_HLEN;
        if ethertype == ETH_P_8021Q {
            vlan = Vlan::QinQ;
            ethertype = read16(ctx, l3_off + off::VLAN_TYPE)?;
            l3_off += VLAN_HLEN;
        }
    }
    // Frame bytes from the IP header on; link padding may follow the IP packet.
    let avail = ctx.data_end() - ctx.data() - l3_off;
    match ethertype {
        ETH_P_IPV4 => parse_v4(ctx, vlan, l3_off, avail),
        ETH_P_IPV6 => parse_v6(ctx, vlan, l3_off, avail),
        _ => Err(ParseError::NotIp),
    }
}

#[inline(always)]
fn parse_v4(ctx: &XdpContext, vlan: Vlan, l3: usize, avail: usize) -> Result<Packet, ParseError> {
    let ver_ihl: u8 = read(ctx, l3 + off::IPV4_VER_IHL)?;
    // Masking keeps the offset provably small for the verifier as well as rejecting junk.
    let ihl = (ver_ihl & 0x0f) as usize * 4;
    if ver_ihl >> 4 != 4 || ihl < IPV4_HLEN {
        return Err(ParseError::Malformed);
    }
    let tot_len = read16(ctx, l3 + off::IPV4_TOT_LEN)? as usize;
    if tot_len < ihl || tot_len > avail {
        return Err(ParseError::Malformed);
    }
    let l4_off = l3 + ihl;
    let proto: u8 = read(ctx, l3 + off::IPV4_PROTO)?;
    let frag_word = read16(ctx, l3 + off::IPV4_FRAG)?;
    let frag = if frag_word & IPV4_OFFSET != 0 {
        Frag::Later
    } else if frag_word & IPV4_MF != 0 {
        Frag::First
    } else {
        Frag::No
    };
    let l4 = match frag {
        Frag::Later => L4::Fragment,
        _ => parse_l4(ctx, proto, l4_off, tot_len - ihl, frag == Frag::First)?,
    };
    Ok(Packet {
        src: Words::from_v4(read::<u32>(ctx, l3 + off::IPV4_SRC)?.to_ne_bytes()),
        dst: Words::from_v4(read::<u32>(ctx, l3 + off::IPV4_DST)?.to_ne_bytes()),
        vlan,
        v6_ext: false,
        family: Family::V4,
        frag,
        frag_proto: proto,
        frag_id: read16(ctx, l3 + off::IPV4_ID)? as u32,
        l3_off: l3 as u8,
        l4_off: l4_off as u8,
        ttl: read(ctx, l3 + off::IPV4_TTL)?,
        tos: read(ctx, l3 + off::IPV4_TOS)?,
        flowinfo: 0,
        ip_len: tot_len as u16,
        l4,
    })
}

#[inline(always)]
fn parse_v6(ctx: &XdpContext, vlan: Vlan, l3: usize, avail: usize) -> Result<Packet, ParseError> {
    let mut flow: [u8; 4] = read(ctx, l3 + off::IPV6_FLOW)?;
    if flow[0] >> 4 != 6 {
        return Err(ParseError::Malformed);
    }
    flow[0] &= 0x0f;
    let ip_payload = read16(ctx, l3 + off::IPV6_PAYLOAD_LEN)? as usize;
    if IPV6_HLEN + ip_payload > avail {
        return Err(ParseError::Malformed);
    }
    let first = l3 + IPV6_HLEN;
    let chain = walk_ext(ctx, read(ctx, l3 + off::IPV6_NEXT)?, first)?;
    let ext_len = chain.l4_off - first;
    if ext_len > ip_payload {
        return Err(ParseError::Malformed);
    }
    let l4 = match chain.frag {
        Frag::Later => L4::Fragment,
        _ => parse_l4(
            ctx,
            chain.next,
            chain.l4_off,
            ip_payload - ext_len,
            chain.frag == Frag::First,
        )?,
    };
    Ok(Packet {
        src: read_addr6(ctx, l3 + off::IPV6_SRC)?,
        dst: read_addr6(ctx, l3 + off::IPV6_DST)?,
        vlan,
        v6_ext: ext_len != 0,
        family: Family::V6,
        frag: chain.frag,
        frag_proto: chain.frag_proto,
        frag_id: chain.frag_id,
        l3_off: l3 as u8,
        l4_off: chain.l4_off as u8,
        ttl: read(ctx, l3 + off::IPV6_HOP_LIMIT)?,
        tos: 0,
        flowinfo: u32::from_ne_bytes(flow),
        ip_len: (IPV6_HLEN + ip_payload) as u16,
        l4,
    })
}

/// The end of an IPv6 extension-header chain.
struct Chain {
    /// The protocol after the last extension header walked.
    next: u8,
    l4_off: usize,
    frag: Frag,
    frag_proto: u8,
    frag_id: u32,
}

/// Steps over hop-by-hop, routing, fragment and destination-options headers, at most
/// [`MAX_EXT_HEADERS`] of them: a bounded loop the verifier can follow, every header's length
/// read through [`ptr_at`] before it is trusted. Anything after a non-first fragment header is
/// not there to walk.
#[inline(always)]
fn walk_ext(ctx: &XdpContext, mut next: u8, mut at: usize) -> Result<Chain, ParseError> {
    let mut chain = Chain {
        next,
        l4_off: at,
        frag: Frag::No,
        frag_proto: 0,
        frag_id: 0,
    };
    for _ in 0..MAX_EXT_HEADERS {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let [nh, units]: [u8; 2] = read(ctx, at)?;
                next = nh;
                // RFC 8200 §4.3: length in 8-octet units, not counting the first 8.
                at += (units as usize + 1) * 8;
            }
            IPPROTO_FRAGMENT => {
                let [nh, _]: [u8; 2] = read(ctx, at)?;
                let word = read16(ctx, at + 2)?;
                chain.frag_proto = nh;
                chain.frag_id = u32::from_be_bytes(read(ctx, at + 4)?);
                if word & IPV6_FRAG_OFFSET != 0 {
                    if at + 8 > MAX_L4_OFF {
                        return Err(ParseError::ExtHeaders);
                    }
                    chain.frag = Frag::Later;
                    chain.next = nh;
                    chain.l4_off = at + 8;
                    return Ok(chain);
                }
                if word & IPV6_FRAG_MF != 0 {
                    chain.frag = Frag::First;
                }
                next = nh;
                at += 8;
            }
            _ => {
                chain.next = next;
                chain.l4_off = at;
                return Ok(chain);
            }
        }
        if at > MAX_L4_OFF {
            return Err(ParseError::ExtHeaders);
        }
    }
    match next {
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_FRAGMENT | IPPROTO_DSTOPTS => {
            Err(ParseError::ExtHeaders)
        }
        _ => {
            chain.next = next;
            chain.l4_off = at;
            Ok(chain)
        }
    }
}

/// `l4_len` is the IP payload length; the transport header must fit inside it, not merely
/// inside the frame, or padding would be parsed as a header. A first fragment holds only the
/// start of the datagram, so its UDP length runs past it; it must still hold what the
/// firewall judges, or a sender could split the header (or "INVITE ") off into a later
/// fragment that is never judged.
#[inline(always)]
fn parse_l4(
    ctx: &XdpContext,
    proto: u8,
    l4_off: usize,
    l4_len: usize,
    first_fragment: bool,
) -> Result<L4, ParseError> {
    match proto {
        IPPROTO_UDP => {
            if l4_len < UDP_HLEN {
                return Err(tiny_or_malformed(first_fragment));
            }
            let [s0, s1, d0, d1]: [u8; 4] = read(ctx, l4_off + off::L4_PORTS)?;
            let len = read16(ctx, l4_off + off::UDP_LEN)?;
            if (len as usize) < UDP_HLEN {
                return Err(ParseError::Malformed);
            }
            if first_fragment {
                let judged = min(len as usize, UDP_HLEN + INVITE_WINDOW);
                if l4_len < judged {
                    return Err(ParseError::TinyFragment);
                }
            } else if len as usize > l4_len {
                return Err(ParseError::Malformed);
            }
            Ok(L4::Udp(Udp {
                sport: u16::from_be_bytes([s0, s1]),
                dport: u16::from_be_bytes([d0, d1]),
                len,
                check: read16(ctx, l4_off + off::UDP_CHECK)?,
            }))
        }
        IPPROTO_TCP => {
            if l4_len < TCP_HLEN {
                return Err(tiny_or_malformed(first_fragment));
            }
            let dport = read16(ctx, l4_off + off::L4_PORTS + 2)?;
            let [doff, flags]: [u8; 2] = read(ctx, l4_off + off::TCP_DOFF)?;
            let doff = (doff >> 4) as usize * 4;
            if doff < TCP_HLEN {
                return Err(ParseError::Malformed);
            }
            if doff > l4_len {
                return Err(tiny_or_malformed(first_fragment));
            }
            Ok(L4::Tcp { dport, flags })
        }
        _ => Ok(L4::Other),
    }
}

#[inline(always)]
fn tiny_or_malformed(first_fragment: bool) -> ParseError {
    if first_fragment {
        ParseError::TinyFragment
    } else {
        ParseError::Malformed
    }
}

#[inline(always)]
fn min(a: usize, b: usize) -> usize {
    if a < b { a } else { b }
}
