//! ng datagrams: the cookie, bencode, and typed requests and replies. Whatever decodes must
//! encode back to something that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_user::ng::bencode::Value;
use relay_user::ng::message::{Request, Response, parse_datagram};

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = Value::decode(data) {
        let again = Value::decode(&v.encode()).expect("our own encoding decodes");
        assert_eq!(again, v, "bencode round trip changed the value");
    }
    if let Ok((_cookie, v)) = parse_datagram(data) {
        if let Ok(r) = Request::from_value(&v) {
            let _ = r.command();
        }
        let _ = Response::from_value(v);
    }
});
