//! The capabilities the XDP data plane needs, checked before trying, so that a service run as
//! a non-root user without one is told which, instead of an `EPERM` from deep inside a map
//! creation or a netlink request. Root has them all and passes.

/// A Linux capability the data plane may need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    /// Load BPF programs, create and pin maps (Linux >= 5.8; CAP_SYS_ADMIN covers it too).
    Bpf,
    /// Attach XDP to interfaces, change net sysctls.
    NetAdmin,
    /// Without it the verifier checks a program as an unprivileged one (no pointer
    /// arithmetic between packet pointers, Spectre masking): ours would not load.
    Perfmon,
    /// Before CAP_BPF existed, what BPF needed; still accepted by the kernel in its place.
    SysAdmin,
}

impl Capability {
    /// Its number in linux/capability.h, the bit in `/proc/PID/status`'s masks.
    pub fn bit(self) -> u32 {
        match self {
            Capability::NetAdmin => 12,
            Capability::SysAdmin => 21,
            Capability::Perfmon => 38,
            Capability::Bpf => 39,
        }
    }

    /// Its name as systemd's `AmbientCapabilities=` and `capsh` spell it.
    pub fn name(self) -> &'static str {
        match self {
            Capability::Bpf => "CAP_BPF",
            Capability::NetAdmin => "CAP_NET_ADMIN",
            Capability::Perfmon => "CAP_PERFMON",
            Capability::SysAdmin => "CAP_SYS_ADMIN",
        }
    }

    fn held(self, effective: u64) -> bool {
        effective & (1 << self.bit()) != 0
    }
}

/// This process's effective capability set (`CapEff`); `None` when it cannot be read.
pub fn effective() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/thread-self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// What the XDP data plane needs and the `effective` set lacks, each with what it is for.
pub fn missing_for_xdp(effective: u64) -> Vec<(Capability, &'static str)> {
    let mut missing = Vec::new();
    if !Capability::Bpf.held(effective) && !Capability::SysAdmin.held(effective) {
        missing.push((
            Capability::Bpf,
            "load the XDP program and create and pin its maps",
        ));
    }
    // The kernel's perfmon_capable(): CAP_PERFMON or CAP_SYS_ADMIN.
    if !Capability::Perfmon.held(effective) && !Capability::SysAdmin.held(effective) {
        missing.push((
            Capability::Perfmon,
            "have the XDP program verified as a privileged one (its packet-pointer arithmetic \
             is refused otherwise)",
        ));
    }
    if !Capability::NetAdmin.held(effective) {
        missing.push((Capability::NetAdmin, "attach XDP to the interfaces"));
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_is_missing() {
        let bpf = 1u64 << 39;
        let net_admin = 1u64 << 12;
        let sys_admin = 1u64 << 21;
        let perfmon = 1u64 << 38;
        assert!(missing_for_xdp(bpf | perfmon | net_admin).is_empty());
        assert!(missing_for_xdp(sys_admin | net_admin).is_empty());
        assert!(missing_for_xdp(u64::MAX).is_empty());
        let m: Vec<_> = missing_for_xdp(perfmon | net_admin)
            .iter()
            .map(|m| m.0)
            .collect();
        assert_eq!(m, [Capability::Bpf]);
        let m: Vec<_> = missing_for_xdp(bpf | net_admin)
            .iter()
            .map(|m| m.0)
            .collect();
        assert_eq!(m, [Capability::Perfmon], "CAP_BPF alone is not enough");
        let m: Vec<_> = missing_for_xdp(bpf | perfmon).iter().map(|m| m.0).collect();
        assert_eq!(m, [Capability::NetAdmin]);
        assert_eq!(missing_for_xdp(0).len(), 3);
        // This test process: whatever it holds, reading it works.
        assert!(effective().is_some());
    }
}
