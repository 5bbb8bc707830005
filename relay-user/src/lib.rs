//! relay-user: the data plane's userspace side. Loads and attaches the XDP program, owns every
//! BPF map behind a typed API, and runs the userspace fallback relay where XDP cannot run.

pub mod object;
pub mod ng;
