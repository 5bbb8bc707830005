//! Attacks on `sipd`'s signalling by someone who can see or guess parts of other people's
//! calls, against a real `sipd run` in network namespaces with an attacker's host on the
//! carrier's network. One module per kind of attack; each test is a threat-model promise
//! (`shared/DESIGN.md`) that fails if the promise breaks.

#[path = "attacks_sip/credit.rs"]
mod credit;
