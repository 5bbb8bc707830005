//! A real softphone as the caller: Debian's baresip 1.0.0 (installed by `cargo xtask setup`)
//! in the caller namespace, `sipd run` with its DEFAULT `[auth]` configuration in the relay
//! namespace (generic XDP, so the kernel relays the media), and sipp as the vendor (UAS) in the
//! callee namespace, with a Rust RTP socket beside it.
//!
//! baresip runs headless: a configuration directory with no sound device (audio from a WAV
//! file through `aufile`, played into `aubridge`), the call placed with `-e "/dial …"`, and
//! `-t` to quit. The vendor hangs up after a few seconds.
//!
//! - `baresip_digest_and_ip_calls`: a digest-authenticated call (baresip answers the 401
//!   itself) and an IP-authenticated call, each answered, with media relayed both ways and
//!   counted at both ends (the vendor's socket counts what baresip sent through the relay;
//!   a counter in the caller namespace's firewall counts what reached baresip's RTP ports from
//!   the relay), the kernel's relay counters, and each call's CDR.
//! - `sha256_account_refuses_an_md5_answer`: an account that requires SHA-256; sipp, which
//!   answers only MD5, gets a second 401 offering SHA-256 alone, and no call goes upstream.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::netns::{NsChild, Topology};
use tests::sip::Sipp;
use tests::{require_privileged, require_sipp, rtp};

mod sbc;
use sbc::{Net, Plane, SIP_PORT, Sbc, Settings, serial};

const PHONE_SIP_PORT: u16 = 5062;
const PHONE_RTP: (u16, u16) = (40_000, 40_099);
const VENDOR_RTP_PORT: u16 = 20_000;
const PASSWORD: &str = "Kq9!Vt4m-Plover-82";
/// How long the vendor holds an answered call before its BYE.
const HOLD: Duration = Duration::from_millis(3000);

fn baresip_available() -> bool {
    std::process::Command::new("baresip")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

macro_rules! require_baresip {
    () => {
        if !baresip_available() {
            assert!(
                !tests::in_ci(),
                "baresip is not installed (cargo xtask setup, or apt-get install baresip)"
            );
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("SKIPPED {}: baresip not installed\n", module_path!()).as_bytes(),
            );
            return;
        }
    };
}

/// The provisioning: a vendor for CLDs 33/34/35, and three accounts, all for the caller's
/// address: `softphone` by digest (CLD 33), `pbx` by source address alone (CLD 34), and
/// `strict` by digest with SHA-256 required (CLD 35).
fn provisioning(topo: &Topology) -> String {
    let vendor = topo.callee_if.ip(false);
    let caller = topo.caller_if.ip(false);
    let mut t = format!(
        "[[tariff]]\nname = \"std\"\nrate_per_minute = \"0.60\"\nexpected_call_secs = 60\n\
         initial_increment_secs = 1\nincrement_secs = 1\n\n\
         [[connection]]\nname = \"vendor\"\ndestination = \"{vendor}:{SIP_PORT}\"\n\
         transport = \"udp\"\ncld_prefixes = [\"33\", \"34\", \"35\"]\nmax_channels = 10\n\
         cps_limit = 10\npriority = 1\n\n"
    );
    for (name, sip, cld, ip_only) in [
        (
            "softphone",
            format!("sip = {{ username = \"softphone\", password = \"{PASSWORD}\" }}\n"),
            "33",
            false,
        ),
        ("pbx", String::new(), "34", true),
        (
            "strict",
            format!(
                "sip = {{ username = \"strict\", password = \"{PASSWORD}\", \
                 algorithms = [\"SHA-256\"] }}\n"
            ),
            "35",
            false,
        ),
    ] {
        t += &format!(
            "[[account]]\nname = \"{name}\"\ntariff = \"std\"\nbalance = \"100.00\"\n{sip}\n\
             [[account.rule]]\nname = \"{name}-rule\"\nremote = \"{caller}/32\"\n\
             cld = {{ prefix = \"{cld}\" }}\nip_only = {ip_only}\n\n"
        );
    }
    t
}

/// `sipd run` in the relay namespace, on XDP, with the default `[auth]` algorithms.
fn start(net: &Net) -> Sbc {
    Sbc::start_provisioned(
        net,
        Plane::Xdp,
        &provisioning(&net.topo),
        &Settings::default(),
    )
}

/// The kernel's relay counters (packets it forwarded itself).
fn kernel_relayed(sbc: &Sbc) -> u64 {
    let st = sbc.kernel_stats();
    st["relay_redirect"] + st["relay_tx"]
}

