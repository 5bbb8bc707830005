//! Privileged: the XDP program's rare-event log lines reach `tracing` through the loader's
//! forwarding (`relay_user::kernel_log`): a first-of-a-kind line once per kind, a table-full
//! line at most once a second however often the table refuses, and nothing for a normal
//! packet.
//! Skips without root (fails under CI=true instead).

mod common;
use common::privileged;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aya::programs::Xdp;
use relay_common::maps::PROGRAM;
use relay_user::{
    GuardSettings, Proto, Service, ServiceId, kernel_log, loader,
    maps::XdpMaps,
    object::ebpf_object,
    test_run::{XDP_DROP, XdpRun},
};
use tracing_subscriber::{Layer, layer::SubscriberExt};

const SIP: u16 = 5060;

/// Every event under the kernel's target: (level, message).
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<(tracing::Level, String)>>>);

impl<S: tracing::Subscriber> Layer<S> for Lines {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Msg(String);
        impl tracing::field::Visit for Msg {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" {
                    self.0 = format!("{v:?}");
                }
            }
        }
        if event.metadata().target() == kernel_log::TARGET {
            let mut m = Msg(String::new());
            event.record(&mut m);
            let mut lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
            lines.push((*event.metadata().level(), m.0));
        }
    }
}

impl Lines {
    fn matching(&self, needle: &str) -> Vec<(tracing::Level, String)> {
        let lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        lines
            .iter()
            .filter(|(_, m)| m.contains(needle))
            .cloned()
            .collect()
    }

    /// Polls (the reader thread drains the ring every 250 ms at most) with a generous deadline.
    fn wait_for(&self, needle: &str) -> Vec<(tracing::Level, String)> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.matching(needle);
            if !got.is_empty() || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Ethernet (optionally behind an 802.1ad and an 802.1Q tag), IPv4 (optionally a first
/// fragment) and UDP 192.0.2.7:5060 → 192.0.2.1:`dport` with one byte of payload.
fn frame(qinq: bool, first_fragment: bool, dport: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    if qinq {
        f.extend_from_slice(&[0x88, 0xa8, 0x00, 0x64, 0x81, 0x00, 0x00, 0xc8]);
    }
    f.extend_from_slice(&[0x08, 0x00]);
    let frag: u16 = if first_fragment { 0x2000 } else { 0 };
    let tot_len: u16 = 20 + 8 + 1;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&tot_len.to_be_bytes());
    f.extend_from_slice(&[0x12, 0x34]);
    f.extend_from_slice(&frag.to_be_bytes());
    f.extend_from_slice(&[64, 17, 0, 0, 192, 0, 2, 7, 192, 0, 2, 1]);
    f.extend_from_slice(&5060u16.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&9u16.to_be_bytes());
    f.extend_from_slice(&[0, 0, b'x']);
    f
}

#[test]
fn rare_events_reach_tracing_once_per_kind() {
    if !privileged("rare_events_reach_tracing_once_per_kind") {
        return;
    }
    let lines = Lines::default();
    // Global: the reader thread emits its events from a thread of its own.
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(lines.clone()))
        .expect("the only subscriber of this test binary");
    let instance = format!("relay-user-klog-{}", std::process::id());
    let _ = loader::detach(&instance, &[]);
    let mut ebpf = loader::load_pinned(ebpf_object(), &instance).expect("load object");
    let forwarding = kernel_log::forward(&mut ebpf).expect("the object logs (feature `log`)");
    // SIP on 5060 with a guard of one packet a second reporting every drop: a burst from one
    // source fills the guard event ring (nobody reads it here), and the ring refuses records.
    let mut maps = XdpMaps::from_ebpf(&mut ebpf).expect("maps");
    maps.service_set(Service {
        port: SIP,
        proto: Proto::Udp,
        id: ServiceId::Sip,
        restricted: false,
        sip: true,
    })
    .expect("SIP service");
    maps.guard_set(&GuardSettings {
        packet_rate: 1,
        packet_burst: 1,
        event_interval: Duration::ZERO,
        ..GuardSettings::default()
    })
    .expect("guard");
    let prog: &mut Xdp = ebpf
        .program_mut(PROGRAM)
        .expect("program")
        .try_into()
        .expect("XDP");
    prog.load()
        .expect("verifier accepts the program with its log calls");
    let run = |data: &[u8], repeat: u32| {
        XdpRun::new(data)
            .repeat(repeat)
            .run(prog)
            .expect("BPF_PROG_TEST_RUN")
            .action
    };

    // A plain packet: no line. The QinQ frame twice, then a first fragment: the fragment's
    // line arrives after anything the second QinQ frame could have logged (one FIFO ring).
    run(&frame(false, false, 9999), 1);
    run(&frame(true, false, 9999), 1);
    run(&frame(true, false, 9999), 1);
    run(&frame(false, true, 9999), 1);
    let qinq = lines.wait_for("QinQ");
    let frag = lines.wait_for("first-fragment");
    // Twice the ring's capacity of drops, each reported, within well under a second (the
    // runs take nanoseconds each): the ring is full for thousands of them, one line says so.
    let burst = 2 * relay_common::maps::GUARD_EVENTS_CAPACITY;
    assert_eq!(run(&frame(false, false, SIP), burst), XDP_DROP);
    let full = lines.wait_for("GUARD_EVENTS ring buffer full");
    let lost = maps.stats_raw().expect("stats")[relay_user::Stat::EventLost as usize];
    drop(forwarding);
    let _ = loader::detach(&instance, &[]);

    assert_eq!(qinq.len(), 1, "one line for the first QinQ frame: {qinq:?}");
    assert_eq!(qinq[0].0, tracing::Level::INFO);
    assert_eq!(frag.len(), 1, "one line for the first fragment: {frag:?}");
    assert!(lost > 1000, "the ring refused records ({lost} lost)");
    assert_eq!(full.len(), 1, "{lost} refusals, one line: {full:?}");
    assert_eq!(full[0].0, tracing::Level::WARN);
    let all = lines.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(all.len(), 3, "nothing else was logged: {all:?}");
}
