//! Attacks on the SIP side of a running appliance (`sipd run`) in network namespaces, from an
//! attacker's host beside the carrier: scanners of every method, amplification, records
//! written per refused packet. Each test is a threat-model promise (`shared/DESIGN.md`) that
//! fails if the promise breaks. One module per kind of attack; `sbc` is the set-up every sipd
//! scenario shares. The scenarios share the machine's two cores, so they run one at a time.

mod sbc;

#[path = "attacks_sip/scanners.rs"]
mod scanners;
