//! sipd as a service: the systemd unit in `dist/systemd/sipd.service` is valid
//! (`systemd-analyze verify`), and `sipd run` works as a non-root user holding exactly the
//! capabilities the unit grants (read from the unit, applied with `setpriv`): XDP attached in
//! the relay namespace, a sipp call answered with its media relayed by the kernel, its CDR
//! written to a store that user owns.

mod sbc;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use sbc::*;
use tests::{require_privileged, require_sipp};

/// A user and group no real account uses; setpriv needs no passwd entry.
const UID: u32 = 64_123;
const GID: u32 = 64_123;

fn unit_path() -> PathBuf {
    tests::bins::workspace_root().join("dist/systemd/sipd.service")
}

fn unit_text() -> String {
    std::fs::read_to_string(unit_path()).expect("read dist/systemd/sipd.service")
}

/// The values of `key=` in the unit's `[Service]` section, split on whitespace.
fn unit_values(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .flat_map(|v| v.split_whitespace().map(str::to_string))
        .collect()
}

/// The kernel's number of a capability (linux/capability.h), for the masks in
/// /proc/PID/status.
fn cap_bit(name: &str) -> u32 {
    match name {
        "CAP_NET_BIND_SERVICE" => 10,
        "CAP_NET_ADMIN" => 12,
        "CAP_NET_RAW" => 13,
        "CAP_SYS_ADMIN" => 21,
        "CAP_SYS_RESOURCE" => 24,
        "CAP_PERFMON" => 38,
        "CAP_BPF" => 39,
        other => panic!("capability {other} not known to this test"),
    }
}

/// The unit's promises this test and the README rely on.
#[test]
fn unit_grants_only_the_documented_capabilities() {
    let text = unit_text();
    let ambient = unit_values(&text, "AmbientCapabilities");
    let bounding = unit_values(&text, "CapabilityBoundingSet");
    assert_eq!(
        ambient,
        [
            "CAP_BPF",
            "CAP_NET_ADMIN",
            "CAP_NET_BIND_SERVICE",
            "CAP_PERFMON"
        ],
        "{text}"
    );
    assert_eq!(ambient, bounding, "ambient set = bounding set");
    assert_eq!(unit_values(&text, "Restart"), ["always"]);
    assert_eq!(unit_values(&text, "User"), ["sipd"]);
    assert_eq!(unit_values(&text, "StateDirectory"), ["sipd"]);
    assert!(!unit_values(&text, "LimitNOFILE").is_empty());
    assert_eq!(unit_values(&text, "NoNewPrivileges"), ["yes"]);
}

