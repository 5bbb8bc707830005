//! The media relay: a packet to a relay port leaves from the partner leg's port to the partner
//! leg's peer, rewritten in place and sent without touching the stack.
//!
//! The route is looked up before a single byte changes. Whenever the kernel cannot finish the
//! job (leg incomplete, no neighbour, VLAN, TTL expiring, egress not in `TX_PORTS`) the packet
//! goes up unmodified to the userspace relay socket bound on the same port, which can: the
//! fallback is a slower path, never a lost or mangled packet.

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_FIB_LKUP_RET_NOT_FWDED, BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams},
    helpers::generated::bpf_fib_lookup,
    programs::XdpContext,
};
use relay_common::{
    csum,
    relay::{
        LEG_ACTIVE, LEG_LATCH, LEG_LATCHED, LEG_PEER_KNOWN, LEG_STRICT_SOURCE, LEG_TRUST_KNOWN,
        Leg, LegCounters, LegKey,
    },
    rtp::rtp_seq,
};

use crate::{
    addr::Words,
    diag::{self, Event},
    maps::{RELAY_COUNTERS, RELAY_LEGS, TX_PORTS},
    parse::{self, Family, Packet, UDP_HLEN, Udp, Vlan, off},
};

// `Words::read`/`write` on leg addresses rely on these.
const _: () = assert!(
    core::mem::align_of::<Leg>() >= 8
        && core::mem::offset_of!(Leg, local_addr) % 8 == 0
        && core::mem::offset_of!(Leg, peer_addr) % 8 == 0
        && core::mem::offset_of!(Leg, trust_addr) % 8 == 0
);

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

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

/// Where the rewritten packet goes, decided before anything is written. Flat and small: it
/// lives on the stack of a program that has 512 bytes in all.
#[derive(Default)]
struct Plan {
    src: Words,
    dst: Words,
    sport: u16,
    dport: u16,
    /// `EGRESS_*`.
    egress: u8,
    ifindex: u32,
    smac: [u8; 6],
    dmac: [u8; 6],
}

const EGRESS_TX: u8 = 0;
const EGRESS_REDIRECT: u8 = 1;
const EGRESS_LOCAL: u8 = 2;

#[inline(never)]
pub fn try_relay(
    ctx: &XdpContext,
    pkt: &Packet,
    udp: &Udp,
    now_ns: u64,
) -> Result<Relayed, RelayError> {
    let key = LegKey::new(udp.dport);
    let leg = RELAY_LEGS.get_ptr_mut(key).ok_or(RelayError::NoLeg)?;
    // SAFETY (every access to `leg`): a live element of a preallocated hash, read field by field
    // rather than copied, to stay within the 512-byte stack. Userspace may rewrite it
    // concurrently; a torn read can misdirect at most this one packet, as with any
    // userspace/kernel map race.
    let flags = unsafe { (*leg).flags };
    let has = |f: u32| flags & f != 0;
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
            count_strict_drop(key);
            return Err(RelayError::StrictSource);
        }
    }
    let partner_port = unsafe { (*leg).partner_port };
    let mut plan = Plan::default();
    let planned = plan_route(ctx, pkt, partner_port, &mut plan);
    // After the strict check: spraying a relay port must not keep a dead call alive. The
    // counters are found once, for last-seen and for the count below: a per-CPU hash lookup
    // is a fifth of a relayed packet's map work. (Held across the route lookup instead, the
    // pointer made LLVM leave a stack pointer in R0 on an early return, which the verifier
    // refuses.)
    let counters = touch(key, now_ns);
    planned?;
    rewrite(ctx, pkt, udp, &plan).map_err(|_| {
        diag::note(Event::RewriteFailed, 0);
        RelayError::Rewrite
    })?;
    count_forwarded(ctx, pkt, counters, (udp.len as usize - UDP_HLEN) as u64);
    match plan.egress {
        EGRESS_TX => Ok(Relayed::Tx),
        EGRESS_LOCAL => Ok(Relayed::Local),
        _ => match TX_PORTS.redirect(plan.ifindex, 0) {
            Ok(_) => Ok(Relayed::Redirect),
            Err(_) => Err(RelayError::RedirectFailed),
        },
    }
}

