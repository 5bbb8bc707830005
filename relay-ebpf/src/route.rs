//! Where a rewritten packet leaves: the route cache (`relay_common::route`) in front of
//! `bpf_fib_lookup`. A relayed packet normally costs one inlined array lookup here; the FIB is
//! asked only for a leg's first packet, about once a second after that, for a longer frame
//! than any confirmed, and after the egress refused a redirect.

use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_FIB_LKUP_RET_NOT_FWDED, BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams},
    helpers::generated::bpf_fib_lookup,
    programs::XdpContext,
};
use relay_common::route::{Route, route_alive, route_until};

use crate::{
    addr::Words,
    maps::{ROUTES, TX_PORTS},
    parse::{self, Family, Packet},
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// What the packet needs a route for: the partner leg's addresses and ports, the interface it
/// came in on, and the time in `route_ticks` (one argument: BPF functions take at most five).
#[derive(Clone, Copy)]
pub struct Want {
    pub src: Words,
    pub dst: Words,
    pub sport: u16,
    pub dport: u16,
    pub ingress: u32,
    pub now: u32,
}

/// The route for leaving from relay port `port` towards `want`, from the cache when it holds
/// one for exactly this, otherwise looked up and cached: a pointer to the map's entry, read in
/// place (a 64-byte copy would not fit the program's 512-byte stack beside the rest).
/// `None`: the kernel cannot send this packet on (no neighbour yet, a device not enrolled,
/// MTU...): the userspace relay can.
#[inline(always)]
pub fn find(ctx: &XdpContext, pkt: &Packet, port: u16, want: &Want) -> Option<*const Route> {
    let slot = ROUTES.get_ptr_mut(u32::from(port))?;
    if matches(slot, pkt, want) {
        return Some(slot);
    }
    look_up(ctx, pkt, slot, want)
}

/// Forgets the route of `port`: the egress refused a frame sent by it.
#[inline(always)]
pub fn forget(port: u16) {
    if let Some(slot) = ROUTES.get_ptr_mut(u32::from(port)) {
        // SAFETY: a live element of an array map; a single aligned store.
        unsafe { write_volatile(&raw mut (*slot).until, 0) };
    }
}

/// Whether the cached entry is alive and was looked up for exactly this.
///
/// Read in place, so a refresh on another CPU can change it under us. The fields that decide
/// (addresses, ports, ingress) are checked here; what a concurrent refresh of the same route
/// can tear is its egress and MACs, which a refresh almost always rewrites with the same
/// values, and at worst one packet goes to the previous next hop, as it would have a moment
/// earlier. `until` is zeroed while an entry changes, which stops a reader that comes later.
#[inline(always)]
fn matches(slot: *const Route, pkt: &Packet, want: &Want) -> bool {
    // SAFETY: `slot` is a live element of an array map, 8-aligned (`Route` has its addresses
    // at offsets 0 and 16); `until` first, by a volatile load, then the rest.
    unsafe {
        let until = read_volatile(&raw const (*slot).until);
        route_alive(until, want.now)
            && Words::read(&raw const (*slot).src).eq(want.src)
            && Words::read(&raw const (*slot).dst).eq(want.dst)
            && (*slot).sport == want.sport
            && (*slot).dport == want.dport
            && (*slot).ingress == want.ingress
            && pkt.ip_len <= (*slot).len
    }
}

/// Asks the FIB, and caches a usable answer.
#[inline(never)]
fn look_up(ctx: &XdpContext, pkt: &Packet, slot: *mut Route, want: &Want) -> Option<*const Route> {
    let ingress = want.ingress;
    // SAFETY: all-zero is a valid value for this plain C struct (it is what the kernel expects
    // in every field this program does not set).
    let mut fib: FibParams = unsafe { core::mem::zeroed() };
    fib.l4_protocol = parse::IPPROTO_UDP;
    fib.sport = want.sport.to_be();
    fib.dport = want.dport.to_be();
    fib.__bindgen_anon_1.tot_len = pkt.ip_len;
    fib.ifindex = ingress;
    if pkt.family == Family::V4 {
        fib.family = AF_INET;
        fib.__bindgen_anon_2.tos = pkt.tos;
        fib.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(want.src.v4_octets());
        fib.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(want.dst.v4_octets());
    } else {
        fib.family = AF_INET6;
        fib.__bindgen_anon_2.flowinfo = pkt.flowinfo;
        fib.__bindgen_anon_3.ipv6_src = want.src.fib_words();
        fib.__bindgen_anon_4.ipv6_dst = want.dst.fib_words();
    }
    // SAFETY: `fib` is a valid, fully initialised parameter block of the size passed, and the
    // context pointer is the one the kernel gave this program.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.as_ptr(),
            &mut fib,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    let ifindex = match rc as u32 {
        // Back out of the ingress, or to a device userspace enrolled: only those take
        // redirected frames (a devmap entry is what makes the driver set up its XDP transmit
        // queues).
        BPF_FIB_LKUP_RET_SUCCESS
            if fib.ifindex == ingress || TX_PORTS.get_ifindex(fib.ifindex).is_some() =>
        {
            fib.ifindex
        }
        // Ours: the stack delivers it (both peers on this host, e.g. on `lo`).
        BPF_FIB_LKUP_RET_NOT_FWDED => 0,
        // Not enrolled, no neighbour entry yet, blackhole, forwarding off, MTU: the stack and
        // the userspace relay sort these out (and resolve the neighbour for next time). Not
        // cached: the next packet asks again.
        _ => return None,
    };
    let local = ifindex == 0;
    // In place, field by field (a 64-byte value on the stack would not fit beside the lookup's
    // parameters): `until` zeroed first and set last, so a reader that starts meanwhile skips
    // the entry (see `matches`). The MACs mean nothing for a local destination: zero.
    // SAFETY: `slot` is a live, 8-aligned element of an array map; volatile stores keep their
    // order.
    unsafe {
        write_volatile(&raw mut (*slot).until, 0);
        let src = (&raw mut (*slot).src).cast::<u64>();
        let dst = (&raw mut (*slot).dst).cast::<u64>();
        write_volatile(src, want.src.0[0]);
        write_volatile(src.add(1), want.src.0[1]);
        write_volatile(dst, want.dst.0[0]);
        write_volatile(dst.add(1), want.dst.0[1]);
        write_volatile(&raw mut (*slot).ingress, ingress);
        write_volatile(&raw mut (*slot).ifindex, ifindex);
        write_volatile(&raw mut (*slot).len, pkt.ip_len);
        write_volatile(&raw mut (*slot).sport, want.sport);
        write_volatile(&raw mut (*slot).dport, want.dport);
        write_volatile(&raw mut (*slot).smac, if local { [0; 6] } else { fib.smac });
        write_volatile(&raw mut (*slot).dmac, if local { [0; 6] } else { fib.dmac });
        write_volatile(&raw mut (*slot).until, route_until(want.now));
    }
    Some(slot)
}
