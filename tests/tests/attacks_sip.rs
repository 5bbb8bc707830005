//! Attacks on SIP signalling against a real `sipd run` in network namespaces, from a host of
//! the attacker's on the carrier's network (`Net::attacker`), while a legitimate carrier's
//! calls must keep working. One module per concern; each test is a threat-model promise
//! (`shared/DESIGN.md`) that fails if the promise breaks.

mod sbc;

#[path = "attacks_sip/credit.rs"]
mod credit;
#[path = "attacks_sip/tcp.rs"]
mod tcp;
