//! TCP framing: arbitrary reads, in arbitrary chunks, under an arbitrary size limit. The
//! framer must never hold more than its limit plus one read, and every message it hands out
//! must have a header end.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sipd_core::sip::Framer;

/// The limit and two read sizes first (4 bytes), then the stream, cut into reads of the two
/// sizes in turn, so seeds are a short header and a readable stream.
#[derive(Debug, Arbitrary)]
struct Input<'a> {
    max: u16,
    reads: [u8; 2],
    stream: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    let max = usize::from(input.max).max(1);
    let mut f = Framer::new(max);
    let mut chunks = Vec::new();
    let mut rest = input.stream;
    for i in 0.. {
        if rest.is_empty() {
            break;
        }
        let n = usize::from(input.reads[i % 2]).max(1).min(rest.len());
        chunks.push(&rest[..n]);
        rest = &rest[n..];
    }
    for chunk in chunks {
        if f.failed() {
            break;
        }
        f.push(chunk);
        assert!(
            f.buffered() <= max + chunk.len() + 4,
            "buffered {} over limit {max} + read {}",
            f.buffered(),
            chunk.len()
        );
        while let Some(r) = f.next_message() {
            match r {
                Ok(m) => {
                    assert!(m.len() <= max, "message of {} over limit {max}", m.len());
                    assert!(
                        m.windows(4).any(|w| w == b"\r\n\r\n"),
                        "framed message without a header end"
                    );
                }
                Err(_) => break,
            }
        }
        let _ = f.take_keepalives();
    }
    let _ = f.take_remainder();
});
