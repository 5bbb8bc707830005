//! Every torture message of RFC 4475 and RFC 5118 through a whole core, from an
//! IP-authenticated carrier: the answer each gets, against what its section calls for.

use super::*;
use crate::sip::torture::{Expect, RFC4475, RFC5118, Torture};

/// What the core did with one message: the final (or only) status it sent back, or
/// "forwarded" when it passed the request upstream, or nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Status(u16),
    Forwarded,
    Nothing,
}

fn run(t: &Torture) -> Outcome {
    let mut w = ip_world();
    let peer = Peer {
        proto: Proto::Udp,
        remote: sa(CARRIER),
        local: sa(US),
        conn: None,
    };
    w.now += Duration::from_millis(1);
    w.core.on_message(w.now, w.wall, peer, t.bytes);
    w.collect();
    // Answers that echo a broken header do not parse back: read their status line.
    let raw_code = w
        .raw
        .iter()
        .find_map(|r| r.strip_prefix("SIP/2.0 ")?.get(..3)?.parse::<u16>().ok());
    let to_carrier: Vec<u16> = w
        .take(CARRIER)
        .iter()
        .filter_map(Msg::code)
        .filter(|c| *c >= 200)
        .collect();
    if let Some(c) = to_carrier.first() {
        return Outcome::Status(*c);
    }
    if let Some(c) = raw_code {
        return Outcome::Status(c);
    }
    if !w.take(VENDOR1).is_empty() {
        return Outcome::Forwarded;
    }
    Outcome::Nothing
}

fn acceptable(expect: Expect, got: Outcome) -> bool {
    match (expect, got) {
        (Expect::Valid, Outcome::Status(c)) => c != 400 && c != 505 && c != 513,
        (Expect::Valid, Outcome::Forwarded) => true,
        (Expect::Status(want), Outcome::Status(c)) => want == c,
        (Expect::Bad, Outcome::Status(c)) => c == 400,
        (Expect::Bad, Outcome::Nothing) => true,
        // Refused or taken, never ignored.
        (Expect::Lenient, o) => o != Outcome::Nothing,
        (Expect::Silent, Outcome::Nothing) => true,
        _ => false,
    }
}

#[test]
fn every_torture_message_gets_the_answer_its_section_calls_for() {
    let mut table = Vec::new();
    let mut wrong = 0;
    for (rfc, list) in [("4475", RFC4475), ("5118", RFC5118)] {
        for t in list {
            let got = run(t);
            let ok = acceptable(t.expect, got);
            wrong += usize::from(!ok);
            table.push(format!(
                "{} RFC {rfc} §{:<9} {:<30} expect {:<12} got {:?}",
                if ok { "  " } else { "XX" },
                t.section,
                t.name,
                format!("{:?}", t.expect),
                got
            ));
        }
    }
    println!("{}", table.join("\n"));
    assert_eq!(wrong, 0, "\n{}", table.join("\n"));
}
