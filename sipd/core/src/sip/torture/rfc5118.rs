//! RFC 5118 §4: the IPv6 torture messages, byte for byte as printed in the RFC (CRLF line
//! ends). BYEs outside a dialog get the 481 any such BYE gets.

use super::{Expect::*, Torture};

/// Every message of the RFC, in the order of its sections.
pub static RFC5118: &[Torture] = &[
    Torture {
        name: "ipv6-good",
        section: "4.1",
        bytes: include_bytes!("rfc5118/ipv6-good.dat"),
        expect: Valid,
    },
    Torture {
        name: "ipv6-bad",
        section: "4.2",
        bytes: include_bytes!("rfc5118/ipv6-bad.dat"),
        expect: Bad,
    },
    Torture {
        name: "port-ambiguous",
        section: "4.3",
        bytes: include_bytes!("rfc5118/port-ambiguous.dat"),
        expect: Valid,
    },
    Torture {
        name: "port-unambiguous",
        section: "4.4",
        bytes: include_bytes!("rfc5118/port-unambiguous.dat"),
        expect: Valid,
    },
    Torture {
        name: "via-received-param-with-delim",
        section: "4.5",
        bytes: include_bytes!("rfc5118/via-received-param-with-delim.dat"),
        expect: Valid,
    },
    Torture {
        name: "via-received-param-no-delim",
        section: "4.5",
        bytes: include_bytes!("rfc5118/via-received-param-no-delim.dat"),
        expect: Valid,
    },
    Torture {
        name: "ipv6-in-sdp",
        section: "4.6",
        bytes: include_bytes!("rfc5118/ipv6-in-sdp.dat"),
        expect: Valid,
    },
    Torture {
        name: "mult-ip-in-header",
        section: "4.7",
        bytes: include_bytes!("rfc5118/mult-ip-in-header.dat"),
        expect: Valid,
    },
    Torture {
        name: "mult-ip-in-sdp",
        section: "4.8",
        bytes: include_bytes!("rfc5118/mult-ip-in-sdp.dat"),
        expect: Valid,
    },
    Torture {
        name: "ipv4-mapped-ipv6",
        section: "4.9",
        bytes: include_bytes!("rfc5118/ipv4-mapped-ipv6.dat"),
        expect: Valid,
    },
    Torture {
        name: "ipv6-bug-abnf-3-colons",
        section: "4.10",
        bytes: include_bytes!("rfc5118/ipv6-bug-abnf-3-colons.dat"),
        expect: Lenient,
    },
    Torture {
        name: "ipv6-correct-abnf-2-colons",
        section: "4.10",
        bytes: include_bytes!("rfc5118/ipv6-correct-abnf-2-colons.dat"),
        expect: Valid,
    },
];
