//! The XDP data plane: parse, bans, static deny, fragments, service ACL, SIP guard, media
//! relay.
//!
//! Each stage returns its own typed reason for stopping; [`verdict`] is the single place that
//! turns a reason into an XDP action and a `STATS` counter, so no path can return a verdict
//! without counting it and the compiler flags any reason left unmapped.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod addr;
#[cfg(target_arch = "bpf")]
mod diag;
#[cfg(target_arch = "bpf")]
mod floor;
#[cfg(target_arch = "bpf")]
mod frag;
#[cfg(target_arch = "bpf")]
mod fw;
#[cfg(target_arch = "bpf")]
mod guard;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod parse;
#[cfg(target_arch = "bpf")]
mod relay;
#[cfg(target_arch = "bpf")]
mod route;

#[cfg(target_arch = "bpf")]
mod prog {
    use aya_ebpf::{
        bindings::xdp_action::{self, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX},
        helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
        macros::xdp,
        programs::XdpContext,
    };
    use relay_common::{
        fw::{PROTO_TCP, PROTO_UDP, SVC_SIP},
        stats::Stat,
    };

    use crate::{
        diag::{self, Event},
        frag::{self, Follow},
        fw::{self, FwDrop},
        guard::{self, GuardDrop},
        maps::count,
        parse::{self, Frag, L4, Packet, ParseError, Parsed, Vlan},
        relay::{self, RelayError, Relayed},
    };

    /// Why the pipeline stopped: exactly one per packet.
    #[derive(Clone, Copy)]
    enum Outcome {
        Parse(ParseError),
        /// A later fragment, following its first fragment's verdict.
        Fragment(Follow),
        NotUdpTcp,
        Firewall(FwDrop),
        Guard(GuardDrop),
        /// A SIP packet the guard let through.
        Sip,
        /// A non-SIP service (the ACL admitted the source), no relay leg.
        Service,
        Relayed(Relayed),
        Relay(RelayError),
        Other,
    }

    impl From<ParseError> for Outcome {
        fn from(e: ParseError) -> Self {
            Outcome::Parse(e)
        }
    }
    impl From<FwDrop> for Outcome {
        fn from(e: FwDrop) -> Self {
            Outcome::Firewall(e)
        }
    }
    impl From<GuardDrop> for Outcome {
        fn from(e: GuardDrop) -> Self {
            Outcome::Guard(e)
        }
    }

    /// The one mapping from reason to action and counter.
    fn verdict(outcome: Outcome) -> (xdp_action::Type, Stat) {
        match outcome {
            Outcome::Parse(ParseError::NotIp) => (XDP_PASS, Stat::PassNotIp),
            // Never guess at a header we cannot read: dropping cannot mis-forward.
            Outcome::Parse(ParseError::Malformed) => (XDP_DROP, Stat::DropMalformed),
            Outcome::Parse(ParseError::ExtHeaders) => (XDP_DROP, Stat::DropIpv6ExtHeaders),
            Outcome::Parse(ParseError::TinyFragment) => (XDP_DROP, Stat::DropFragmentTiny),
            Outcome::Fragment(Follow::Pass) => (XDP_PASS, Stat::PassFragment),
            Outcome::Fragment(Follow::Drop) => (XDP_DROP, Stat::DropFragment),
            // Nothing in it can be judged: passing it would let a forged fragment train past
            // the ACL, and a real one is retransmitted whole by SIP.
            Outcome::Fragment(Follow::Unknown) => (XDP_DROP, Stat::DropFragmentUnknown),
            Outcome::NotUdpTcp => (XDP_PASS, Stat::PassNotUdpTcp),
            Outcome::Firewall(FwDrop::Banned) => (XDP_DROP, Stat::DropBanned),
            Outcome::Firewall(FwDrop::Denied) => (XDP_DROP, Stat::DropDenied),
            Outcome::Firewall(FwDrop::ServiceAcl) => (XDP_DROP, Stat::DropServiceAcl),
            Outcome::Guard(GuardDrop::PacketRate) => (XDP_DROP, Stat::DropSipPacketRate),
            Outcome::Guard(GuardDrop::InviteRate) => (XDP_DROP, Stat::DropSipInviteRate),
            Outcome::Guard(GuardDrop::SessionCap) => (XDP_DROP, Stat::DropSipSessionCap),
            Outcome::Guard(GuardDrop::SynRate) => (XDP_DROP, Stat::DropTcpSynRate),
            Outcome::Sip => (XDP_PASS, Stat::PassSip),
            Outcome::Service => (XDP_PASS, Stat::PassService),
            Outcome::Relayed(Relayed::Tx) => (XDP_TX, Stat::RelayTx),
            Outcome::Relayed(Relayed::Redirect) => (XDP_REDIRECT, Stat::RelayRedirect),
            Outcome::Relayed(Relayed::Local) => (XDP_PASS, Stat::RelayLocal),
            Outcome::Relay(RelayError::ToUserspace) => (XDP_PASS, Stat::RelayToUserspace),
            Outcome::Relay(RelayError::StrictSource) => (XDP_DROP, Stat::DropStrictSource),
            // The frame is already rewritten, so passing it would deliver it to the wrong place.
            Outcome::Relay(RelayError::RedirectFailed) => (XDP_DROP, Stat::DropRedirectFailed),
            Outcome::Relay(RelayError::Rewrite) => (XDP_DROP, Stat::DropMalformed),
            Outcome::Relay(RelayError::NoLeg) | Outcome::Other => (XDP_PASS, Stat::PassOther),
        }
    }

