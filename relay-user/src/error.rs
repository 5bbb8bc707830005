//! Errors of the data-plane API, shared by both backends so callers match on one type.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("map {map}: {source}")]
    Xdp {
        map: &'static str,
        #[source]
        source: aya::maps::xdp::XdpMapError,
    },
    #[error("{0} is full")]
    Full(&'static str),
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("not supported by the {mode} data plane: {what}")]
    Unsupported {
        mode: &'static str,
        what: &'static str,
    },
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl DataPlaneError {
    pub(crate) fn map(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> Self {
        move |source| DataPlaneError::Map { map, source }
    }
}