fn stderr(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// 30 s of a 440 Hz tone, 8 kHz mono 16-bit PCM: what `aufile` reads (its sample rate must
/// be the configured source rate).
fn tone_wav(path: &Path) {
    const RATE: u32 = 8000;
    let samples: Vec<u8> = (0..RATE * 30)
        .flat_map(|i| {
            let t = f64::from(i) / f64::from(RATE);
            ((8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16).to_le_bytes()
        })
        .collect();
    let len = u32::try_from(samples.len()).expect("size");
    let mut w = Vec::with_capacity(44 + samples.len());
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + len).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes()); // PCM
    w.extend_from_slice(&1u16.to_le_bytes()); // mono
    w.extend_from_slice(&RATE.to_le_bytes());
    w.extend_from_slice(&(RATE * 2).to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&len.to_le_bytes());
    w.extend_from_slice(&samples);
    std::fs::write(path, w).expect("write tone.wav");
}

/// baresip's configuration directory: SIP and RTP on the caller's address, no sound device
/// (a WAV file as the source, `aubridge` as the player), G.711 only, no registration.
fn baresip_dir(topo: &Topology, sbc: &Sbc, user: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sbct{}-baresip-{user}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("baresip dir");
    let wav = dir.join("tone.wav");
    tone_wav(&wav);
    let config = format!(
        "poll_method\t\tepoll\n\
         sip_listen\t\t{caller}:{PHONE_SIP_PORT}\n\
         sip_trans_def\t\tudp\n\
         audio_player\t\taubridge,nil\n\
         audio_source\t\taufile,{wav}\n\
         audio_alert\t\taubridge,nil\n\
         ausrc_srate\t\t8000\nauplay_srate\t\t8000\n\
         ausrc_channels\t\t1\nauplay_channels\t\t1\n\
         rtp_ports\t\t{lo}-{hi}\n\
         module_path\t\t/usr/lib/baresip/modules\n\
         module\t\t\tg711.so\nmodule\t\t\taufile.so\nmodule\t\t\taubridge.so\n\
         module_app\t\taccount.so\nmodule_app\t\tmenu.so\n",
        caller = topo.caller_if.ip(false),
        wav = wav.display(),
        lo = PHONE_RTP.0,
        hi = PHONE_RTP.1,
    );
    std::fs::write(dir.join("config"), config).expect("baresip config");
    let accounts = format!(
        "<sip:{user}@{sbc}>;auth_pass={PASSWORD};regint=0;audio_codecs=PCMU\n",
        sbc = sbc.addr
    );
    std::fs::write(dir.join("accounts"), accounts).expect("baresip accounts");
    dir
}

/// Counts, in the caller namespace's firewall, UDP from the relay to baresip's RTP ports.
fn count_phone_rtp(topo: &Topology, sbc: &Sbc) {
    let rule = [
        "-I",
        "INPUT",
        "-p",
        "udp",
        "-s",
        &sbc.addr.to_string(),
        "--dport",
        &format!("{}:{}", PHONE_RTP.0, PHONE_RTP.1),
        "-j",
        "ACCEPT",
    ];
    let out = topo.caller.exec("iptables", rule).expect("iptables");
    assert!(out.status.success(), "iptables: {}", stderr(&out));
}

