//! Load, pin, attach, replace, detach.
//!
//! Maps are pinned under `/sys/fs/bpf/<instance>/` so state (sessions, bans) survives a daemon
//! restart. Each interface's XDP link is pinned there too (`link.<ifname>.<mode>`): a restarted
//! daemon swaps the program inside the existing link atomically instead of detaching, so media
//! keeps flowing while it restarts. Only [`detach`] removes links and pins.
//!
//! Mode selection never degrades silently: `auto` tries native, then skb, then userspace and says
//! why at every step; a forced mode that cannot be had is an error.

use std::{
    fmt, fs, io,
    net::IpAddr,
    path::{Path, PathBuf},
    str::FromStr,
    sync::Mutex,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::MapInfo,
    programs::{
        Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use relay_common::maps::{LAYOUT, PROGRAM};
use tracing::{debug, error, info, warn};

use crate::{
    DataPlane, DataPlaneError, Mode,
    maps::XdpMaps,
    sys::{if_index, is_bpffs, mount_bpffs},
};

/// Root of the BPF filesystem.
pub const BPFFS: &str = "/sys/fs/bpf";

/// What the operator asked for (`--dataplane`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RequestedMode {
    /// Native XDP, else generic XDP, else userspace.
    #[default]
    Auto,
    /// Native XDP, else generic XDP; never userspace.
    Xdp,
    /// Native XDP only; fails where the driver has none.
    XdpNative,
    /// Generic XDP only.
    XdpSkb,
    /// No XDP: the userspace relay and firewall.
    Userspace,
}

impl FromStr for RequestedMode {
    type Err = LoadError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "auto" => Self::Auto,
            "xdp" => Self::Xdp,
            "xdp-native" => Self::XdpNative,
            "xdp-skb" => Self::XdpSkb,
            "userspace" => Self::Userspace,
            _ => return Err(LoadError::Config(format!("unknown data plane {s:?}"))),
        })
    }
}

impl fmt::Display for RequestedMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Xdp => "xdp",
            Self::XdpNative => "xdp-native",
            Self::XdpSkb => "xdp-skb",
            Self::Userspace => "userspace",
        })
    }
}

/// Why the data plane could not be brought up or taken down.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A setting is invalid (unknown mode, bad instance name, ...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// This build carries no eBPF object.
    #[error("the eBPF object is empty (built with AYA_BUILD_SKIP=1?)")]
    NoObject,
    /// The kernel refused the object (verifier, map creation, BTF).
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    /// Loading or attaching the program failed.
    #[error("program {name}: {source}")]
    Program {
        /// The program's name.
        name: &'static str,
        /// What aya said.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// The object lacks the XDP program (a mismatched build).
    #[error("program {0} is missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error(
        "pinned map {path} has key/value size {found:?}, this build expects {expected:?}; \
         it is from another build: run `relayd --cleanup --instance <name>` first"
    )]
    /// A pinned map of another layout: refused rather than misread.
    StalePin {
        /// The pin.
        path: PathBuf,
        /// Its (key, value) sizes in bytes.
        found: (u32, u32),
        /// This build's (key, value) sizes.
        expected: (u32, u32),
    },
    /// The named interface does not exist.
    #[error("no such interface {0:?}")]
    NoInterface(String),
    /// The program could not be attached to an interface in a mode.
    #[error("attaching to {iface} in {mode} mode: {reason}")]
    Attach {
        /// The interface.
        iface: String,
        /// The mode tried.
        mode: Mode,
        /// Why, from the kernel.
        reason: String,
    },
    /// A file under the bpffs pin directory could not be read, made or removed.
    #[error("{path}: {source}")]
    Fs {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Setting up the maps failed.
    #[error(transparent)]
    Maps(#[from] DataPlaneError),
    /// This process lacks a capability XDP needs (checked before trying).
    #[error(
        "missing capability {}, needed to {needed_for}: grant it (systemd: \
         AmbientCapabilities=) or run as root",
        capability.name()
    )]
    MissingCapability {
        /// The first capability missing.
        capability: crate::caps::Capability,
        /// What it is needed for.
        needed_for: &'static str,
    },
    /// The instance's pin directory could not be made or entered for lack of permission:
    /// bpffs belongs to root, and a non-root sipd needs its directory made for it.
    #[error(
        "{}: permission denied for uid {uid}: create it owned by this user first (the systemd \
         unit's ExecStartPre does: install -d -o sipd -g sipd -m 0700 {}) or run as root",
        path.display(),
        path.display()
    )]
    PinDirDenied {
        /// The pin directory.
        path: PathBuf,
        /// The user sipd runs as.
        uid: u32,
    },
    /// A pin in the instance's directory belongs to another user (left by a run as root):
    /// bpffs pins are mode 0600, so a non-root sipd cannot open or replace it.
    #[error(
        "{}: belongs to uid {owner}, but sipd runs as uid {uid} and cannot open it: \
         `chown -R {uid}: {}` keeps the live sessions and bans in it (the systemd unit's \
         ExecStartPre does this), `sipd cleanup` as its owner starts afresh",
        path.display(),
        path.parent().unwrap_or(path).display()
    )]
    PinOwner {
        /// The pin.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The user sipd runs as.
        uid: u32,
    },
}

