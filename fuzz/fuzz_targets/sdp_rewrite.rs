//! The relay's SDP parser and rewrite, with an arbitrary relay address, port list and flags.
//! A rewritten body must parse again with the same media sections.
#![no_main]

use std::net::IpAddr;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use relay_user::sdp::{Rewrite, Sdp};

/// Fixed-size fields first (12 bytes), the SDP text last, so seeds are a short header and a
/// readable body.
#[derive(Debug, Arbitrary)]
struct Input<'a> {
    v6: bool,
    origin: bool,
    remove_ice: bool,
    /// How many of `ports` the rewrite gets (fewer or more than the m= lines).
    nports: u8,
    ports: [u16; 4],
    text: &'a str,
}

fuzz_target!(|input: Input<'_>| {
    let Ok(sdp) = Sdp::parse(input.text) else {
        return;
    };
    let addr: IpAddr = if input.v6 {
        "2001:db8::10".parse().expect("constant address")
    } else {
        "192.0.2.10".parse().expect("constant address")
    };
    let rw = Rewrite {
        addr,
        ports: input.ports[..usize::from(input.nports % 5)].to_vec(),
        origin: input.origin,
        remove_ice: input.remove_ice,
    };
    if let Ok(out) = sdp.rewrite(&rw) {
        let again = Sdp::parse(&out).expect("a rewritten body parses");
        assert_eq!(
            again.media.len(),
            sdp.media.len(),
            "rewrite changed the media sections"
        );
    }
});
