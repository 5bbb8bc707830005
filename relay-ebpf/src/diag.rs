//! Diagnostics through aya-log: the rare events only, never a normal verdict.
//!
//! Three kinds: the first packet of a kind this program has not seen since it was loaded
//! (QinQ, an IPv6 extension-header chain, a fragment, ...), logged once; a table that refused
//! an insert, and a state that should not happen, each logged at most once a second. The
//! loader forwards the lines into `tracing` (`relay_user::loader`, target `relay_ebpf`).
//!
//! Every line is written by [`note`], one BPF function of its own: the log macros build their
//! record straight into aya-log's ring buffer, but their locals still cost stack, and a
//! function of its own keeps them out of the frames of the hot path. Callers reach it only on
//! a rare branch; with the `log` feature off, [`note`] is empty and those branches compile
//! away (the benchmark compares both builds).
//!
//! `DIAG_LAST` (when each event was last logged) is not pinned: a restarted daemon loads a
//! fresh one, so its own log says again what the kernel sees.

/// Every event this program logs; the index into `DIAG_LAST`.
// Without the feature, the first-of-a-kind events are never built: `kinds` ignores its input.
#[cfg_attr(not(feature = "log"), allow(dead_code))]
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum Event {
    /// An 802.1ad service tag or two VLAN tags.
    FirstQinq = 0,
    /// IPv6 extension headers before the transport header.
    FirstV6Ext = 1,
    /// A first fragment (offset 0, More Fragments), which gets the whole pipeline.
    FirstFragment = 2,
    /// A later fragment with no remembered verdict (dropped).
    FirstUnknownFragment = 3,
    /// An IPv6 extension-header chain too long for the bounded walk (dropped).
    FirstLongExtChain = 4,
    /// A first fragment too short to judge (dropped).
    FirstTinyFragment = 5,
    /// `FRAG_VERDICTS` refused an insert; argument: the error.
    FragVerdictsFull = 6,
    /// `GUARD_STATE` refused an insert: the guard fails open for that source.
    GuardStateFull = 7,
    /// The guard event ring buffer had no room (counted as `event_lost`).
    GuardEventsFull = 8,
    // 9 was `RELAY_COUNTERS` refusing an insert: the leg counters are an array indexed by
    // port now, which has a slot for every leg.
    /// `GUARD_CONFIG` has no element 0.
    GuardConfigMissing = 10,
    /// A relay rewrite failed a bounds check that parsing had passed.
    RewriteFailed = 11,
    /// `TX_PORTS` refused a redirect after the frame was rewritten.
    RedirectFailed = 12,
}

/// Entries of `DIAG_LAST`.
#[cfg(feature = "log")]
const EVENTS: u32 = Event::RedirectFailed as u32 + 1;

/// Table-full and unexpected-state lines repeat at most this often.
#[cfg(feature = "log")]
const REPEAT_NS: u64 = 1_000_000_000;

#[cfg(feature = "log")]
#[aya_ebpf::macros::map(name = "DIAG_LAST")]
static DIAG_LAST: aya_ebpf::maps::Array<u64> = aya_ebpf::maps::Array::with_max_entries(EVENTS, 0);

impl Event {
    /// Logged once per load rather than once a second.
    #[cfg(feature = "log")]
    #[inline(always)]
    fn once(self) -> bool {
        (self as u32) <= Event::FirstTinyFragment as u32
    }
}

/// Logs `event` with `arg` (an error code, or 0) if it is due. Racy across CPUs by design: two
/// CPUs seeing the same first packet at once may both log it.
#[cfg(feature = "log")]
#[inline(never)]
pub fn note(event: Event, arg: i64) {
    let Some(last) = DIAG_LAST.get_ptr_mut(event as u32) else {
        return;
    };
    // SAFETY: no preconditions; the same monotonic clock the rest of the program uses.
    let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    // SAFETY: a live element of an array map; a racing CPU can at worst make one more line.
    let prev = unsafe { *last };
    let due = prev == 0 || (!event.once() && now.wrapping_sub(prev) >= REPEAT_NS);
    if !due {
        return;
    }
    // SAFETY: as above. Never 0, which means "not yet".
    unsafe { *last = now | 1 };
    say(event, arg);
}

