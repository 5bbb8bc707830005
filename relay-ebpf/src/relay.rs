//! The media relay: a packet to a relay port leaves from the partner leg's port to the partner
//! leg's peer, rewritten in place and sent without touching the stack.
//!
//! The route is looked up before a single byte changes. Whenever the kernel cannot finish the
//! job (leg incomplete, no neighbour, VLAN, TTL expiring, egress not in `TX_PORTS`) the packet
//! goes up unmodified to the userspace relay socket bound on the same port, which can: the
//! fallback is a slower path, never a lost or mangled packet.

use aya_ebpf::programs::XdpContext;
use relay_common::{
    csum,
    relay::{
        LEG_ACTIVE, LEG_LATCH, LEG_LATCHED, LEG_PEER_KNOWN, LEG_PRESENT, LEG_STRICT_SOURCE,
        LEG_TRUST_KNOWN, Leg, LegCounters,
    },
    route::{Route, route_ticks},
    rtp::rtp_seq,
};

use crate::{
    addr::Words,
    diag::{self, Event},
    maps::{RELAY_COUNTERS, RELAY_LEGS, TX_PORTS},
    parse::{self, Family, Packet, UDP_HLEN, Udp, Vlan, off},
    route,
};

// `Words::read`/`write` on leg addresses rely on these.
const _: () = assert!(
    core::mem::align_of::<Leg>() >= 8
        && core::mem::offset_of!(Leg, local_addr) % 8 == 0
        && core::mem::offset_of!(Leg, peer_addr) % 8 == 0
        && core::mem::offset_of!(Leg, trust_addr) % 8 == 0
);

/// How a relayed packet left.
#[derive(Clone, Copy)]
pub enum Relayed {
    /// Back out of the interface it came in on.
    Tx,
    /// To another interface through `TX_PORTS`.
    Redirect,
    /// Rewritten for a local destination and handed to the stack.
    Local,
}

#[derive(Clone, Copy)]
pub enum RelayError {
    /// The port is no relay port.
    NoLeg,
    /// A relay port, but the kernel cannot forward this packet.
    ToUserspace,
    /// From someone other than the leg's peer (RTP bleed).
    StrictSource,
    /// The egress device refused the frame after it was rewritten.
    RedirectFailed,
    /// A bounds check failed halfway through the rewrite. Unreachable (parsing checked the
    /// same bytes), but a half-rewritten frame must go nowhere.
    Rewrite,
}