    #[xdp]
    pub fn sbc_xdp(ctx: XdpContext) -> u32 {
        count(Stat::Received);
        // Borrowed, not moved out: a copy of the packet would cost the pipeline's frame 64
        // bytes of a 512-byte stack budget that the call chain nearly spends already.
        let parsed = parse::parse(&ctx);
        let (action, stat) = verdict(judge(&ctx, &parsed));
        count(stat);
        // Last, when only `action` is still live: the checks below read the parsed packet
        // where it already lies and the counter index, and keep nothing from the pipeline's
        // registers (live values across the log calls cost a normal verdict spills).
        if let Parsed::Ok(pkt) = &parsed {
            note_kinds(pkt);
        }
        note_rare(stat);
        action
    }

    /// The verdicts worth a log line (`diag`), by their counter.
    #[inline(always)]
    fn note_rare(stat: Stat) {
        let event = match stat {
            Stat::DropIpv6ExtHeaders => Event::FirstLongExtChain,
            Stat::DropFragmentTiny => Event::FirstTinyFragment,
            Stat::DropFragmentUnknown => Event::FirstUnknownFragment,
            Stat::DropRedirectFailed => Event::RedirectFailed,
            _ => return,
        };
        diag::note(event, 0);
    }

    /// The first packet of each rare kind gets a log line (`diag`).
    #[inline(always)]
    fn note_kinds(pkt: &Packet) {
        if pkt.vlan == Vlan::QinQ || pkt.v6_ext || pkt.frag == Frag::First {
            diag::kinds(pkt.vlan == Vlan::QinQ, pkt.v6_ext, pkt.frag == Frag::First);
        }
    }

    /// Parse, the source checks, then fragments apart: a later fragment follows its first
    /// fragment's verdict, a first fragment runs the whole pipeline and leaves its verdict
    /// behind for them.
    #[inline(always)]
    fn judge(ctx: &XdpContext, parsed: &Parsed) -> Outcome {
        let pkt = match parsed {
            Parsed::Ok(p) => p,
            Parsed::Err(e) => return (*e).into(),
        };
        // The coarse CLOCK_MONOTONIC (a tick behind at most, `KERNEL_CLOCK_LAG_NS`): ban and
        // fragment expiry, the relay's last-seen, learning window and route ages need no
        // better, and every packet pays for the clock (the precise one was 8% of a relayed
        // packet's time). Only the SIP guard's rates take the precise clock (`pipeline`).
        // SAFETY: no preconditions.
        let now = unsafe { bpf_ktime_get_coarse_ns() };
        // Bans and the deny list judge the source alone: every IP packet, whatever follows.
        if let Err(e) = fw::check_source(pkt, now) {
            return e.into();
        }
        if pkt.frag == Frag::Later {
            return Outcome::Fragment(frag::follow(pkt, now));
        }
        let outcome = match pipeline(ctx, pkt, now) {
            Ok(o) | Err(o) => o,
        };
        if pkt.frag == Frag::First {
            frag::remember(pkt, verdict(outcome).0 != XDP_DROP, now);
        }
        outcome
    }

    /// `Err` is an early stop, `Ok` the end of the pipeline; both are verdicts.
    #[inline(always)]
    fn pipeline(ctx: &XdpContext, pkt: &Packet, now: u64) -> Result<Outcome, Outcome> {
        let (proto, dport) = match pkt.l4 {
            L4::Udp(udp) => (PROTO_UDP, udp.dport),
            L4::Tcp { dport, .. } => (PROTO_TCP, dport),
            L4::Fragment | L4::Other => return Err(Outcome::NotUdpTcp),
        };
        let service = fw::service_acl(pkt, dport, proto)?;
        if let Some(svc) = service
            && svc.flags & SVC_SIP != 0
        {
            // SAFETY: no preconditions; CLOCK_MONOTONIC, which the GCRA state is kept in.
            guard::check(ctx, pkt, dport, unsafe { bpf_ktime_get_ns() })?;
            return Ok(Outcome::Sip);
        }
        // A fragment or a packet behind IPv6 extension headers is never rewritten: the stack
        // reassembles it or strips the headers for the userspace relay's socket.
        if let L4::Udp(udp) = pkt.l4
            && pkt.frag == Frag::No
            && !pkt.v6_ext
        {
            match relay::try_relay(ctx, pkt, &udp, now) {
                Ok(r) => return Ok(Outcome::Relayed(r)),
                Err(RelayError::NoLeg) => {}
                Err(e) => return Err(Outcome::Relay(e)),
            }
        }
        Ok(if service.is_some() {
            Outcome::Service
        } else {
            Outcome::Other
        })
    }

    /// Attached to the far end of a veth: native-mode redirect into a veth only delivers when
    /// the receiving peer runs an XDP program.
    #[xdp]
    pub fn sbc_xdp_pass(_ctx: XdpContext) -> u32 {
        XDP_PASS
    }

    /// The floor of a relay on this machine, for `bench xdp` only (never attached): swaps
    /// addresses and ports and sends the frame back (`floor.rs`).
    #[xdp]
    pub fn sbc_xdp_swap(ctx: XdpContext) -> u32 {
        crate::floor::swap(&ctx)
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