/// One BPF function per line: each log macro's record-building locals are its own frame, and
/// only one such frame is ever on the stack (LLVM does not share slots between the arms of
/// one function well enough for the 512-byte budget).
#[cfg(feature = "log")]
#[inline(always)]
fn say(event: Event, arg: i64) {
    macro_rules! log_line {
        ($name:ident, $level:ident, $arg:ident: $($fmt:tt)+) => {{
            #[inline(never)]
            fn $name($arg: i64) {
                let ctx = ();
                aya_log_ebpf::$level!(&ctx, $($fmt)+);
            }
            $name($arg)
        }};
        ($name:ident, $level:ident, $($fmt:tt)+) => {{
            #[inline(never)]
            fn $name() {
                let ctx = ();
                aya_log_ebpf::$level!(&ctx, $($fmt)+);
            }
            $name()
        }};
    }
    match event {
        Event::FirstQinq => log_line!(qinq, info, "first QinQ (802.1ad) frame since load"),
        Event::FirstV6Ext => log_line!(
            v6_ext,
            info,
            "first IPv6 packet with extension headers since load"
        ),
        Event::FirstFragment => log_line!(fragment, info, "first IP first-fragment since load"),
        Event::FirstUnknownFragment => log_line!(
            unknown_fragment,
            warn,
            "first later fragment with no remembered verdict since load (dropped)"
        ),
        Event::FirstLongExtChain => log_line!(
            long_chain,
            warn,
            "first IPv6 extension-header chain too long to walk since load (dropped)"
        ),
        Event::FirstTinyFragment => log_line!(
            tiny_fragment,
            warn,
            "first fragment too short to judge since load (dropped)"
        ),
        Event::FragVerdictsFull => log_line!(
            frag_full,
            warn,
            arg: "FRAG_VERDICTS insert failed ({}): that datagram's later fragments are dropped",
            arg
        ),
        Event::GuardStateFull => log_line!(
            guard_full,
            warn,
            "GUARD_STATE insert failed: the SIP guard lets that source through unrated"
        ),
        Event::GuardEventsFull => log_line!(
            events_full,
            warn,
            "GUARD_EVENTS ring buffer full: guard events lost (counted in event_lost)"
        ),
        Event::GuardConfigMissing => {
            log_line!(config_missing, error, "GUARD_CONFIG has no element 0")
        }
        Event::RewriteFailed => log_line!(
            rewrite_failed,
            error,
            "relay rewrite failed a bounds check parsing had passed (dropped)"
        ),
        Event::RedirectFailed => log_line!(
            redirect_failed,
            error,
            "TX_PORTS refused a redirect of a rewritten frame (dropped)"
        ),
    }
}

/// The first-of-a-kind lines of one packet: a function of its own, so the caller's frame (the
/// program's outermost, which the deepest call chain includes) holds nothing for them.
#[cfg(feature = "log")]
#[inline(never)]
pub fn kinds(qinq: bool, v6_ext: bool, first_fragment: bool) {
    if qinq {
        note(Event::FirstQinq, 0);
    }
    if v6_ext {
        note(Event::FirstV6Ext, 0);
    }
    if first_fragment {
        note(Event::FirstFragment, 0);
    }
}

#[cfg(not(feature = "log"))]
#[inline(always)]
pub fn kinds(_qinq: bool, _v6_ext: bool, _first_fragment: bool) {}

/// Without the `log` feature: nothing, and the branches that lead here compile away.
#[cfg(not(feature = "log"))]
#[inline(always)]
pub fn note(_event: Event, _arg: i64) {}
