//! `cargo build` with the one step cargo does not show: relay-user's build script building the
//! XDP program (a nested nightly cargo for bpfel; minutes on a fresh clone, silent meanwhile).

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::util;

/// A build script that is still running after this long is building the XDP program (a fresh
/// one reports within milliseconds).
const QUIET: Duration = Duration::from_secs(1);

/// What the build's JSON messages tell us.
#[derive(Debug, PartialEq)]
enum Event {
    /// relay-user's build script is compiled (or fresh): it runs next.
    ScriptReady,
    /// relay-user's build script has run (or was fresh).
    ScriptDone,
    /// A binary was built: its target name and path.
    Exe(String, PathBuf),
}

fn classify(line: &str) -> Option<Event> {
    let msg: serde_json::Value = serde_json::from_str(line).ok()?;
    let relay_user = |manifest: &str| manifest.ends_with("/relay-user/Cargo.toml");
    match msg["reason"].as_str()? {
        "compiler-artifact" => {
            let target = &msg["target"];
            if let Some(exe) = msg["executable"].as_str() {
                let name = target["name"].as_str().unwrap_or_default();
                return Some(Event::Exe(name.to_owned(), PathBuf::from(exe)));
            }
            let script = target["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "custom-build"));
            (script && relay_user(msg["manifest_path"].as_str()?)).then_some(Event::ScriptReady)
        }
        "build-script-executed" => msg["out_dir"]
            .as_str()?
            .contains("/build/relay-user-")
            .then_some(Event::ScriptDone),
        _ => None,
    }
}

/// Runs `cargo build ARGS` (diagnostics rendered on stderr as usual) and returns the binaries
/// it built as (target name, path). When relay-user's build script runs for longer than a
/// moment, prints that the XDP program is being built, and how long it took.
pub fn cargo_build(args: &[&str]) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut cmd: Command = util::cargo();
    cmd.arg("build")
        .arg("--message-format=json-render-diagnostics")
        .args(args)
        .stdout(Stdio::piped());
    let shown = util::show(&cmd);
    println!("$ {shown}");
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{shown}`"))?;
    let stdout = child.stdout.take().context("cargo's stdout")?;
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(ev) = classify(&line)
                && tx.send(ev).is_err()
            {
                break;
            }
        }
    });

    let mut exes = Vec::new();
    // When the script became ready to run, and whether we said it is building.
    let mut script: Option<(Instant, bool)> = None;
    loop {
        let wait = match script {
            Some((since, false)) => QUIET.saturating_sub(since.elapsed()),
            _ => Duration::from_secs(3600),
        };
        match rx.recv_timeout(wait) {
            Ok(Event::ScriptReady) => script = Some((Instant::now(), false)),
            Ok(Event::ScriptDone) => {
                if let Some((since, true)) = script.take() {
                    println!("build: XDP program built in {}s", since.elapsed().as_secs());
                }
            }
            Ok(Event::Exe(name, path)) => exes.push((name, path)),
            Err(RecvTimeoutError::Timeout) => {
                if let Some((_, said @ false)) = &mut script {
                    println!(
                        "build: building the XDP program (eBPF, nightly; relay-user's build \
                         script, a few minutes the first time)…"
                    );
                    *said = true;
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = reader.join();
    let status = child.wait()?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(exes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_user_build_script_and_binaries_are_recognised() {
        let ready = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/relay-user#0.1.0","manifest_path":"/w/relay-user/Cargo.toml","target":{"kind":["custom-build"],"name":"build-script-build"},"executable":null,"fresh":true}"#;
        assert_eq!(classify(ready), Some(Event::ScriptReady));
        let other = ready.replace("/relay-user/", "/sipd/");
        assert_eq!(classify(&other), None);
        let done = r#"{"reason":"build-script-executed","package_id":"path+file:///w/relay-user#0.1.0","out_dir":"/w/target/debug/build/relay-user-0123abcd/out"}"#;
        assert_eq!(classify(done), Some(Event::ScriptDone));
        assert_eq!(classify(&done.replace("relay-user-", "sipd-")), None);
        let exe = r#"{"reason":"compiler-artifact","manifest_path":"/w/sipd/Cargo.toml","target":{"kind":["bin"],"name":"sipd"},"executable":"/w/target/debug/sipd"}"#;
        assert_eq!(
            classify(exe),
            Some(Event::Exe("sipd".into(), "/w/target/debug/sipd".into()))
        );
        assert_eq!(classify("   Compiling sipd v0.1.0"), None);
    }
}