/// Refuses, for a non-root process, a pin in `dir` owned by someone else: opening it would
/// fail with a bare `EACCES` deep in the loader (root may open anything).
fn check_pin_owner(dir: &Path) -> Result<(), LoadError> {
    use std::os::unix::fs::MetadataExt as _;
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if uid == 0 {
        return Ok(());
    }
    for entry in fs::read_dir(dir).map_err(|e| denied_or(dir, e))? {
        let entry = entry.map_err(fs_err(dir))?;
        let path = entry.path();
        let owner = fs::symlink_metadata(&path).map_err(fs_err(&path))?.uid();
        if owner != uid {
            return Err(LoadError::PinOwner { path, owner, uid });
        }
    }
    Ok(())
}

/// A permission error on the pin directory as [`LoadError::PinDirDenied`], others as `Fs`.
fn denied_or(path: &Path, e: io::Error) -> LoadError {
    if e.kind() == io::ErrorKind::PermissionDenied {
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        LoadError::PinDirDenied {
            path: path.to_owned(),
            uid,
        }
    } else {
        fs_err(path)(e)
    }
}

fn fs_err(path: &Path) -> impl FnOnce(io::Error) -> LoadError + '_ {
    move |source| LoadError::Fs {
        path: path.to_owned(),
        source,
    }
}

/// Where an instance's pins live. The name must be one plain path component.
pub fn pin_dir(instance: &str) -> Result<PathBuf, LoadError> {
    let ok = !instance.is_empty()
        && instance != "."
        && instance != ".."
        && instance
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    if !ok {
        return Err(LoadError::Config(format!(
            "instance name {instance:?}: use letters, digits, '-' or '_' (bpffs refuses '.')"
        )));
    }
    Ok(Path::new(BPFFS).join(instance))
}

/// bpffs refuses names with '.', which interface names (VLANs: `eth0.100`) may contain.
fn link_pin(dir: &Path, iface: &str, mode: Mode) -> PathBuf {
    let m = match mode {
        Mode::XdpNative => "native",
        _ => "skb",
    };
    dir.join(format!("link_{m}_{}", iface.replace('.', "~")))
}

const LINK_PREFIX: &str = "link_";

/// An error and its sources on one line (aya's pin errors hide the errno in the source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The pinned link of `iface`, if any, and the mode it was attached in.
fn find_link_pin(dir: &Path, iface: &str) -> Option<(PathBuf, Mode)> {
    [Mode::XdpNative, Mode::XdpSkb]
        .into_iter()
        .map(|m| (link_pin(dir, iface, m), m))
        .find(|(p, _)| p.exists())
}

