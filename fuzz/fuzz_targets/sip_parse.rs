//! The SIP message parser, and what a message it refuses gets back (`answer_malformed`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipd_core::sip::Msg;
use sipd_core::sip::framing::FrameError;
use sipd_core::sip::malformed::{self, Malformed};

const MAX: usize = 16 * 1024;

fuzz_target!(|data: &[u8]| {
    let us = "10.0.0.2".parse().expect("constant address");
    match Msg::parse(data, MAX) {
        Ok(m) => {
            // Everything the core reads of an accepted message.
            let _ = (m.method(), m.code(), m.to_bytes());
            if m.code().is_none() {
                // A request is answerable: the response builder must cope with any headers.
                let r = m.response(400, Some("t"));
                let _ = r.to_bytes();
            }
        }
        Err(e) => {
            let problem = Malformed::Parse(e);
            if let Some(r) = malformed::answer(data, MAX, &problem, us) {
                let bytes = r.to_bytes();
                assert!(
                    bytes.len() <= MAX + 1024,
                    "answer larger than the request allows"
                );
            }
        }
    }
    // A stream's framing problems are answered from the same bytes.
    for f in [
        FrameError::TooLarge,
        FrameError::NoContentLength,
        FrameError::BadContentLength,
    ] {
        let _ = malformed::answer(data, MAX, &Malformed::Frame(f), us);
    }
});
