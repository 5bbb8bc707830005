//! The floor `bench xdp` measures the relay against: what the least an XDP relay must do costs
//! on this machine. No map, no helper, no counter: swap the MAC addresses, the IP addresses and
//! the UDP ports of an untagged IPv4 (no options) or IPv6 (no extension headers) UDP frame and
//! send it back. Swapping leaves both checksums valid (the sums are order-blind), so none is
//! recomputed. Anything else passes untouched.

use aya_ebpf::{
    bindings::xdp_action::{self, XDP_PASS, XDP_TX},
    programs::XdpContext,
};

use crate::parse::{self, ETH_HLEN, IPPROTO_UDP, IPV4_HLEN, IPV6_HLEN, ParseError, off};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

#[inline(always)]
pub fn swap(ctx: &XdpContext) -> xdp_action::Type {
    match try_swap(ctx) {
        Ok(true) => XDP_TX,
        Ok(false) | Err(_) => XDP_PASS,
    }
}

/// Swaps the `T`s at offsets `a` and `b` in place.
#[inline(always)]
fn swap_at<T: Copy>(ctx: &XdpContext, a: usize, b: usize) -> Result<(), ParseError> {
    let (x, y): (T, T) = (parse::read(ctx, a)?, parse::read(ctx, b)?);
    parse::write(ctx, a, y)?;
    parse::write(ctx, b, x)
}

#[inline(always)]
fn try_swap(ctx: &XdpContext) -> Result<bool, ParseError> {
    let l4 = match parse::read16(ctx, off::ETH_TYPE)? {
        ETH_P_IP => {
            let l3 = ETH_HLEN;
            let ver_ihl: u8 = parse::read(ctx, l3 + off::IPV4_VER_IHL)?;
            let proto: u8 = parse::read(ctx, l3 + off::IPV4_PROTO)?;
            if ver_ihl != 0x45 || proto != IPPROTO_UDP {
                return Ok(false);
            }
            swap_at::<u32>(ctx, l3 + off::IPV4_SRC, l3 + off::IPV4_DST)?;
            l3 + IPV4_HLEN
        }
        ETH_P_IPV6 => {
            let l3 = ETH_HLEN;
            let next: u8 = parse::read(ctx, l3 + off::IPV6_NEXT)?;
            if next != IPPROTO_UDP {
                return Ok(false);
            }
            swap_at::<u64>(ctx, l3 + off::IPV6_SRC, l3 + off::IPV6_DST)?;
            swap_at::<u64>(ctx, l3 + off::IPV6_SRC + 8, l3 + off::IPV6_DST + 8)?;
            l3 + IPV6_HLEN
        }
        _ => return Ok(false),
    };
    swap_at::<u16>(ctx, l4 + off::L4_PORTS, l4 + off::L4_PORTS + 2)?;
    swap_at::<[u8; 6]>(ctx, off::ETH_DST, off::ETH_SRC)?;
    Ok(true)
}