/// Refuses pinned maps whose layout differs from this build's: reusing them would make the
/// kernel and us read the same bytes differently. A pinned map of another capacity is reused
/// (with its contents) and said so: its capacity is the one that holds until it is recreated.
fn check_pins(dir: &Path) -> Result<(), LoadError> {
    for l in LAYOUT {
        let (key, value) = (l.key_size, l.value_size);
        let path = dir.join(l.name);
        if !path.exists() {
            continue;
        }
        let info = match MapInfo::from_pin(&path) {
            Ok(i) => i,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "unreadable map pin; it will be recreated");
                continue;
            }
        };
        let found = (info.key_size(), info.value_size());
        let bad = (key != 0 && found.0 != key) || (value != 0 && found.1 != value);
        if bad {
            return Err(LoadError::StalePin {
                path,
                found,
                expected: (key, value),
            });
        }
        if info.max_entries() != l.max_entries {
            warn!(path = %path.display(), pinned = info.max_entries(), built = l.max_entries, "pinned map has another capacity than this build; it keeps it until `--cleanup` recreates it");
        }
    }
    Ok(())
}

/// Loads `object` with every map pinned under the instance directory (created if needed),
/// without attaching anything. Maps already pinned there are reused with their contents.
pub fn load_pinned(object: &[u8], instance: &str) -> Result<Ebpf, LoadError> {
    if object.is_empty() {
        return Err(LoadError::NoObject);
    }
    let dir = pin_dir(instance)?;
    ensure_bpffs()?;
    fs::create_dir_all(&dir).map_err(|e| denied_or(&dir, e))?;
    // Made by root for another user, or left by a root run: unreadable to us.
    check_pin_owner(&dir)?;
    check_pins(&dir)?;
    // Maps an older build had and this one replaced: read and unpinned now, written into
    // their successors once those exist.
    let carried = crate::retired::take(&dir);
    raise_memlock();
    let paths: Vec<(&'static str, PathBuf)> =
        LAYOUT.iter().map(|l| (l.name, dir.join(l.name))).collect();
    let mut loader = EbpfLoader::new();
    loader.default_map_pin_directory(&dir);
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader.load(object)?;
    crate::retired::restore(&mut ebpf, carried);
    crate::maps::sync_service_ports(&mut ebpf)?;
    Ok(ebpf)
}

/// Pins need a bpffs at /sys/fs/bpf; systemd mounts one at boot, containers often do not.
fn ensure_bpffs() -> Result<(), LoadError> {
    let root = Path::new(BPFFS);
    if is_bpffs(root).map_err(fs_err(root))? {
        return Ok(());
    }
    mount_bpffs(root).map_err(|source| LoadError::Fs {
        path: root.to_owned(),
        source: io::Error::new(
            source.kind(),
            format!("not a bpffs and mounting one failed: {source}"),
        ),
    })?;
    info!(path = BPFFS, "mounted the BPF filesystem");
    Ok(())
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; newer ones use memcg. Raising it
/// needs CAP_SYS_RESOURCE, which we may not have, and on a modern kernel do not need.
fn raise_memlock() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads one valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } != 0 {
        debug!(error = %io::Error::last_os_error(), "could not raise RLIMIT_MEMLOCK (fine on kernels >= 5.11)");
    }
}

/// What to bring up.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    /// Names the pin directory (`/sys/fs/bpf/<instance>`), so instances do not share maps.
    pub instance: String,
    /// Interfaces to attach the program to, by name.
    pub interfaces: Vec<String>,
    /// Which data plane to try (`--dataplane`).
    pub mode: RequestedMode,
    /// Turn on IP forwarding where the kernel relay path needs it (see [`forwarding_gaps`]);
    /// otherwise only report it.
    pub enable_forwarding: bool,
    /// The addresses media is relayed on: their families decide which forwarding sysctls the
    /// kernel relay path needs (see [`forwarding_sysctls`]).
    pub relay_addresses: Vec<IpAddr>,
}

/// The loaded object stays with the data plane: links are pinned, but dropping the object
/// early would close the program fd that a netlink fallback or a debugger may still refer to.
struct Held {
    /// Declared first, so the log reader stops before the object goes.
    _log: Option<crate::kernel_log::KernelLog>,
    _ebpf: Ebpf,
}

