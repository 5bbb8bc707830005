//! Per-call decisions that need no I/O: which account a request belongs to (auth rules),
//! whether it may start a call now (admission), and where it goes (routing).
