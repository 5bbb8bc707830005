//! `cargo xtask run`: builds and runs the appliance's processes on the design's defaults and
//! supervises them. Ctrl-C (or SIGTERM) stops them all; if one exits, the others are stopped.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::util;

/// One process of the appliance.
struct Service {
    name: &'static str,
    package: &'static str,
    bin: &'static str,
    /// Leading arguments (a subcommand), always given.
    command: &'static [&'static str],
    /// Default flags as (flag, value); a flag the user passes after `--` replaces its default.
    defaults: &'static [(&'static str, &'static str)],
    /// Whether the arguments after `--` go to this process.
    takes_extra_args: bool,
}

/// The appliance: sipd is one process (SIP, the data plane and the media relay). Its
/// settings come from `sbc.toml` in the repository root when there is one, else the design's
/// defaults (SIP on 127.0.0.1:5060, relay ports 30000-39999, XDP on lo where permitted).
/// relayd is for deployments that keep Kamailio and only replace rtpengine; run it by hand.
const SERVICES: &[Service] = &[Service {
    name: "sipd",
    package: "sipd",
    bin: "sipd",
    command: &["run"],
    defaults: &[],
    takes_extra_args: true,
}];

const GRACE: Duration = Duration::from_secs(5);

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub fn run(extra: &[String], release: bool) -> anyhow::Result<()> {
    let bins = build(release)?;

    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }

    let mut running: Vec<(&Service, Child)> = Vec::new();
    for (svc, exe) in SERVICES.iter().zip(&bins) {
        let mut cmd = Command::new(exe);
        cmd.current_dir(util::root())
            .args(args_for(svc, extra))
            .stdin(Stdio::null());
        // SAFETY: prctl is async-signal-safe; it makes the child get SIGTERM if we die.
        unsafe {
            use std::os::unix::process::CommandExt as _;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        println!("run: starting {}: {}", svc.name, util::show(&cmd));
        match cmd.spawn() {
            Ok(child) => running.push((svc, child)),
            Err(e) => {
                stop_all(&mut running);
                return Err(e).with_context(|| format!("starting {}", svc.name));
            }
        }
    }
    println!(
        "run: {} running; Ctrl-C stops {}",
        SERVICES
            .iter()
            .map(|s| s.name)
            .collect::<Vec<_>>()
            .join(", "),
        if running.len() == 1 { "it" } else { "them" }
    );

    loop {
        if STOP.load(Ordering::SeqCst) {
            println!("run: stopping");
            stop_all(&mut running);
            return Ok(());
        }
        for i in 0..running.len() {
            if let Some(status) = running[i].1.try_wait()? {
                let name = running[i].0.name;
                running.remove(i);
                if STOP.load(Ordering::SeqCst) {
                    break;
                }
                stop_all(&mut running);
                bail!("{name} exited ({status}); stopped the rest");
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The service's arguments: its defaults, minus those the user overrides, then the user's.
fn args_for(svc: &Service, extra: &[String]) -> Vec<String> {
    let extra: &[String] = if svc.takes_extra_args { extra } else { &[] };
    let overridden = |flag: &str| {
        extra
            .iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
    };
    let mut args: Vec<String> = svc.command.iter().map(|a| a.to_string()).collect();
    for (flag, value) in svc.defaults {
        if !overridden(flag) {
            args.push(flag.to_string());
            args.push(value.to_string());
        }
    }
    args.extend(extra.iter().cloned());
    args
}

/// Builds every service's binary and returns their paths, in `SERVICES` order.
fn build(release: bool) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut args = Vec::new();
    if release {
        args.push("--release");
    }
    for svc in SERVICES {
        args.extend(["-p", svc.package, "--bin", svc.bin]);
    }
    let built = crate::build::cargo_build(&args)?;
    SERVICES
        .iter()
        .map(|s| {
            built
                .iter()
                .find(|(name, _)| name == s.bin)
                .map(|(_, path)| path.clone())
                .with_context(|| format!("cargo built no {} binary", s.bin))
        })
        .collect()
}

/// SIGTERM to each, up to `GRACE` to exit, then SIGKILL. Children only, by PID.
fn stop_all(running: &mut Vec<(&Service, Child)>) {
    for (_, child) in running.iter() {
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    }
    let deadline = Instant::now() + GRACE;
    while !running.is_empty() && Instant::now() < deadline {
        running.retain_mut(|(svc, child)| match child.try_wait() {
            Ok(Some(status)) => {
                println!("run: {} exited ({status})", svc.name);
                false
            }
            _ => true,
        });
        std::thread::sleep(Duration::from_millis(50));
    }
    for (svc, child) in running.iter_mut() {
        eprintln!("run: {} did not stop in {GRACE:?}, killing it", svc.name);
        let _ = child.kill();
        let _ = child.wait();
    }
    running.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_flags_replace_defaults() {
        let svc = Service {
            name: "relayd",
            package: "relay-user",
            bin: "relayd",
            command: &[],
            defaults: &[
                ("--interface", "lo"),
                ("--dataplane", "auto"),
                ("--ng-listen", "x"),
            ],
            takes_extra_args: true,
        };
        let args = args_for(&svc, &["--dataplane=userspace".into(), "-v".into()]);
        assert!(!args.iter().any(|a| a == "auto"));
        assert!(args.ends_with(&["--dataplane=userspace".into(), "-v".into()]));
        let args = args_for(&svc, &["--interface".into(), "eth0".into()]);
        assert_eq!(args.iter().filter(|a| *a == "--interface").count(), 1);
        assert!(args.contains(&"--ng-listen".to_string()));
    }

    #[test]
    fn sipd_gets_its_subcommand_then_the_users_flags() {
        let args = args_for(&SERVICES[0], &["-c".into(), "lab.toml".into()]);
        assert_eq!(args, vec!["run", "-c", "lab.toml"]);
    }
}
