//! The SIP guard: per-source packet rate, INVITE rate, concurrent-session cap and TCP
//! connection (SYN) rate, with drops sampled to userspace through a ring buffer.
//!
//! It sits in front of the SIP daemon so a flood is shed before it costs a socket wakeup and a
//! parse. Limits are per source address; GCRA keeps one timestamp per bucket and needs no
//! division on the packet path.

use aya_ebpf::bindings::BPF_NOEXIST;
use relay_common::{
    Addr,
    guard::{self, GuardConfig, GuardEvent, GuardEventKind, GuardState, INVITE_WINDOW, TRUSTED},
    stats::Stat,
};

use crate::{
    diag::{self, Event},
    maps::{GUARD_CONFIG, GUARD_EVENTS, GUARD_STATE, SESSIONS, count},
    parse::{self, L4, Packet, TCP_ACK, TCP_SYN, UDP_HLEN},
};

#[derive(Clone, Copy)]
pub enum GuardDrop {
    PacketRate,
    InviteRate,
    SessionCap,
    SynRate,
}

impl GuardDrop {
    fn kind(self) -> GuardEventKind {
        match self {
            GuardDrop::PacketRate => GuardEventKind::PacketRate,
            GuardDrop::InviteRate => GuardEventKind::InviteRate,
            GuardDrop::SessionCap => GuardEventKind::SessionCap,
            GuardDrop::SynRate => GuardEventKind::SynRate,
        }
    }
}

/// Runs the guard for a packet to a SIP service on `port`.
#[inline(never)]
pub fn check(
    ctx: &aya_ebpf::programs::XdpContext,
    pkt: &Packet,
    port: u16,
    now_ns: u64,
) -> Result<(), GuardDrop> {
    let Some(cfg) = GUARD_CONFIG.get_ptr(0) else {
        diag::note(Event::GuardConfigMissing, 0);
        return Ok(());
    };
    // SAFETY: element 0 of an array map always exists; a torn read during a userspace update
    // applies a half-old limit to one packet.
    let cfg: GuardConfig = unsafe { cfg.read() };
    // SAFETY: a live element written only by userspace; a torn read misjudges one packet.
    if let Some(p) = SESSIONS.get_ptr(pkt.src.as_addr())
        && unsafe { (*p).limit } == TRUSTED
    {
        return Ok(());
    }
    let Some(state) = state_for(pkt.src.as_addr()) else {
        // Without state there is nothing to rate against; failing open keeps SIP reachable.
        diag::note(Event::GuardStateFull, 0);
        return Ok(());
    };
    let result = decide(ctx, pkt, &cfg, state, now_ns);
    if let Err(drop) = result {
        report(
            state,
            pkt.src.as_addr(),
            drop,
            port,
            now_ns,
            cfg.event_interval_ns,
        );
    }
    result
}

#[inline(always)]
fn state_for(src: &Addr) -> Option<*mut GuardState> {
    if let Some(p) = GUARD_STATE.get_ptr_mut(src) {
        return Some(p);
    }
    // NOEXIST: another CPU may have created it meanwhile; either way look it up again.
    let _ = GUARD_STATE.insert(src, GuardState::default(), BPF_NOEXIST.into());
    GUARD_STATE.get_ptr_mut(src)
}