/// Everything that can still send the packet to userspace, checked while it is untouched.
#[inline(never)]
fn plan_route(
    ctx: &XdpContext,
    pkt: &Packet,
    partner_port: u16,
    plan: &mut Plan,
) -> Result<(), RelayError> {
    let partner = RELAY_LEGS
        .get_ptr(LegKey::new(partner_port))
        .ok_or(RelayError::ToUserspace)?;
    // SAFETY: as for the receiving leg; the fields used are copied once, so the route looked up
    // is the one written.
    let (flags, src, dst, sport, dport) = unsafe {
        (
            (*partner).flags,
            Words::read(&raw const (*partner).local_addr),
            Words::read(&raw const (*partner).peer_addr),
            (*partner).local_port,
            (*partner).peer_port,
        )
    };
    if flags & LEG_ACTIVE == 0 || flags & LEG_PEER_KNOWN == 0 {
        return Err(RelayError::ToUserspace);
    }
    // Rewriting in place cannot change the IP version; a v4<->v6 call is bridged in userspace.
    let v4 = pkt.family == Family::V4;
    if src.is_v4() != v4 || dst.is_v4() != v4 {
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

    let ingress = ctx.ingress_ifindex() as u32;
    // SAFETY: all-zero is a valid value for this plain C struct (it is what the kernel expects
    // in every field this program does not set).
    let mut fib: FibParams = unsafe { core::mem::zeroed() };
    fib.l4_protocol = parse::IPPROTO_UDP;
    fib.sport = sport.to_be();
    fib.dport = dport.to_be();
    fib.__bindgen_anon_1.tot_len = pkt.ip_len;
    fib.ifindex = ingress;
    if v4 {
        fib.family = AF_INET;
        fib.__bindgen_anon_2.tos = pkt.tos;
        fib.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(src.v4_octets());
        fib.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(dst.v4_octets());
    } else {
        fib.family = AF_INET6;
        fib.__bindgen_anon_2.flowinfo = pkt.flowinfo;
        fib.__bindgen_anon_3.ipv6_src = src.fib_words();
        fib.__bindgen_anon_4.ipv6_dst = dst.fib_words();
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
    plan.egress = match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS if fib.ifindex == ingress => EGRESS_TX,
        // Only devices userspace enrolled can take redirected frames (a devmap entry is what
        // makes the driver set up its XDP transmit queues).
        BPF_FIB_LKUP_RET_SUCCESS if TX_PORTS.get_ifindex(fib.ifindex).is_some() => EGRESS_REDIRECT,
        // Ours: the stack delivers it (both peers on this host, e.g. on `lo`).
        BPF_FIB_LKUP_RET_NOT_FWDED => EGRESS_LOCAL,
        // Not enrolled, no neighbour entry yet, blackhole, forwarding off, MTU: the stack and
        // the userspace relay sort these out (and resolve the neighbour for next time).
        _ => return Err(RelayError::ToUserspace),
    };
    // `fib.ipv*_dst` may now hold the gateway, so the plan keeps its own copy of the peer.
    plan.src = src;
    plan.dst = dst;
    plan.sport = sport;
    plan.dport = dport;
    plan.ifindex = fib.ifindex;
    plan.smac = fib.smac;
    plan.dmac = fib.dmac;
    Ok(())
}

/// Writes the plan into the frame: MACs, addresses, TTL, ports and both checksums, updated
/// incrementally (RFC 1624) so the cost does not depend on the payload size.
#[inline(never)]
fn rewrite(
    ctx: &XdpContext,
    pkt: &Packet,
    udp: &Udp,
    plan: &Plan,
) -> Result<(), parse::ParseError> {
    let l3 = pkt.l3_off();
    let l4 = pkt.l4_off();
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
            let src = u32::from_ne_bytes(plan.src.v4_octets());
            let dst = u32::from_ne_bytes(plan.dst.v4_octets());
            replace::<2>(ctx, l3 + off::IPV4_SRC, src.into(), true, &mut sums)?;
            replace::<2>(ctx, l3 + off::IPV4_DST, dst.into(), true, &mut sums)?;
            parse::write(ctx, l3 + off::IPV4_CHECK, sums.ip.to_be_bytes())?;
        }
        Family::V6 => {
            let hop: u8 = parse::read(ctx, l3 + off::IPV6_HOP_LIMIT)?;
            parse::write(ctx, l3 + off::IPV6_HOP_LIMIT, hop.wrapping_sub(1))?;
            let [src_hi, src_lo] = plan.src.0;
            let [dst_hi, dst_lo] = plan.dst.0;
            replace::<4>(ctx, l3 + off::IPV6_SRC, src_hi, true, &mut sums)?;
            replace::<4>(ctx, l3 + off::IPV6_SRC + 8, src_lo, true, &mut sums)?;
            replace::<4>(ctx, l3 + off::IPV6_DST, dst_hi, true, &mut sums)?;
            replace::<4>(ctx, l3 + off::IPV6_DST + 8, dst_lo, true, &mut sums)?;
        }
    }
    let (sport, dport) = (plan.sport.to_be_bytes(), plan.dport.to_be_bytes());
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
    if plan.egress != EGRESS_LOCAL {
        parse::write(ctx, off::ETH_DST, plan.dmac)?;
        parse::write(ctx, off::ETH_SRC, plan.smac)?;
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

/// The leg's counters on this CPU, created on first use.
#[inline(always)]
fn counters(key: LegKey) -> Option<*mut LegCounters> {
    if let Some(p) = RELAY_COUNTERS.get_ptr_mut(key) {
        return Some(p);
    }
    if let Err(e) = RELAY_COUNTERS.insert(key, LegCounters::default(), 0) {
        diag::note(Event::RelayCountersFull, e.into());
    }
    RELAY_COUNTERS.get_ptr_mut(key)
}

/// Media timeouts look at `last_seen_ns`: any packet from the peer proves the call alive, even
/// one the kernel leaves to userspace. Returns the leg's counters on this CPU.
#[inline(always)]
fn touch(key: LegKey, now_ns: u64) -> Option<*mut LegCounters> {
    let c = counters(key)?;
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
fn count_strict_drop(key: LegKey) {
    if let Some(c) = counters(key) {
        // SAFETY: as in `touch`.
        unsafe { (*c).strict_drops += 1 };
    }
}