/// Brings up the data plane as configured and logs, loudly, which one and why.
pub fn start(cfg: &LoaderConfig, object: &[u8]) -> Result<DataPlane, LoadError> {
    if cfg.interfaces.is_empty() && cfg.mode != RequestedMode::Userspace {
        return Err(LoadError::Config("no interface to attach to".into()));
    }
    let dp = match cfg.mode {
        RequestedMode::Userspace => {
            DataPlane::userspace("userspace data plane requested (--dataplane userspace)")
        }
        RequestedMode::Xdp => start_xdp(cfg, object, &[Mode::XdpNative, Mode::XdpSkb])?,
        RequestedMode::XdpNative => start_xdp(cfg, object, &[Mode::XdpNative])?,
        RequestedMode::XdpSkb => start_xdp(cfg, object, &[Mode::XdpSkb])?,
        RequestedMode::Auto => match start_xdp(cfg, object, &[Mode::XdpNative, Mode::XdpSkb]) {
            Ok(dp) => dp,
            Err(e) => {
                error!(error = %e, "XDP unavailable: FALLING BACK TO THE USERSPACE DATA PLANE (kernel forwarding disabled)");
                DataPlane::userspace(format!("XDP unavailable: {e}"))
            }
        },
    };
    if dp.mode().is_xdp() {
        info!(mode = %dp.mode(), reason = dp.reason(), interfaces = ?cfg.interfaces, "data plane: XDP (kernel forwarding)");
    } else {
        warn!(
            reason = dp.reason(),
            "data plane: USERSPACE (no kernel forwarding)"
        );
    }
    Ok(dp)
}

fn start_xdp(cfg: &LoaderConfig, object: &[u8], modes: &[Mode]) -> Result<DataPlane, LoadError> {
    if let Some(&(capability, needed_for)) = crate::caps::effective()
        .map(crate::caps::missing_for_xdp)
        .as_deref()
        .and_then(<[_]>::first)
    {
        return Err(LoadError::MissingCapability {
            capability,
            needed_for,
        });
    }
    let dir = pin_dir(&cfg.instance)?;
    let existed = dir.exists();
    let r = start_xdp_in(cfg, object, modes, &dir);
    // A failed first attempt leaves nothing behind: maps pinned for an instance that never
    // attached would only confuse `--status` and `ls /sys/fs/bpf`. An instance that was
    // there before (live sessions, bans) is left as it was.
    if r.is_err() && !existed {
        let _ = detach(&cfg.instance, &cfg.interfaces);
    }
    r
}