/// Packets the counter of [`count_phone_rtp`] has seen.
fn phone_rtp_counted(topo: &Topology) -> u64 {
    let out = topo
        .caller
        .exec("iptables", ["-nvxL", "INPUT"])
        .expect("iptables -L");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("dpts:"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn reset_phone_rtp(topo: &Topology) {
    let _ = topo.caller.exec("iptables", ["-Z", "INPUT"]);
}

/// What one softphone call showed at each end.
struct PhoneCall {
    /// baresip's own output.
    log: String,
    /// RTP the vendor got from the relay (baresip's audio).
    at_vendor: u64,
    /// RTP the vendor sent to the relay, and what reached baresip's ports from the relay.
    vendor_sent: u64,
    at_phone: u64,
    /// Where the vendor was told to send (sipd's SDP offer).
    vendor_target: SocketAddr,
}

/// baresip dials `cld` through sipd; the vendor answers, exchanges RTP and hangs up.
fn phone_call(
    topo: &Topology,
    sbc: &Sbc,
    vendor_rtp: &UdpSocket,
    user: &str,
    cld: &str,
) -> PhoneCall {
    let mut uas = Sipp::new(
        "uas_bye.xml",
        SocketAddr::new(topo.callee_if.ip(false), SIP_PORT),
    );
    uas.pause = HOLD;
    uas.var("rtp_port", &VENDOR_RTP_PORT.to_string());
    let mut uas = uas.spawn(&topo.callee).expect("spawn vendor");
    uas.wait_bound(&topo.callee).expect("vendor bound");
    reset_phone_rtp(topo);

    let dir = baresip_dir(topo, sbc, user);
    let log_path = dir.join("baresip.log");
    let logf = std::fs::File::create(&log_path).expect("baresip log");
    let mut cmd = topo.caller.command("baresip");
    cmd.arg("-f")
        .arg(&dir)
        .args(["-t", &(HOLD.as_secs() + 5).to_string()])
        .arg("-e")
        .arg(format!("/dial sip:{cld}@{}", sbc.sip()))
        .stdin(Stdio::null())
        .stdout(logf.try_clone().expect("log"))
        .stderr(logf);
    let mut phone = NsChild::spawn(&mut cmd).expect("spawn baresip");
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let vendor_target = uas
        .wait_media("MEDIA", Duration::from_secs(10))
        .unwrap_or_else(|e| {
            panic!(
                "the vendor got no INVITE ({e}):\nbaresip:\n{}\nsipd:\n{}",
                read_log(),
                tests::tail(&sbc.log_text(), 4000)
            )
        });
    let (vendor_sent, at_vendor) = exchange(vendor_rtp, vendor_target, sbc.addr);
    let outcome = uas.finish();
    // The vendor's BYE was answered; baresip says so, then it is stopped (its -t is only the
    // backstop).
    let end = Instant::now() + Duration::from_secs(10);
    while matches!(phone.try_wait(), Ok(None))
        && !read_log().contains("terminated")
        && Instant::now() < end
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = phone.stop(Duration::from_secs(2));
    let log = read_log();
    assert!(outcome.ok(), "vendor:\n{outcome}\nbaresip:\n{log}");
    assert_eq!(
        outcome.trace.requests_received("ACK").len(),
        1,
        "the 200 was ACKed:\n{outcome}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let at_phone = phone_rtp_counted(topo);
    eprintln!(
        "{user} → {cld}: vendor got {at_vendor} RTP packets from baresip; vendor sent \
         {vendor_sent}, baresip's ports got {at_phone} from the relay"
    );
    PhoneCall {
        log,
        at_vendor,
        vendor_sent,
        at_phone,
        vendor_target,
    }
}

/// For 2 s: the vendor sends G.711-sized RTP every 20 ms to `target` and counts what it
/// receives from `relay`. Returns (sent, received).
fn exchange(sock: &UdpSocket, target: SocketAddr, relay: IpAddr) -> (u64, u64) {
    sock.set_read_timeout(Some(Duration::from_millis(5)))
        .expect("timeout");
    let mut buf = Vec::new();
    let mut rx = [0u8; 2048];
    let (mut sent, mut got) = (0u64, 0u64);
    let start = Instant::now();
    let mut next = start;
    while start.elapsed() < Duration::from_secs(2) {
        if Instant::now() >= next {
            rtp::build_packet(7, sent, 160, &mut buf);
            if sock.send_to(&buf, target).is_ok() {
                sent += 1;
            }
            next += Duration::from_millis(20);
        }
        if let Ok((_, from)) = sock.recv_from(&mut rx)
            && from.ip() == relay
        {
            got += 1;
        }
    }
    (sent, got)
}

#[track_caller]
fn assert_media_relayed(call: &PhoneCall, sbc: &Sbc, what: &str) {
    assert_eq!(
        call.vendor_target.ip(),
        sbc.addr,
        "{what}: the vendor is told to send to the relay"
    );
    assert!(
        call.log.contains("Call established"),
        "{what}: baresip established the call:\n{}",
        call.log
    );
    assert!(
        call.log.contains(&format!("receiving from {}:", sbc.addr)),
        "{what}: baresip got its audio from the relay:\n{}",
        call.log
    );
    // 2 s of 50 packets/s each way; baresip sends for the whole exchange.
    assert!(
        call.at_vendor >= 80,
        "{what}: the vendor got {} RTP packets from baresip through the relay",
        call.at_vendor
    );
    assert!(
        call.at_phone + 5 >= call.vendor_sent && call.vendor_sent >= 90,
        "{what}: {} of the vendor's {} RTP packets reached baresip from the relay",
        call.at_phone,
        call.vendor_sent
    );
}

#[test]
fn baresip_digest_and_ip_calls() {
    require_privileged!();
    require_sipp!();
    require_baresip!();
    let _s = serial();
    let net = Net::new();
    let topo = &net.topo;
    let mut sbc = start(&net);
    count_phone_rtp(topo, &sbc);
    // The vendor's RTP socket (on VENDOR_RTP_PORT), as the harness bound it.
    let vendor_rtp = &net.vendor_rtp;

    // Digest: baresip answers sipd's 401 (MD5, the default) by itself.
    let digest = phone_call(topo, &sbc, vendor_rtp, "softphone", "3312345678");
    assert_media_relayed(&digest, &sbc, "digest call");
    // By source address: no challenge at all.
    let by_ip = phone_call(topo, &sbc, vendor_rtp, "pbx", "3412345678");
    assert_media_relayed(&by_ip, &sbc, "IP-authenticated call");

    // The kernel relayed (most of) it: both calls, both ways.
    let relayed = kernel_relayed(&sbc);
    let want = digest.at_vendor + digest.at_phone + by_ip.at_vendor + by_ip.at_phone;
    eprintln!("kernel relayed {relayed} packets; the ends counted {want}");
    assert!(
        relayed + 8 >= want,
        "kernel relayed {relayed} packets, the ends counted {want}"
    );

    let cdrs = sbc.cdrs();
    let ids = sbc.account_ids();
    assert_eq!(cdrs.len(), 2, "one CDR per call: {cdrs:#?}");
    for (cdr, account, cld) in [
        (&cdrs[0], "softphone", "3312345678"),
        (&cdrs[1], "pbx", "3412345678"),
    ] {
        assert_eq!(cdr["result_code"], Value::from(200), "{cdr:#}");
        assert_eq!(cdr["reason"], Value::from("callee hung up"), "{cdr:#}");
        assert_eq!(cdr["callee"], Value::from(cld), "{cdr:#}");
        assert_eq!(cdr["account_id"], Value::from(ids[account]), "{cdr:#}");
        assert!(cdr["connection_id"].is_number(), "{cdr:#}");
        let secs = cdr["duration_secs"].as_u64().unwrap_or(0);
        assert!((2..=6).contains(&secs), "duration {secs}: {cdr:#}");
    }
}

#[test]
fn sha256_account_refuses_an_md5_answer() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let net = Net::new();
    let topo = &net.topo;
    let mut sbc = start(&net);
    // sipp answers only MD5: the account requires SHA-256, so its MD5 answer (with the right
    // password) is challenged again, with SHA-256 alone; sipp gives up there.
    let mut uas = Sipp::new(
        "uas.xml",
        SocketAddr::new(topo.callee_if.ip(false), SIP_PORT),
    );
    uas.var("rtp_port", &VENDOR_RTP_PORT.to_string());
    uas.deadline = Duration::from_secs(5);
    let mut uas = uas.spawn(&topo.callee).expect("spawn vendor");
    uas.wait_bound(&topo.callee).expect("vendor bound");
    let mut c = Sipp::uac(
        "uac.xml",
        SocketAddr::new(topo.caller_if.ip(false), SIP_PORT),
        sbc.sip(),
        "441234567",
        "3512345678",
        VENDOR_RTP_PORT,
    );
    c.auth = Some(("strict".into(), PASSWORD.into()));
    let uac = c.spawn(&topo.caller).expect("uac").finish();
    uac.assert_ok();
    let challenges: Vec<Vec<String>> = uac
        .trace
        .finals("INVITE")
        .iter()
        .map(|m| {
            assert_eq!(m.status(), Some(401), "only 401s:\n{uac}");
            m.headers("WWW-Authenticate")
                .iter()
                .map(|h| h.to_string())
                .collect()
        })
        .collect();
    assert_eq!(challenges.len(), 2, "challenged twice:\n{uac}");
    let algorithms = |c: &[String]| -> Vec<String> {
        c.iter()
            .map(|h| {
                h.split("algorithm=")
                    .nth(1)
                    .and_then(|a| a.split(',').next())
                    .unwrap_or("")
                    .trim()
                    .to_string()
            })
            .collect()
    };
    assert_eq!(
        algorithms(&challenges[0]),
        ["MD5"],
        "first: the default [auth]"
    );
    assert_eq!(
        algorithms(&challenges[1]),
        ["SHA-256"],
        "after the MD5 answer: the account's SHA-256 alone"
    );
    // Nothing reached the vendor.
    let uas = uas.finish();
    assert!(uas.trace.requests_received("INVITE").is_empty(), "{uas}");
    let cdrs = sbc.cdrs();
    assert!(cdrs.iter().all(|c| c["result_code"] != 200), "{cdrs:#?}");
}