#[inline(always)]
fn decide(
    ctx: &aya_ebpf::programs::XdpContext,
    pkt: &Packet,
    cfg: &GuardConfig,
    state: *mut GuardState,
    now_ns: u64,
) -> Result<(), GuardDrop> {
    // SAFETY (all accesses to `state` here): a live element of the LRU hash. Two CPUs handling
    // the same source may race on it; the cost is one packet judged against a stale TAT.
    // A new connection first, so a refused SYN does not also use up the packet allowance.
    if let L4::Tcp { flags, .. } = pkt.l4
        && flags & (TCP_SYN | TCP_ACK) == TCP_SYN
    {
        let syns_tat = unsafe { (*state).syns_tat_ns };
        let syns_tat = cfg.syns.check(syns_tat, now_ns).ok_or(GuardDrop::SynRate)?;
        unsafe { (*state).syns_tat_ns = syns_tat };
    }
    let packets_tat = unsafe { (*state).packets_tat_ns };
    let packets_tat = cfg
        .packets
        .check(packets_tat, now_ns)
        .ok_or(GuardDrop::PacketRate)?;
    unsafe { (*state).packets_tat_ns = packets_tat };

    // The INVITE and session checks only apply to UDP: over TCP a datagram boundary is not a
    // message boundary, so "payload starts with INVITE" means nothing.
    let L4::Udp(udp) = pkt.l4 else {
        return Ok(());
    };
    if !is_invite(ctx, pkt, udp.len) {
        return Ok(());
    }
    let invites_tat = unsafe { (*state).invites_tat_ns };
    let invites_tat = cfg
        .invites
        .check(invites_tat, now_ns)
        .ok_or(GuardDrop::InviteRate)?;
    check_sessions(pkt.src.as_addr(), cfg.max_sessions)?;
    // Committed only now: an INVITE refused at the session cap is not a call and does not use
    // up the caller's calls-per-second allowance.
    unsafe { (*state).invites_tat_ns = invites_tat };
    Ok(())
}

#[inline(always)]
fn is_invite(ctx: &aya_ebpf::programs::XdpContext, pkt: &Packet, udp_len: u16) -> bool {
    let payload = (udp_len as usize).saturating_sub(UDP_HLEN);
    let at = pkt.l4_off() + UDP_HLEN;
    if payload < 7 {
        return false;
    }
    if payload >= INVITE_WINDOW {
        match parse::read::<[u8; INVITE_WINDOW]>(ctx, at) {
            Ok(head) => guard::is_invite(&head),
            Err(_) => false,
        }
    } else {
        match parse::read::<[u8; 7]>(ctx, at) {
            Ok(head) => guard::is_invite(&head),
            Err(_) => false,
        }
    }
}

#[inline(always)]
fn check_sessions(src: &Addr, default_limit: u32) -> Result<(), GuardDrop> {
    let (active, own_limit) = match SESSIONS.get_ptr(src) {
        // SAFETY: a live element written only by userspace; a torn read is one stale count.
        Some(p) => unsafe { ((*p).active, (*p).limit) },
        None => (0, 0),
    };
    let limit = if own_limit != 0 {
        own_limit
    } else {
        default_limit
    };
    if limit != 0 && active >= limit {
        return Err(GuardDrop::SessionCap);
    }
    Ok(())
}

/// Sends at most one event per source per interval, carrying how many drops it stands for, so
/// a flood cannot flood the IDS as well.
#[inline(always)]
fn report(
    state: *mut GuardState,
    src: &Addr,
    drop: GuardDrop,
    port: u16,
    now_ns: u64,
    interval_ns: u32,
) {
    // SAFETY: as in `decide`.
    let (last, suppressed) = unsafe { ((*state).last_event_ns, (*state).suppressed) };
    let due = last == 0 || now_ns.wrapping_sub(last) >= interval_ns as u64;
    if !due {
        unsafe { (*state).suppressed = suppressed + 1 };
        return;
    }
    let Some(mut entry) = GUARD_EVENTS.reserve::<GuardEvent>(0) else {
        // Counted in `suppressed` so the next event still accounts for it.
        count(Stat::EventLost);
        diag::note(Event::GuardEventsFull, 0);
        unsafe { (*state).suppressed = suppressed + 1 };
        return;
    };
    entry.write(GuardEvent {
        source: *src,
        ts_ns: now_ns,
        kind: drop.kind() as u32,
        port,
        _pad: 0,
        suppressed,
    });
    entry.submit(0);
    unsafe {
        (*state).last_event_ns = now_ns;
        (*state).suppressed = 0;
    }
}