#[inline(never)]
pub fn try_relay(
    ctx: &XdpContext,
    pkt: &Packet,
    udp: &Udp,
    now_ns: u64,
) -> Result<Relayed, RelayError> {
    let port = udp.dport;
    let leg = RELAY_LEGS
        .get_ptr_mut(u32::from(udp.dport))
        .ok_or(RelayError::NoLeg)?;
    // SAFETY (every access to `leg`): a slot of an array map, read field by field rather than
    // copied, to stay within the 512-byte stack. Userspace may rewrite it concurrently (an
    // array update copies in place); a torn read can misdirect at most this one packet, as
    // with any userspace/kernel map race.
    let flags = unsafe { (*leg).flags };
    let has = |f: u32| flags & f != 0;
    if !has(LEG_PRESENT) {
        return Err(RelayError::NoLeg);
    }
    // SAFETY (the `Words::read`/`write` calls): `Leg` is 8-aligned with its addresses at
    // offsets 0, 16 and 56, and the kernel aligns map values to 8.
    if !has(LEG_ACTIVE)
        || !pkt
            .dst
            .eq(unsafe { Words::read(&raw const (*leg).local_addr) })
    {
        return Err(RelayError::ToUserspace);
    }

    // The peer is learnt only from an address the leg has reason to trust (the SDP's, or its
    // side's SIP source), inside the window signalling opened: a port spray while the call
    // rings must not teach a leg the attacker (RTP bleed). `Leg::may_learn_from` and
    // `Leg::refuses` state the same rules for the userspace relay.
    let latched = has(LEG_LATCHED);
    let src = pkt.src;
    // SAFETY: as above.
    let trusted = (!latched
        && has(LEG_PEER_KNOWN)
        && src.eq(unsafe { Words::read(&raw const (*leg).peer_addr) }))
        || (has(LEG_TRUST_KNOWN) && src.eq(unsafe { Words::read(&raw const (*leg).trust_addr) }));
    if has(LEG_LATCH) && !latched && trusted && now_ns <= unsafe { (*leg).learn_until_ns } {
        // Address and port go in before the flag, so a reader on another CPU that sees
        // LATCHED also sees where to.
        unsafe {
            src.write(&raw mut (*leg).peer_addr);
            (*leg).peer_port = udp.sport;
            (*leg).flags = flags | LEG_LATCHED | LEG_PEER_KNOWN;
        }
    } else if has(LEG_STRICT_SOURCE) {
        // Learnt (or signalled without latching): that address and port only. Not learnt
        // yet: the trusted addresses only.
        let refused = if latched || (!has(LEG_LATCH) && has(LEG_PEER_KNOWN)) {
            !src.eq(unsafe { Words::read(&raw const (*leg).peer_addr) })
                || udp.sport != unsafe { (*leg).peer_port }
        } else {
            !trusted
        };
        if refused {
            count_strict_drop(port);
            return Err(RelayError::StrictSource);
        }
    }
    let partner_port = unsafe { (*leg).partner_port };
    let planned = plan_route(ctx, pkt, partner_port, now_ns)
        .and_then(|want| route::find(ctx, pkt, partner_port, &want).ok_or(RelayError::ToUserspace));
    // After the strict check: spraying a relay port must not keep a dead call alive. The
    // counters are found once, for last-seen and for the count below. (Held across the route lookup instead, the
    // pointer made LLVM leave a stack pointer in R0 on an early return, which the verifier
    // refuses.)
    let counters = touch(port, now_ns);
    let plan = planned?;
    // SAFETY: a live element of the route array (see `route::matches` on concurrent refreshes).
    let (ifindex, ingress) = unsafe { ((*plan).ifindex, (*plan).ingress) };
    rewrite(ctx, pkt, udp, plan).map_err(|_| {
        diag::note(Event::RewriteFailed, 0);
        RelayError::Rewrite
    })?;
    count_forwarded(ctx, pkt, counters, (udp.len as usize - UDP_HLEN) as u64);
    if ifindex == 0 {
        Ok(Relayed::Local)
    } else if ifindex == ingress {
        Ok(Relayed::Tx)
    } else {
        match TX_PORTS.redirect(ifindex, 0) {
            Ok(_) => Ok(Relayed::Redirect),
            Err(_) => {
                // The device left `TX_PORTS` or went down since the route was cached.
                route::forget(partner_port);
                Err(RelayError::RedirectFailed)
            }
        }
    }
}

/// Everything in the partner leg that can still send the packet to userspace, checked while it
/// is untouched; `Ok` is what to look the route up for. (The route is found by the caller: a
/// call deeper, the lookup's frame would take the stack past 512 bytes.)
#[inline(never)]
fn plan_route(
    ctx: &XdpContext,
    pkt: &Packet,
    partner_port: u16,
    now_ns: u64,
) -> Result<route::Want, RelayError> {
    // An empty slot (no partner) has no flags, so it fails the check below.
    let partner = RELAY_LEGS
        .get_ptr(u32::from(partner_port))
        .ok_or(RelayError::ToUserspace)?;
    // SAFETY: as for the receiving leg; the fields used are copied once, so the route looked up
    // is the one written.
    let (flags, want) = unsafe {
        (
            (*partner).flags,
            route::Want {
                src: Words::read(&raw const (*partner).local_addr),
                dst: Words::read(&raw const (*partner).peer_addr),
                sport: (*partner).local_port,
                dport: (*partner).peer_port,
                ingress: ctx.ingress_ifindex() as u32,
                now: route_ticks(now_ns),
            },
        )
    };
    if flags & LEG_ACTIVE == 0 || flags & LEG_PEER_KNOWN == 0 {
        return Err(RelayError::ToUserspace);
    }
    // Rewriting in place cannot change the IP version; a v4<->v6 call is bridged in userspace.
    let v4 = pkt.family == Family::V4;
    if want.src.is_v4() != v4 || want.dst.is_v4() != v4 {
        return Err(RelayError::ToUserspace);
    }
    // bpf_fib_lookup reports no VLAN for the next hop, so a tagged frame cannot be sent on
    // safely; the stack untags it for the socket on the VLAN device.
    if pkt.vlan != Vlan::None {
        return Err(RelayError::ToUserspace);
    }
    // The relay re-originates the datagram, so an expiring TTL is no reason to lose it: the
    // userspace relay sends it with a fresh one.
    if pkt.ttl <= 1 {
        return Err(RelayError::ToUserspace);
    }
    Ok(want)
}