/// `systemd-analyze verify` accepts the unit: no error and nothing to say. Its ExecStart
/// names the installed `/usr/local/bin/sipd`, which verify requires to exist; the copy checked
/// here names this build's sipd instead, the one thing changed.
#[test]
fn unit_passes_systemd_analyze_verify() {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("systemd-analyze").is_file()));
    if !on_path {
        assert!(
            !tests::in_ci(),
            "systemd-analyze is not installed (apt-get install systemd; `cargo xtask setup`)"
        );
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"SKIPPED unit_passes_systemd_analyze_verify: systemd-analyze not installed\n",
        );
        return;
    }
    let text = unit_text();
    assert!(text.contains("ExecStart=/usr/local/bin/sipd "), "{text}");
    let dir = std::env::temp_dir().join(format!("sipd-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let unit = dir.join("sipd.service");
    let sipd = sipd_bin();
    std::fs::write(
        &unit,
        text.replace("/usr/local/bin/sipd", &sipd.display().to_string()),
    )
    .expect("write the unit");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .current_dir(&dir)
        .output()
        .expect("run systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{said}"
    );
    // A misspelt key or value is only a warning, with exit status 0: none allowed.
    assert!(
        said.trim().is_empty(),
        "systemd-analyze verify warns:\n{said}"
    );
}

/// One line of /proc/PID/status, e.g. `CapEff`.
fn status_field(pid: u32, key: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

#[test]
fn sipd_runs_as_a_user_with_the_units_capabilities_only() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let caps = unit_values(&unit_text(), "AmbientCapabilities");
    let net = Net::new();
    let set = Settings {
        run_as: Some(RunAs {
            uid: UID,
            gid: GID,
            caps: caps.clone(),
            root_owned_pin: false,
        }),
        ..Settings::default()
    };
    let mut sbc = Sbc::start_with(&net, Plane::Xdp, &Prov::default(), &set);

    let pid = sbc.pid().expect("sipd runs");
    let uids = status_field(pid, "Uid");
    assert!(
        uids.split_whitespace().all(|u| u == UID.to_string()),
        "sipd runs as {UID}: Uid {uids}"
    );
    let mask: u64 = caps.iter().map(|c| 1u64 << cap_bit(c)).sum();
    for key in ["CapEff", "CapPrm", "CapBnd"] {
        let have = u64::from_str_radix(&status_field(pid, key), 16).expect("cap mask");
        assert_eq!(have, mask, "{key} {have:#x}, the unit grants {caps:?}");
    }
    let log = sbc.log_text();
    assert!(log.contains("xdp-skb") || log.contains("xdp skb"), "{log}");

    let mut uas = net.uas("uas.xml", SIP_PORT, 1, Duration::from_millis(100));
    let mut uac = net
        .uac("uac.xml", sbc.sip(), Duration::from_millis(2500))
        .spawn(&net.topo.caller)
        .expect("uac");
    let m = net.media(&mut uac, &mut uas, "MEDIA");
    let (uac, uas) = (uac.finish(), uas.finish());
    uac.assert_ok();
    uas.assert_ok();
    assert_eq!(
        uac.trace.final_counts("INVITE").get(&200),
        Some(&1),
        "{uac}"
    );
    assert_eq!(m.at_carrier.ip(), sbc.addr, "carrier sends to the relay");
    assert_eq!(m.at_vendor.ip(), sbc.addr, "vendor sends to the relay");
    m.check.assert_lossless();
    // The kernel relayed it (the first packet each way may take the slow path).
    let st = sbc.kernel_stats();
    let kernel = st["relay_redirect"] + st["relay_tx"];
    assert!(kernel + 4 >= 2 * PACKETS, "kernel relayed {kernel}: {st:?}");

    // The store belongs to the user, and the CDR is in it.
    let data = sbc.dir.join("data");
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&data).expect("data"));
    assert_eq!(owner, UID, "data dir owned by sipd's user");
    let log = sbc.log_text();
    let cdrs = sbc.cdrs();
    assert_eq!(cdrs.len(), 1, "{cdrs:#?}\n{log}");
    assert_eq!(cdrs[0]["result_code"], 200, "{:#}", cdrs[0]);
}

/// `sipd run` as the service user with `caps` (and a pin of root's left when `root_pin`),
/// which must refuse to start: the instance and its log.
fn refused_start(net: &Net, caps: Vec<String>, root_pin: bool) -> (Sbc, String) {
    let set = Settings {
        run_as: Some(RunAs {
            uid: UID,
            gid: GID,
            caps,
            root_owned_pin: root_pin,
        }),
        ..Settings::default()
    };
    let mut sbc = Sbc::spawn_with(net, Plane::Xdp, &Prov::default(), &set);
    let st = sbc
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("sipd still runs:\n{}", sbc.log_text()));
    let log = sbc.log_text();
    assert!(!st.success(), "{st}\n{log}");
    (sbc, log)
}

/// The unit's set without CAP_PERFMON: the kernel would verify the XDP program as an
/// unprivileged one and refuse it ("R0 pointer -= pointer prohibited", a page of verifier
/// log ending in `Permission denied`). sipd refuses to start first, with one line naming the
/// capability and what it is for, and writes no pins.
#[test]
fn a_missing_capability_is_named() {
    require_privileged!();
    let _s = serial();
    let caps: Vec<String> = unit_values(&unit_text(), "AmbientCapabilities")
        .into_iter()
        .filter(|c| c != "CAP_PERFMON")
        .collect();
    let net = Net::new();
    let (sbc, log) = refused_start(&net, caps, false);
    assert!(
        log.contains("missing capability CAP_PERFMON"),
        "the capability is not named:\n{log}"
    );
    assert!(!log.contains("Verifier output"), "{log}");
    let pins = PathBuf::from("/sys/fs/bpf").join(&sbc.instance);
    let left = std::fs::read_dir(&pins).map_or(0, Iterator::count);
    assert_eq!(left, 0, "pins written in {}", pins.display());
}

/// A pin a run as root left in the instance's directory (mode 0600, root's): sipd as the
/// service user would fail on it with a bare `EACCES` from the loader; it refuses to start
/// naming the pin, its owner and the `chown -R` the unit's ExecStartPre runs.
#[test]
fn a_pin_left_by_root_is_named() {
    require_privileged!();
    let _s = serial();
    let caps = unit_values(&unit_text(), "AmbientCapabilities");
    let net = Net::new();
    let (_sbc, log) = refused_start(&net, caps, true);
    assert!(log.contains("/SERVICES: belongs to uid 0"), "{log}");
    assert!(
        log.contains(&format!("chown -R {UID}: /sys/fs/bpf/")),
        "{log}"
    );
}
