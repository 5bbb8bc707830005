//! `BPF_PROG_TEST_RUN` of an XDP program: one frame, run once or `repeat` times by the kernel,
//! which reports the action, the frame as the program left it and the mean time per run.
//!
//! The one place the fixtures, the relay's integration tests and the benchmarks (`bench xdp`,
//! `bench xdp-log`) hand frames to a loaded program, so they all build the context the same way.
//!
//! The kernel copies the frame in once and runs the program `repeat` times on that copy: a
//! program that rewrites the frame sees its own output on the next run. A benchmark of a
//! rewriting path therefore needs a frame the rewrite maps onto itself (or `repeat` = 1).

use std::time::Duration;

use aya::{
    Ebpf,
    programs::{ProgramError, TestRun, TestRunOptions, Xdp},
};

/// `XDP_ABORTED`.
pub const XDP_ABORTED: u32 = 0;
/// `XDP_DROP`.
pub const XDP_DROP: u32 = 1;
/// `XDP_PASS`.
pub const XDP_PASS: u32 = 2;
/// `XDP_TX`.
pub const XDP_TX: u32 = 3;
/// `XDP_REDIRECT`.
pub const XDP_REDIRECT: u32 = 4;

/// Room after the frame in the output buffer (a program may grow the frame's tail).
const OUT_SLACK: usize = 256;

/// Why a test run did not happen.
#[derive(Debug, thiserror::Error)]
pub enum TestRunError {
    /// The object has no program by that name.
    #[error("no program {0} in the eBPF object")]
    MissingProgram(String),
    /// The program is not an XDP program, or is not loaded.
    #[error("program {name}: {source}")]
    Program {
        /// The program's name.
        name: String,
        /// What aya said.
        #[source]
        source: ProgramError,
    },
    /// The kernel refused the run (a frame shorter than an Ethernet header, an ingress device
    /// that does not exist in the caller's network namespace, no privilege).
    #[error("BPF_PROG_TEST_RUN ({len} bytes, ingress ifindex {ifindex:?}): {source}")]
    Kernel {
        /// The frame's length.
        len: usize,
        /// The ingress device asked for, if any.
        ifindex: Option<u32>,
        /// What the kernel said.
        #[source]
        source: ProgramError,
    },
}

/// What one test run call returned.
#[derive(Debug, Clone)]
pub struct XdpRunResult {
    /// The program's return value (`XDP_*`) of the last run.
    pub action: u32,
    /// The kernel's mean time per run, without the system call.
    pub per_run: Duration,
    /// The frame as the last run left it.
    pub frame: Vec<u8>,
}

impl XdpRunResult {
    /// [`XdpRunResult::per_run`] in nanoseconds.
    pub fn ns_per_run(&self) -> f64 {
        self.per_run.as_nanos() as f64
    }
}

/// One test run: a frame, the device it arrives on, how many times to run it.
#[derive(Debug, Clone, Copy)]
pub struct XdpRun<'a> {
    frame: &'a [u8],
    ingress: Option<u32>,
    repeat: u32,
}

impl<'a> XdpRun<'a> {
    /// `frame` once, on the kernel's default ingress (the namespace's loopback).
    pub fn new(frame: &'a [u8]) -> Self {
        XdpRun {
            frame,
            ingress: None,
            repeat: 1,
        }
    }

    /// Arriving on the device `ifindex` of the caller's network namespace (what
    /// `bpf_fib_lookup` starts from and `ctx.ingress_ifindex()` reads).
    pub fn ingress(mut self, ifindex: u32) -> Self {
        self.ingress = Some(ifindex);
        self
    }

    /// Run `n` times (at least once) in one call; the time is the mean per run.
    pub fn repeat(mut self, n: u32) -> Self {
        self.repeat = n.max(1);
        self
    }

    /// Runs the program named `name` of `ebpf` (loaded).
    pub fn run_named(&self, ebpf: &Ebpf, name: &str) -> Result<XdpRunResult, TestRunError> {
        let prog: &Xdp = ebpf
            .program(name)
            .ok_or_else(|| TestRunError::MissingProgram(name.to_string()))?
            .try_into()
            .map_err(|source| TestRunError::Program {
                name: name.to_string(),
                source,
            })?;
        self.run(prog)
    }

    /// Runs `prog` (loaded).
    pub fn run(&self, prog: &Xdp) -> Result<XdpRunResult, TestRunError> {
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex. The kernel insists data_end equals the frame length.
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(self.frame.len() as u32).to_ne_bytes());
        if let Some(ifindex) = self.ingress {
            ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        }
        let mut out = vec![0u8; self.frame.len() + OUT_SLACK];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(self.frame);
        opts.data_out = Some(&mut out);
        opts.ctx_in = self.ingress.is_some().then_some(&ctx[..]);
        opts.repeat = self.repeat;
        let r = prog.test_run(opts).map_err(|source| TestRunError::Kernel {
            len: self.frame.len(),
            ifindex: self.ingress,
            source,
        })?;
        out.truncate(r.data_size_out as usize);
        Ok(XdpRunResult {
            action: r.return_value,
            per_run: r.duration,
            frame: out,
        })
    }
}