/// Writes the plan into the frame: MACs, addresses, TTL, ports and both checksums, updated
/// incrementally (RFC 1624) so the cost does not depend on the payload size.
#[inline(never)]
fn rewrite(
    ctx: &XdpContext,
    pkt: &Packet,
    udp: &Udp,
    plan: *const Route,
) -> Result<(), parse::ParseError> {
    let l3 = pkt.l3_off();
    let l4 = pkt.l4_off();
    // SAFETY: `plan` is a live element of the route array, 8-aligned with its addresses at
    // offsets 0 and 16.
    let (psrc, pdst, sport, dport, local) = unsafe {
        (
            Words::read(&raw const (*plan).src),
            Words::read(&raw const (*plan).dst),
            (*plan).sport,
            (*plan).dport,
            (*plan).ifindex == 0,
        )
    };
    let mut sums = Checksums {
        ip: 0,
        udp: udp.check,
    };
    match pkt.family {
        Family::V4 => {
            // In offset order: see `parse::ptr_at` on why checks must not be folded together.
            let ttl_proto = parse::read16(ctx, l3 + off::IPV4_TTL)?;
            let new_ttl_proto = ttl_proto.wrapping_sub(1 << 8);
            parse::write(ctx, l3 + off::IPV4_TTL, new_ttl_proto.to_be_bytes())?;
            // TTL shares a word with the protocol; neither is in the UDP pseudo-header.
            sums.ip = csum::replace_u16(
                parse::read16(ctx, l3 + off::IPV4_CHECK)?,
                ttl_proto,
                new_ttl_proto,
            );
            let src = u32::from_ne_bytes(psrc.v4_octets());
            let dst = u32::from_ne_bytes(pdst.v4_octets());
            replace::<2>(ctx, l3 + off::IPV4_SRC, src.into(), true, &mut sums)?;
            replace::<2>(ctx, l3 + off::IPV4_DST, dst.into(), true, &mut sums)?;
            parse::write(ctx, l3 + off::IPV4_CHECK, sums.ip.to_be_bytes())?;
        }
        Family::V6 => {
            let hop: u8 = parse::read(ctx, l3 + off::IPV6_HOP_LIMIT)?;
            parse::write(ctx, l3 + off::IPV6_HOP_LIMIT, hop.wrapping_sub(1))?;
            let [src_hi, src_lo] = psrc.0;
            let [dst_hi, dst_lo] = pdst.0;
            replace::<4>(ctx, l3 + off::IPV6_SRC, src_hi, true, &mut sums)?;
            replace::<4>(ctx, l3 + off::IPV6_SRC + 8, src_lo, true, &mut sums)?;
            replace::<4>(ctx, l3 + off::IPV6_DST, dst_hi, true, &mut sums)?;
            replace::<4>(ctx, l3 + off::IPV6_DST + 8, dst_lo, true, &mut sums)?;
        }
    }
    let (sport, dport) = (sport.to_be_bytes(), dport.to_be_bytes());
    let ports = u32::from_ne_bytes([sport[0], sport[1], dport[0], dport[1]]);
    replace::<2>(ctx, l4 + off::L4_PORTS, ports.into(), false, &mut sums)?;
    // IPv4 zero means the sender computed no checksum: it must stay "none", not become a wrong
    // one. Otherwise a computed zero goes out as 0xffff (over IPv6 a zero would be dropped).
    let udp_check = if pkt.family == Family::V4 && udp.check == 0 {
        0
    } else {
        csum::udp4_finish(sums.udp)
    };
    parse::write(ctx, l4 + off::UDP_CHECK, udp_check.to_be_bytes())?;

    // A local destination is addressed to this host already; the stack checks the MAC.
    if !local {
        // SAFETY: as above.
        let (dmac, smac) = unsafe { ((*plan).dmac, (*plan).smac) };
        parse::write(ctx, off::ETH_DST, dmac)?;
        parse::write(ctx, off::ETH_SRC, smac)?;
    }
    Ok(())
}

