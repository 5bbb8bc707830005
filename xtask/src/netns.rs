//! `cargo xtask netns up|down|status`: the tests' three-namespace topology, kept standing for
//! manual experiments under fixed names.

use ::tests::netns::{Netns, Topology, TopologyOptions};

/// Namespaces are `sbc-caller`, `sbc-relay`, `sbc-callee`.
const NAME: &str = "sbc";
/// Addresses 10.200.{1,2}.0/24 and fd00:c8:{1,2}::/64.
const ID: u8 = 200;

fn names() -> [String; 3] {
    ["caller", "relay", "callee"].map(|role| format!("{NAME}-{role}"))
}

pub fn up(gro: bool, no_forwarding: bool) -> anyhow::Result<()> {
    let names = names();
    if names.iter().any(|n| Netns::exists(n)) {
        println!("netns: already up (`cargo xtask netns down` first to rebuild)");
        return status();
    }
    let topo = Topology::three(TopologyOptions {
        gro: gro.then_some(true),
        forwarding: !no_forwarding,
        name: Some(NAME.into()),
        id: Some(ID),
    })?;
    for (ns, ep) in [
        (&topo.caller, &topo.caller_if),
        (&topo.relay, &topo.relay_caller_if),
        (&topo.relay, &topo.relay_callee_if),
        (&topo.callee, &topo.callee_if),
    ] {
        println!(
            "  {:<11} {:<10} ifindex {:<3} {}  {}/24  {}/64",
            ns.name(),
            ep.dev,
            ep.ifindex,
            ep.mac_string(),
            ep.ipv4,
            ep.ipv6
        );
    }
    let callee = topo.callee_if.ipv4;
    topo.keep();
    println!("netns: up. Try: ip netns exec {NAME}-caller ping -c 2 {callee}");
    println!("netns: `cargo xtask netns down` removes it");
    Ok(())
}

pub fn down() -> anyhow::Result<()> {
    let mut removed = 0;
    for n in names() {
        if Netns::exists(&n) {
            Netns::delete(&n)?;
            removed += 1;
        }
    }
    // Also namespaces of test runs that were killed before they could clean up.
    ::tests::netns::reap_stale();
    println!("netns: removed {removed} namespace(s)");
    Ok(())
}

pub fn status() -> anyhow::Result<()> {
    for n in names() {
        let state = if Netns::exists(&n) { "up" } else { "absent" };
        println!("  {n:<11} {state}");
    }
    Ok(())
}
