//! `sbc-tui` end to end (issue 14): the real console binary in a `tmux` pane, against a real
//! `sipd run` (generic XDP) in the relay namespace, with a sipp call held up between the
//! carrier and vendor namespaces.
//!
//! The admin made by `sipd init` logs in inside the console with a TOTP code computed from the
//! secret `init` printed; the calls screen shows the held call; its ladder shows INVITE, 100,
//! 200 and ACK (from `/api/calls/{id}/messages`); `K` and `y` hang it up:
//! the carrier gets the BYE and the CDR says a staff member hung up. Then the bans screen bans
//! an attacker's address (`b`, the form, `y`): the kernel drops its INVITEs (XDP's
//! `drop_banned`); `u` and `y` unban it and it is answered again.
//!
//! Keys go in with `tmux send-keys`, the screen comes back with `tmux capture-pane`; every
//! wait polls for text on the screen with a generous deadline. The tmux server has its own
//! socket (`-L`) and is stopped by its PID; the namespaces and sipd are the harness's.

mod sbc;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sbc::*;
use tests::sip::RawSip;
use tests::{require_privileged, require_sipp, tail};

const ADMIN_PW: &str = "Correct-Horse-Battery-9";
/// Where the attacker sends from (a port nothing else on the carrier's hosts uses).
const ATTACK_PORT: u16 = 41_500;

/// A tmux server of this test's own, stopped by its PID on drop.
struct Tmux {
    socket: String,
    pid: Option<libc::pid_t>,
}

