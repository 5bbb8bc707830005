//! `cargo xtask bench relay`.

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("bench relay: not implemented yet")
}
