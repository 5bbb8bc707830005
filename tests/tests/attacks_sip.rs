//! Attacks on SIP signalling against a real `sipd run` in network namespaces, from a host of
//! the attacker's on the carrier's network (`Net::attacker`), while a legitimate carrier's
//! calls must keep working: scanners of every method, amplification, records written per
//! refused packet, TCP exhaustion, spending another's credit, other people's dialogs. One
//! module per kind of attack; each test is a threat-model promise (`shared/DESIGN.md`) that
//! fails if the promise breaks.

mod sbc;

#[path = "attacks_sip/credit.rs"]
mod credit;
#[path = "attacks_sip/dialogs.rs"]
mod dialogs;
#[path = "attacks_sip/scanners.rs"]
mod scanners;
#[path = "attacks_sip/tcp.rs"]
mod tcp;