impl Tmux {
    /// A detached `cols`×`rows` session running `command` (a shell line).
    fn start(cols: u16, rows: u16, command: &str) -> Tmux {
        let socket = format!("sbct-tui-{}", std::process::id());
        let mut t = Tmux { socket, pid: None };
        let st = t
            .cmd()
            .args(["-f", "/dev/null", "new-session", "-d", "-s", "tui"])
            .args(["-x", &cols.to_string(), "-y", &rows.to_string()])
            .arg(command)
            .status()
            .expect("run tmux");
        assert!(st.success(), "tmux new-session: {st}");
        let pid = t.out(&["display-message", "-p", "-t", "tui", "#{pid}"]);
        t.pid = pid.trim().parse().ok();
        assert!(t.pid.is_some(), "tmux server pid: {pid:?}");
        // The pane stays after the console exits, so a crash is on screen for the report.
        t.out(&["set-option", "-t", "tui", "remain-on-exit", "on"]);
        t
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]).stdin(Stdio::null());
        c
    }

    fn out(&self, args: &[&str]) -> String {
        let o = self.cmd().args(args).output().expect("run tmux");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Keys by tmux's names (`Enter`, `Tab`, `Escape`) or single characters.
    fn keys(&self, keys: &[&str]) {
        for k in keys {
            let mut args = vec!["send-keys", "-t", "tui"];
            // A lone character is sent as itself (`-l`): tmux would read "K" as a key name.
            if k.chars().count() == 1 {
                args.push("-l");
            }
            args.push(k);
            self.out(&args);
            // Apart, so the console sees keys, not a paste (a lone Esc must stay Esc).
            std::thread::sleep(Duration::from_millis(60));
        }
    }

    /// Types `text` literally.
    fn text(&self, text: &str) {
        self.out(&["send-keys", "-t", "tui", "-l", text]);
        std::thread::sleep(Duration::from_millis(60));
    }

    fn screen(&self) -> String {
        self.out(&["capture-pane", "-p", "-t", "tui"])
    }

    /// The screen once `done` holds, within `secs` (else the test fails with the screen).
    #[track_caller]
    fn wait(&self, secs: u64, what: &str, done: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.screen();
            if done(&s) {
                return s;
            }
            assert!(
                Instant::now() < end,
                "not on the console after {secs} s: {what}\n{s}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            if std::thread::panicking() {
                eprintln!("console at the failure:\n{}", self.screen());
            }
            // SAFETY: kill(2) on the tmux server this test started (its PID, asked of it).
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}

/// Where the time goes (a report for people, never a check).
fn phase(started: Instant, name: &str) {
    eprintln!("{:>6.1?}  {name}", started.elapsed());
}

/// Whether a row of the table on screen (inside its border, not the notice line under it)
/// holds `text`.
fn listed(screen: &str, text: &str) -> bool {
    screen
        .lines()
        .any(|l| l.starts_with('│') && l.contains(text))
}

/// The token the console saved where `sbcctl` keeps it.
fn saved_token(config: &Path) -> String {
    let text = std::fs::read_to_string(config.join("sbcctl").join("token")).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    v["token"].as_str().unwrap_or_default().to_owned()
}

/// An INVITE from the attacker: whether anything came back within `wait`.
fn answered(from: &RawSip, n: u32, wait: Duration) -> bool {
    let l = from.local();
    let r = from.to;
    let tag = format!("tui{n}");
    let msg = format!(
        "INVITE sip:{CLD}@{r} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bK-{tag}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{CLI}@{ip}>;tag={tag}\r\nTo: <sip:{CLD}@{r}>\r\n\
         Call-ID: {tag}@{ip}\r\nCSeq: 1 INVITE\r\nContact: <sip:{CLI}@{l}>\r\n\
         Content-Length: 0\r\n\r\n",
        ip = l.ip()
    );
    from.send(msg.as_bytes()).expect("send");
    !from.collect(wait).is_empty()
}

#[test]
fn console_logs_in_hangs_up_a_call_and_bans_an_address() {
    require_privileged!();
    require_sipp!();
    if Command::new("tmux").arg("-V").output().is_err() {
        assert!(!tests::in_ci(), "tmux is not installed (cargo xtask setup)");
        eprintln!("SKIPPED: tmux not installed");
        return;
    }
    let _s = serial();
    let started = Instant::now();
    let console: PathBuf = tests::bins::cargo_bin("tui", "sbc-tui");
    phase(started, "binaries built");
    let net = Net::new();
    phase(started, "namespaces up");
    let mut sbc = Sbc::start_with(
        &net,
        Plane::Xdp,
        &Prov::default(),
        &Settings {
            // No RTP flows in this call: it must stay up while the console looks at it.
            media_timeout_secs: 600,
            management: "metrics_public = true\n".into(),
            admin_password: Some(ADMIN_PW),
            ..Settings::default()
        },
    );
    phase(started, "sipd ready");
    let secret = sbc.admin_totp.clone().expect("the admin's TOTP secret");

    // The console, in the relay namespace (the API listens on its loopback), 120×40.
    let config = sbc.dir.join("console-config");
    std::fs::create_dir_all(&config).unwrap();
    let ca = sbc.dir.join("data").join("mgmt-tls.crt");
    let line = format!(
        "env -u SBC_TOKEN -u SBC_URL XDG_CONFIG_HOME={cfg} HOME={cfg} TERM=xterm-256color \
         nsenter --net=/run/netns/{ns} -- {bin} --url https://127.0.0.1:8443 --ca {ca}",
        cfg = config.display(),
        ns = sbc.relay_ns,
        bin = console.display(),
        ca = ca.display(),
    );
    let tmux = Tmux::start(120, 40, &line);

    phase(started, "login with password and TOTP");
    // ---- login with password and TOTP ------------------------------------------------------
    tmux.wait(20, "the login form", |s| s.contains("TOTP code"));
    tmux.text("admin");
    tmux.keys(&["Tab"]);
    tmux.text(ADMIN_PW);
    tmux.keys(&["Tab"]);
    tmux.text(&sbc::totp_now(&secret));
    tmux.keys(&["Enter"]);
    // Argon2 takes a moment: the dashboard shows the data plane once logged in.
    tmux.wait(30, "the dashboard", |s| s.contains("mode xdp"));
    let token = saved_token(&config);
    assert!(!token.is_empty(), "the session is saved for sbcctl");
    tmux.wait(10, "the live mark", |s| s.contains("● live"));

    phase(started, "a held call on the calls screen");
    // ---- a held call on the calls screen, its ladder, K hang-up ----------------------------
    let uas = net.uas("uas.xml", SIP_PORT, 1, Duration::ZERO);
    let mut hold = net.uac("uac_recv_bye.xml", sbc.sip(), Duration::ZERO);
    hold.deadline = Duration::from_secs(120);
    let mut uac = hold.spawn(&net.topo.caller).expect("spawn the carrier");
    uac.wait_media("MEDIA", Duration::from_secs(15))
        .expect("the call is answered");
    tmux.keys(&["2"]);
    // Opening the screen asks for the calls; without the event stream a later change
    // shows at the next poll (3 s).
    let calls = tmux.wait(40, "the held call", |s| {
        s.contains(CLI) && s.contains("answered")
    });
    assert!(calls.contains(CLD), "{calls}");
    tmux.keys(&["Enter"]);
    let l = tmux.wait(15, "the ladder", |s| {
        ["INVITE", "100 Trying", "200 OK", "ACK"]
            .iter()
            .all(|m| s.contains(m))
    });
    assert!(l.contains("caller") && l.contains("vendor"), "{l}");
    tmux.keys(&["Escape"]);
    tmux.wait(10, "back on the calls", |s| s.contains("Live calls"));
    tmux.keys(&["K"]);
    tmux.wait(10, "the hang-up question", |s| s.contains("Hang up call #"));
    tmux.keys(&["y"]);
    let out = uac.finish();
    assert!(
        out.trace.requests_received("BYE").len() == 1,
        "the carrier got the BYE: {out}\n{}",
        tail(&sbc.log_text(), 3000)
    );
    let _ = uas.finish();
    tmux.wait(40, "the call gone", |s| !listed(s, CLI));

    phase(started, "ban an attacker from the bans screen");
    // ---- ban an attacker from the bans screen; the kernel drops it; unban -----------------
    let c = net.topo.caller_if.ipv4.octets();
    let ip = Ipv4Addr::new(c[0], c[1], c[2], 77);
    net.topo
        .caller
        .ip([
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            &net.topo.caller_if.dev,
        ])
        .expect("attacker address");
    let attacker = RawSip::bind_in(
        &net.topo.caller,
        SocketAddr::new(ip.into(), ATTACK_PORT),
        sbc.sip(),
    )
    .expect("attacker socket");
    assert!(
        answered(&attacker, 0, Duration::from_secs(5)),
        "before the ban the attacker is answered"
    );
    tmux.keys(&["3"]);
    tmux.wait(10, "the bans screen", |s| s.contains("┌ Bans"));
    tmux.keys(&["b"]);
    tmux.wait(10, "the ban form", |s| s.contains("duration"));
    tmux.text(&ip.to_string());
    tmux.keys(&["Tab"]);
    tmux.text("1h");
    tmux.keys(&["Tab"]);
    tmux.text("e2e");
    tmux.keys(&["Enter"]);
    tmux.wait(10, "the ban question", |s| s.contains(&format!("Ban {ip}")));
    tmux.keys(&["y"]);
    let host = format!("{ip}/32");
    tmux.wait(15, "the ban listed", |s| listed(s, &host));
    let before = sbc.kernel_stats()["drop_banned"];
    let mut n = 1;
    let end = Instant::now() + Duration::from_secs(10);
    while answered(&attacker, n, Duration::from_millis(800)) {
        n += 1;
        assert!(Instant::now() < end, "still answered after the ban");
    }
    let after = sbc.kernel_stats()["drop_banned"];
    assert!(after > before, "the kernel dropped it: {before} → {after}");
    tmux.keys(&["g", "u"]);
    tmux.wait(10, "the unban question", |s| {
        s.contains(&format!("Unban {host}"))
    });
    tmux.keys(&["y"]);
    tmux.wait(15, "the ban gone", |s| !listed(s, &host));
    let end = Instant::now() + Duration::from_secs(10);
    while !answered(&attacker, n, Duration::from_millis(800)) {
        n += 1;
        assert!(Instant::now() < end, "still dropped after the unban");
    }

    phase(started, "quit");
    // ---- quit; the CDR says who hung up ---------------------------------------------------
    tmux.keys(&["q"]);
    drop(tmux);
    let cdrs = sbc.cdrs();
    assert!(
        cdrs.iter().any(|c| c["hung_up_by"] == "staff:admin"),
        "the CDR names the staff member who hung up: {cdrs:#?}"
    );
    eprintln!("sbc-tui end to end in {:.1?}", started.elapsed());
}
