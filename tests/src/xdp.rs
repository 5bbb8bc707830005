//! Helpers that load the XDP object (only with the `xdp` feature: they need `relay-user`, whose
//! build script builds the object, and `xtask` must build without it).

use anyhow::Context as _;

use crate::netns::Topology;

/// Attaches the object's `sbc_xdp_pass` in driver mode to the caller's and callee's veth ends
/// of `topo`, loading the object against the maps pinned for `instance` (a running relayd's).
///
/// A native XDP_REDIRECT into a veth is only delivered when the receiving end runs an XDP
/// program of its own (the kernel sets up the veth's XDP receive path then; NAPI from GRO is
/// not enough on current kernels); on real NICs this is not needed. The returned `Ebpf` owns
/// the links: keep it while the plane runs, dropping it detaches them.
pub fn attach_peer_pass(topo: &Topology, instance: &str) -> anyhow::Result<aya::Ebpf> {
    use aya::programs::{Xdp, XdpMode};
    let mut ebpf = relay_user::loader::load_pinned(relay_user::object::ebpf_object(), instance)
        .context("load the XDP object against relayd's pins")?;
    let prog: &mut Xdp = ebpf
        .program_mut("sbc_xdp_pass")
        .context("sbc_xdp_pass in the object")?
        .try_into()?;
    prog.load().context("load sbc_xdp_pass")?;
    for (ns, dev) in [
        (&topo.caller, &topo.caller_if.dev),
        (&topo.callee, &topo.callee_if.dev),
    ] {
        ns.enter(|| prog.attach(dev, XdpMode::Driver))
            .with_context(|| format!("attach sbc_xdp_pass to {dev} (driver mode)"))?;
    }
    Ok(ebpf)
}
