//! The torture messages of RFC 4475 (every message of §3, from the RFC's bit-exact archive in
//! its appendix) and RFC 5118 (IPv6, §4), with what a careful B2BUA does with each. The
//! parser test here checks the first stage (parse or refuse); `b2bua::tests_torture` runs
//! every message through a whole [`crate::b2bua::Core`] and checks the answer; the
//! integration tests (feature `torture`) send them to a running sipd.

mod rfc4475;
mod rfc5118;

pub use rfc4475::RFC4475;
pub use rfc5118::RFC5118;

/// What a careful B2BUA does with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Parsed, and answered as any other request of its method: never a 400, never silence.
    Valid,
    /// Parsed, and answered with exactly this status.
    Status(u16),
    /// Refused with a 400 (or dropped when no response could be routed).
    Bad,
    /// The RFC lets an element either refuse it with a 400 or take it (README lists where).
    Lenient,
    /// A response nothing asked for: parsed or not, it gets no answer.
    Silent,
}

/// One torture message.
pub struct Torture {
    /// The file name in the RFC's archive.
    pub name: &'static str,
    /// The section of the RFC that describes it.
    pub section: &'static str,
    /// The message, byte for byte.
    pub bytes: &'static [u8],
    /// What a careful B2BUA does with it.
    pub expect: Expect,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Msg;

    /// Every message that should be taken parses; every one that must be refused does not
    /// (refusals of parsed messages, such as 416 or 420, are the core's).
    #[test]
    fn first_stage_parses_what_should_be_taken() {
        let mut wrong = Vec::new();
        for t in RFC4475.iter().chain(RFC5118.iter()) {
            let r = Msg::parse(t.bytes, 16 * 1024);
            let refused_with = r
                .as_ref()
                .err()
                .map(|e| crate::sip::Malformed::Parse(e.clone()).status());
            let ok = match t.expect {
                Expect::Valid => r.is_ok(),
                // The parser's own refusals with a status of their own.
                Expect::Status(c @ (416 | 501 | 505)) => refused_with == Some(c),
                Expect::Status(_) => r.is_ok(),
                Expect::Bad | Expect::Lenient | Expect::Silent => true,
            };
            if !ok {
                wrong.push(format!("{} ({}): {:?}", t.name, t.section, r.err()));
            }
        }
        assert!(
            wrong.is_empty(),
            "refused valid messages:\n{}",
            wrong.join("\n")
        );
    }

    #[test]
    fn fixtures_are_byte_exact() {
        assert_eq!((RFC4475.len(), RFC5118.len()), (49, 12));
        for t in RFC4475.iter().chain(RFC5118.iter()) {
            let head_end = t.bytes.windows(4).position(|w| w == b"\r\n\r\n");
            let head = &t.bytes[..head_end.unwrap_or(t.bytes.len())];
            assert!(
                !head.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
                "{}: bare LF in the header section",
                t.name
            );
        }
    }
}