fn start_xdp_in(
    cfg: &LoaderConfig,
    object: &[u8],
    modes: &[Mode],
    dir: &Path,
) -> Result<DataPlane, LoadError> {
    // Resolve interfaces first: a typo should not cost a program load to find out.
    let targets = cfg
        .interfaces
        .iter()
        .map(|i| {
            if_index(i)
                .map(|x| (i, x))
                .ok_or_else(|| LoadError::NoInterface(i.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut ebpf = load_pinned(object, &cfg.instance)?;
    let prog: &mut Xdp = ebpf
        .program_mut(PROGRAM)
        .ok_or(LoadError::MissingProgram(PROGRAM))?
        .try_into()
        .map_err(|source| LoadError::Program {
            name: PROGRAM,
            source,
        })?;
    prog.load().map_err(|source| LoadError::Program {
        name: PROGRAM,
        source,
    })?;

    let mut modes_used = Vec::new();
    let mut ifindexes = Vec::new();
    for (iface, idx) in targets {
        match attach_one(prog, dir, iface, idx, modes) {
            Ok(mode) => {
                modes_used.push(mode);
                ifindexes.push(idx);
            }
            Err(e) => {
                // All or nothing: a half-attached fast path would forward some calls in the
                // kernel and others nowhere.
                if modes.len() > 1 {
                    remove_link_pins(dir);
                }
                return Err(e);
            }
        }
    }
    let mode = if modes_used.contains(&Mode::XdpSkb) {
        Mode::XdpSkb
    } else {
        Mode::XdpNative
    };
    let reason = match (mode, modes.len()) {
        (Mode::XdpNative, _) => "native XDP attached on every interface".to_owned(),
        (_, 1) => "generic (skb) XDP requested (--dataplane xdp-skb)".to_owned(),
        _ => "native XDP not supported by a driver; generic (skb) XDP is slower".to_owned(),
    };
    let gaps = forwarding_gaps(&cfg.interfaces, &cfg.relay_addresses, cfg.enable_forwarding);
    let reason = if gaps.is_empty() {
        reason
    } else {
        for g in &gaps {
            error!(gap = %g, "KERNEL MEDIA FORWARDING DISABLED: the media this sysctl covers takes the userspace path (relayd --enable-forwarding or sipd's [dataplane] enable_forwarding = true turns it on)");
        }
        format!("{reason}; but {}", gaps.join("; "))
    };
    let maps = XdpMaps::from_ebpf(&mut ebpf)?;
    // The program's own log lines (rare events only) go into our `tracing` for as long as it
    // runs under this daemon.
    let log = crate::kernel_log::forward(&mut ebpf);
    let held = Held {
        _log: log,
        _ebpf: ebpf,
    };
    let dp = DataPlane::xdp(mode, reason, maps, Some(Box::new(Mutex::new(held))));
    for idx in ifindexes {
        dp.tx_port_add(idx)?;
    }
    Ok(dp)
}

/// The kernel relay path asks the FIB where to send a rewritten packet, and the kernel's
/// `bpf_fib_lookup` refuses to answer (FWD_DISABLED) when forwarding is off: per receiving
/// interface for IPv4, host-wide (`all`) for IPv6. Every such packet then goes to the userspace
/// relay, which works but is exactly the silent slow-down operators must be told about.
/// Returns what is off of what this configuration needs (see [`forwarding_sysctls`]), after
/// trying to turn it on, if asked.
pub fn forwarding_gaps(
    interfaces: &[String],
    relay_addresses: &[IpAddr],
    enable: bool,
) -> Vec<String> {
    let mut gaps = Vec::new();
    for (key, enable) in forwarding_sysctls(interfaces, relay_addresses, enable) {
        let path = Path::new("/proc/sys").join(&key);
        let on = |p: &Path| fs::read_to_string(p).is_ok_and(|v| v.trim() == "1");
        if !path.exists() || on(&path) {
            continue;
        }
        if enable {
            match fs::write(&path, "1") {
                Ok(()) if on(&path) => {
                    info!(sysctl = %key.replace('/', "."), "forwarding enabled for the kernel relay path");
                    continue;
                }
                Ok(()) => {}
                Err(e) => {
                    warn!(sysctl = %key.replace('/', "."), error = %e, "could not enable forwarding")
                }
            }
        }
        gaps.push(format!("{}=0", key.replace('/', ".")));
    }
    gaps
}

/// The forwarding sysctls (as paths under `/proc/sys`) the kernel relay path needs for media
/// on `relay_addresses` received on `interfaces`, each with whether to turn it on when off.
/// Only the families the relay addresses use count: IPv4 per interface if one is IPv4 (or
/// v4-mapped), IPv6 host-wide if one is IPv6; `::` listens on both. Forwarding on `lo` routes
/// nothing anywhere (everything `lo` receives was sent by this host to this host), so it is
/// turned on without asking: the default relay on 127.0.0.1 then runs in the kernel.
pub fn forwarding_sysctls(
    interfaces: &[String],
    relay_addresses: &[IpAddr],
    enable: bool,
) -> Vec<(String, bool)> {
    let v4 = relay_addresses.iter().any(|a| match a {
        IpAddr::V4(_) => true,
        IpAddr::V6(v6) => v6.is_unspecified() || v6.to_ipv4_mapped().is_some(),
    });
    let v6 = relay_addresses
        .iter()
        .any(|a| matches!(a, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none()));
    let mut keys = Vec::new();
    if v4 {
        keys.extend(
            interfaces
                .iter()
                .map(|i| (format!("net/ipv4/conf/{i}/forwarding"), enable || i == "lo")),
        );
    }
    if v6 {
        keys.push(("net/ipv6/conf/all/forwarding".into(), enable));
    }
    keys
}

/// Attaches to one interface (or takes over its pinned link) and returns the mode.
fn attach_one(
    prog: &mut Xdp,
    dir: &Path,
    iface: &str,
    idx: u32,
    modes: &[Mode],
) -> Result<Mode, LoadError> {
    // Whether we just removed the pin of a link in another mode: that link is released only
    // when its last holder closes it (a previous process's threads may still be exiting).
    let mut unpinned = false;
    if let Some((path, mode)) = find_link_pin(dir, iface) {
        if modes.contains(&mode) {
            match replace_pinned(prog, &path) {
                Ok(()) => {
                    info!(iface, %mode, "replaced the program in the pinned XDP link (no forwarding gap)");
                    return Ok(mode);
                }
                Err(e) => warn!(iface, error = %e, "pinned XDP link unusable; attaching anew"),
            }
        } else {
            info!(iface, pinned = %mode, "pinned link is in another mode than requested; re-attaching");
        }
        let _ = fs::remove_file(&path);
        unpinned = true;
    }
    let mut last = String::new();
    for &mode in modes {
        let xm = match mode {
            Mode::XdpNative => XdpMode::Driver,
            _ => XdpMode::Skb,
        };
        match attach_retrying(prog, idx, xm, unpinned) {
            Ok(id) => {
                let link = prog.take_link(id).map_err(|source| LoadError::Program {
                    name: PROGRAM,
                    source,
                })?;
                pin_link(link, &link_pin(dir, iface, mode), iface, mode)?;
                return Ok(mode);
            }
            Err(e) => {
                last = chain(&e);
                // EEXIST/EBUSY: another XDP program (another instance, or someone else's) holds
                // the interface; say how to find and free it rather than a bare errno.
                if is_eexist(&e) || os_error(&e) == Some(libc::EBUSY) {
                    last.push_str(&format!(
                        " (another XDP program is attached to {iface}: `ip link show {iface}` shows it; \
                         if it is another SBC instance, `sipd cleanup` or `relayd --cleanup --instance <name>` \
                         with that instance removes it)"
                    ));
                }
                warn!(iface, %mode, error = %last, "XDP attach failed");
            }
        }
    }
    Err(LoadError::Attach {
        iface: iface.to_owned(),
        mode: *modes.last().unwrap_or(&Mode::XdpSkb),
        reason: last,
    })
}

/// Attaches in `mode`; after an unpin, waits up to [`RELEASE_WAIT`] for the unpinned link to
/// be released (the kernel answers EEXIST until its last holder closes it).
fn attach_retrying(
    prog: &mut Xdp,
    idx: u32,
    mode: XdpMode,
    unpinned: bool,
) -> Result<aya::programs::xdp::XdpLinkId, aya::programs::ProgramError> {
    let deadline = std::time::Instant::now() + RELEASE_WAIT;
    loop {
        match prog.attach_to_if_index(idx, mode) {
            Err(e) if unpinned && std::time::Instant::now() < deadline && is_eexist(&e) => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            r => return r,
        }
    }
}

/// The errno under an error, if an `io::Error` is in its chain.
fn os_error(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return io.raw_os_error();
        }
        cur = c.source();
    }
    None
}

/// EEXIST: another XDP program (or a link not yet released) holds the interface.
fn is_eexist(e: &(dyn std::error::Error + 'static)) -> bool {
    os_error(e) == Some(libc::EEXIST)
}

/// How long an attach waits for a link we unpinned to go away.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Pins a fresh link so it outlives this process. Kernels without bpf_link for XDP (< 5.9)
/// attach through netlink, which cannot be pinned; aya detaches such a link on conversion, so
/// that is an error rather than a data plane that silently forwards nothing.
fn pin_link(link: XdpLink, path: &Path, iface: &str, mode: Mode) -> Result<(), LoadError> {
    let err = |reason: String| LoadError::Attach {
        iface: iface.to_owned(),
        mode,
        reason,
    };
    let fd = FdLink::try_from(link).map_err(|e| {
        err(format!(
            "link not pinnable (netlink attach, kernel < 5.9?): {e}"
        ))
    })?;
    fd.pin(path)
        .map_err(|e| err(format!("pinning {}: {}", path.display(), chain(&e))))?;
    Ok(())
}

fn replace_pinned(prog: &mut Xdp, path: &Path) -> Result<(), LoadError> {
    let attach_err = |reason: String| LoadError::Attach {
        iface: path.display().to_string(),
        mode: Mode::XdpSkb,
        reason,
    };
    let pinned = PinnedLink::from_pin(path).map_err(|e| attach_err(e.to_string()))?;
    let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| attach_err(e.to_string()))?;
    let id = prog
        .attach_to_link(link)
        .map_err(|source| LoadError::Program {
            name: PROGRAM,
            source,
        })?;
    // The pin keeps the link; our handle may go (dropping an fd link only closes the fd).
    let _ = prog.take_link(id);
    Ok(())
}

/// Detaches every pinned link of the instance but keeps its maps (and so their state).
fn remove_link_pins(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        if e.file_name().to_string_lossy().starts_with(LINK_PREFIX) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// What [`detach`] removed.
#[derive(Debug, Default)]
pub struct Cleanup {
    /// Link pins removed.
    pub links: Vec<PathBuf>,
    /// Map pins removed.
    pub maps: Vec<PathBuf>,
    /// Whether the instance's pin directory itself was removed.
    pub dir_removed: bool,
}

/// Detaches the instance's XDP links and removes its pins (links, maps, directory). Live
/// sessions and bans in the maps are gone after this. Idempotent.
pub fn detach(instance: &str, interfaces: &[String]) -> Result<Cleanup, LoadError> {
    let dir = pin_dir(instance)?;
    let mut out = Cleanup::default();
    if !dir.exists() {
        return Ok(out);
    }
    let _ = interfaces; // every link pin of the instance goes, whatever the interface list says
    for entry in fs::read_dir(&dir).map_err(fs_err(&dir))? {
        let entry = entry.map_err(fs_err(&dir))?;
        let path = entry.path();
        let is_link = entry.file_name().to_string_lossy().starts_with(LINK_PREFIX);
        // Removing the last pin of a link detaches it; removing a map pin frees the map once
        // no program uses it.
        fs::remove_file(&path).map_err(fs_err(&path))?;
        if is_link {
            info!(path = %path.display(), "XDP link detached");
            out.links.push(path);
        } else {
            debug!(path = %path.display(), "map unpinned");
            out.maps.push(path);
        }
    }
    fs::remove_dir(&dir).map_err(fs_err(&dir))?;
    out.dir_removed = true;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_are_one_component() {
        assert_eq!(pin_dir("sbc").unwrap(), Path::new("/sys/fs/bpf/sbc"));
        for bad in ["", "..", "a/b", "x y", "../etc"] {
            assert!(pin_dir(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn forwarding_is_checked_only_for_the_families_relayed() {
        let keys = |ifaces: &[&str], addrs: &[&str], enable| {
            let ifaces: Vec<String> = ifaces.iter().map(|i| i.to_string()).collect();
            let addrs: Vec<IpAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
            forwarding_sysctls(&ifaces, &addrs, enable)
        };
        let v4 = |i: &str, on: bool| (format!("net/ipv4/conf/{i}/forwarding"), on);
        let v6 = |on: bool| ("net/ipv6/conf/all/forwarding".to_string(), on);
        // The default start: 127.0.0.1 on lo needs lo's IPv4 forwarding (turned on without
        // asking) and nothing of IPv6.
        assert_eq!(keys(&["lo"], &["127.0.0.1"], false), [v4("lo", true)]);
        // IPv4 on two NICs: each of them, turned on only when asked.
        assert_eq!(
            keys(&["eth0", "eth1"], &["192.0.2.1"], false),
            [v4("eth0", false), v4("eth1", false)]
        );
        assert_eq!(keys(&["eth0"], &["192.0.2.1"], true), [v4("eth0", true)]);
        assert_eq!(
            keys(&["eth0"], &["::ffff:192.0.2.1"], false),
            [v4("eth0", false)]
        );
        // IPv6 only: the host-wide switch and no interface's IPv4.
        assert_eq!(keys(&["eth0"], &["2001:db8::1"], false), [v6(false)]);
        assert_eq!(keys(&["lo"], &["::1"], true), [v6(true)]);
        // Both families, or `::` (both): both.
        let both = [v4("eth0", true), v6(true)];
        assert_eq!(keys(&["eth0"], &["2001:db8::1", "192.0.2.1"], true), both);
        assert_eq!(keys(&["eth0"], &["::"], true), both);
        // Nothing relayed: nothing needed.
        assert_eq!(keys(&["eth0"], &[], true), []);
    }

    #[test]
    fn modes_parse() {
        assert_eq!(
            "xdp-skb".parse::<RequestedMode>().unwrap(),
            RequestedMode::XdpSkb
        );
        assert!("kernel".parse::<RequestedMode>().is_err());
        assert_eq!(RequestedMode::Auto.to_string(), "auto");
    }

    /// Every `WARN` event, `log` records included (aya logs through `log`).
    #[derive(Clone, Default)]
    struct Warnings(std::sync::Arc<Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Warnings {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            struct Msg(String);
            impl tracing::field::Visit for Msg {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn fmt::Debug) {
                    if f.name() == "message" {
                        self.0 = format!("{v:?}");
                    }
                }
            }
            if *event.metadata().level() == tracing::Level::WARN {
                let mut m = Msg(String::new());
                event.record(&mut m);
                self.0.lock().unwrap_or_else(|p| p.into_inner()).push(m.0);
            }
        }
    }

    /// The kernel must accept the object's BTF. It refuses all of it for one bad type (a
    /// data-carrying enum whose tag is not at offset 0 in a BPF function's signature, see
    /// `relay_ebpf::parse::Parsed`), and aya then only warns and loads without it.
    #[test]
    fn object_btf_is_accepted_by_the_kernel() {
        use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt};
        let object = crate::object::ebpf_object();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || object.is_empty() {
            // Under CI a privileged test that cannot run is a failure, not a skip.
            assert!(
                !std::env::var("CI").is_ok_and(|v| v == "true"),
                "object_btf_is_accepted_by_the_kernel cannot run under CI: needs root and the built XDP object"
            );
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                b"SKIPPED object_btf_is_accepted_by_the_kernel: needs root and the built XDP object\n",
            );
            return;
        }
        let warnings = Warnings::default();
        // Global (the `log` bridge needs it); the only subscriber any unit test installs.
        let _ = tracing_subscriber::registry()
            .with(warnings.clone())
            .try_init();
        let instance = format!("relay-user-btf-{}", std::process::id());
        let loaded = load_pinned(object, &instance);
        let _ = detach(&instance, &[]);
        loaded.expect("object loads");
        let w = warnings.0.lock().unwrap_or_else(|p| p.into_inner());
        let btf: Vec<_> = w.iter().filter(|m| m.contains("BTF")).collect();
        assert!(btf.is_empty(), "kernel refused the object's BTF: {btf:?}");
    }

    #[test]
    fn forced_userspace_needs_no_privilege() {
        let dp = start(
            &LoaderConfig {
                enable_forwarding: false,
                relay_addresses: vec![],
                instance: "unused".into(),
                interfaces: vec![],
                mode: RequestedMode::Userspace,
            },
            &[],
        )
        .unwrap();
        assert_eq!(dp.mode(), Mode::Userspace);
        assert!(dp.reason().contains("requested"));
    }
}
