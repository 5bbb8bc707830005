//! Errors of the data-plane API, shared by both backends so callers match on one type.

use std::io;

/// Why a data-plane operation failed; the same for the XDP maps and the in-memory tables.
#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    /// A BPF map operation failed in the kernel.
    #[error("map {map}: {source}")]
    Map {
        /// The map's name.
        map: &'static str,
        /// What the kernel said.
        #[source]
        source: aya::maps::MapError,
    },
    /// The loaded object lacks a map this build expects (a mismatched build).
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    /// A devmap (`TX_PORTS`) operation failed.
    #[error("map {map}: {source}")]
    Xdp {
        /// The map's name.
        map: &'static str,
        /// What went wrong.
        #[source]
        source: aya::maps::xdp::XdpMapError,
    },
    /// The named table is at its capacity (see `relay_common::maps`); nothing was added.
    #[error("{0} is full")]
    Full(&'static str),
    /// An argument out of range or unparsable (the text says which).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The active mode cannot do this (e.g. redirect ports in userspace mode).
    #[error("not supported by the {mode} data plane: {what}")]
    Unsupported {
        /// The active mode's name.
        mode: &'static str,
        /// What was asked.
        what: &'static str,
    },
    /// A system call failed (CPU count, sockets).
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl DataPlaneError {
    pub(crate) fn map(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> Self {
        move |source| DataPlaneError::Map { map, source }
    }
}
