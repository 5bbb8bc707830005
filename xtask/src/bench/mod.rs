//! `cargo xtask bench <name> [args...]`. Benchmarks write their results under `target/bench/`.

mod relay;

/// Names `cargo xtask bench` accepts.
pub const NAMES: &[&str] = &["relay"];

pub fn run(name: &str, args: &[String]) -> anyhow::Result<()> {
    match name {
        "relay" => relay::run(args),
        other => anyhow::bail!("unknown benchmark {other:?}; known: {}", NAMES.join(", ")),
    }
}