/// Running checksums while fields change: the IPv4 header's, and the UDP one (which covers the
/// addresses through the pseudo-header, and the ports).
struct Checksums {
    ip: u16,
    udp: u16,
}

/// Overwrites `W` 16-bit words at `offset` with the first `2 * W` bytes of `new` (as laid out
/// in memory, i.e. network order), folding each change into the UDP checksum and, for IP header
/// fields (`in_ip_header`), the IPv4 header checksum.
///
/// Word by word from one register: copying whole addresses out as byte arrays makes the BPF
/// backend spill every byte to its own stack slot, past the 512-byte stack.
#[inline(always)]
fn replace<const W: usize>(
    ctx: &XdpContext,
    offset: usize,
    new: u64,
    in_ip_header: bool,
    sums: &mut Checksums,
) -> Result<(), parse::ParseError> {
    let new = new.to_ne_bytes();
    let mut i = 0;
    while i < W {
        let word = [new[2 * i], new[2 * i + 1]];
        let old = parse::read16(ctx, offset + 2 * i)?;
        parse::write(ctx, offset + 2 * i, word)?;
        let word = u16::from_be_bytes(word);
        if in_ip_header {
            sums.ip = csum::replace_u16(sums.ip, old, word);
        }
        sums.udp = csum::replace_u16(sums.udp, old, word);
        // Pin the running sums here. Left alone, LLVM sinks all the checksum arithmetic past
        // the last bounds check, keeping every old and new word alive (spilled) until then.
        *sums = core::hint::black_box(Checksums {
            ip: sums.ip,
            udp: sums.udp,
        });
        i += 1;
    }
    Ok(())
}

/// The leg's counters on this CPU: its port's slot (userspace zeroes it for a new leg).
#[inline(always)]
fn counters(port: u16) -> Option<*mut LegCounters> {
    RELAY_COUNTERS.get_ptr_mut(u32::from(port))
}

/// Media timeouts look at `last_seen_ns`: any packet from the peer proves the call alive, even
/// one the kernel leaves to userspace. Returns the leg's counters on this CPU.
#[inline(always)]
fn touch(port: u16, now_ns: u64) -> Option<*mut LegCounters> {
    let c = counters(port)?;
    // SAFETY: this CPU's slot of a per-CPU element; XDP does not preempt itself.
    unsafe { (*c).last_seen_ns = now_ns };
    Some(c)
}

/// Counts a relayed packet and, when it looks like RTP, its sequence number for loss
/// (`relay_common::rtp`; per CPU like the rest, joined by the reader) in the leg's counters
/// `touch` found.
#[inline(always)]
fn count_forwarded(
    ctx: &XdpContext,
    pkt: &Packet,
    counters: Option<*mut LegCounters>,
    payload_bytes: u64,
) {
    if let Some(c) = counters {
        // SAFETY: as in `touch`. Bytes are UDP payload, as the userspace relay counts them.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += payload_bytes;
        }
        // The payload is as it arrived: the rewrite touched headers only.
        if let Ok(head) = parse::read::<[u8; 4]>(ctx, pkt.l4_off() + UDP_HLEN)
            && let Some(seq) = rtp_seq(head, payload_bytes as usize)
        {
            // SAFETY: as in `touch`.
            unsafe { (*c).rtp_seen(seq) };
        }
    }
}

#[inline(always)]
fn count_strict_drop(port: u16) {
    if let Some(c) = counters(port) {
        // SAFETY: as in `touch`.
        unsafe { (*c).strict_drops += 1 };
    }
}
