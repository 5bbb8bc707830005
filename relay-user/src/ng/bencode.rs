//! A small, strict bencode codec for the ng protocol.
//!
//! Strict on syntax (no leading zeros, no `-0`, lengths must fit, no trailing bytes, no duplicate
//! dictionary keys) but tolerant of unsorted dictionary keys: Kamailio's rtpengine module and
//! rtpengine itself emit keys in insertion order, so a decoder insisting on sorted keys would
//! reject every real message. Dictionaries therefore keep arrival order. Decoding is bounded by
//! nesting depth and item count and never panics, whatever the input.

use std::fmt;

/// Deepest nesting accepted. ng messages nest at most ~6 levels (query replies).
pub const MAX_DEPTH: usize = 32;
/// Most values (strings, ints, lists, dicts) in one message. A UDP datagram cannot hold more
/// than ~32k anyway (two bytes per empty string); this caps work on hostile input.
pub const MAX_ITEMS: usize = 65_536;
/// Largest input accepted, the largest UDP payload.
pub const MAX_INPUT: usize = 65_535;

/// A bencode value. Strings are bytes: SDP and SIP tags need not be UTF-8.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    /// An integer (`i42e`).
    Int(i64),
    /// A byte string (`3:abc`).
    Bytes(Vec<u8>),
    /// A list (`l...e`).
    List(Vec<Value>),
    /// Keys in arrival order (unique).
    Dict(Vec<(Vec<u8>, Value)>),
}

/// Why a buffer is not a valid bencode value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ends inside a value (at the byte given).
    #[error("input ends inside a value (at byte {0})")]
    Truncated(usize),
    #[error("unexpected byte {byte:#04x} at {at}")]
    /// A byte that cannot start or continue a value here.
    Unexpected {
        /// The byte.
        byte: u8,
        /// Its offset.
        at: usize,
    },
    /// An integer that is not `i<digits>e` in range (at the byte given).
    #[error("malformed integer at byte {0}")]
    BadInt(usize),
    /// A string length that does not parse or runs past the input (at the byte given).
    #[error("malformed string length at byte {0}")]
    BadLength(usize),
    /// Lists and dictionaries nested deeper than [`MAX_DEPTH`] (at the byte given).
    #[error("nesting deeper than {MAX_DEPTH} at byte {0}")]
    TooDeep(usize),
    /// More than [`MAX_ITEMS`] values in all.
    #[error("more than {MAX_ITEMS} values")]
    TooManyItems,
    /// An input over [`MAX_INPUT`] bytes (its length is given).
    #[error("input of {0} bytes exceeds {MAX_INPUT}")]
    TooLong(usize),
    /// A dictionary key that is not a string (at the byte given).
    #[error("dictionary key at byte {0} is not a string")]
    KeyNotString(usize),
    /// A key given twice in one dictionary (as lossy UTF-8).
    #[error("duplicate dictionary key {0:?}")]
    DuplicateKey(String),
    /// Bytes after the one top-level value (how many).
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
}

impl Value {
    /// A byte string.
    pub fn str(s: impl AsRef<[u8]>) -> Value {
        Value::Bytes(s.as_ref().to_vec())
    }

    /// An empty dictionary, to fill with [`Value::insert`].
    pub fn dict() -> Value {
        Value::Dict(Vec::new())
    }

    /// Sets `key` in a dictionary (replacing an existing entry); no-op on other variants.
    pub fn insert(&mut self, key: impl AsRef<[u8]>, v: impl Into<Value>) -> &mut Value {
        if let Value::Dict(entries) = self {
            let key = key.as_ref();
            let v = v.into();
            match entries.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = v,
                None => entries.push((key.to_vec(), v)),
            }
        }
        self
    }

    /// Builder form of [`Value::insert`].
    pub fn with(mut self, key: impl AsRef<[u8]>, v: impl Into<Value>) -> Value {
        self.insert(key, v);
        self
    }

    /// Looks a key up in a dictionary.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(entries) => entries
                .iter()
                .find(|(k, _)| k == key.as_bytes())
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The bytes, if it is a string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The string, if it is valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The integer, if it is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The items, if it is a list.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    /// The entries in arrival order, if it is a dictionary.
    pub fn as_dict(&self) -> Option<&[(Vec<u8>, Value)]> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// Encodes into a fresh buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoding. Dictionaries keep their order (see the module docs).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(i) => {
                out.push(b'i');
                out.extend_from_slice(i.to_string().as_bytes());
                out.push(b'e');
            }
            Value::Bytes(b) => encode_bytes(b, out),
            Value::List(l) => {
                out.push(b'l');
                for v in l {
                    v.encode_into(out);
                }
                out.push(b'e');
            }
            Value::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    encode_bytes(k, out);
                    v.encode_into(out);
                }
                out.push(b'e');
            }
        }
    }

    /// Decodes exactly one value filling the whole buffer.
    pub fn decode(input: &[u8]) -> Result<Value, DecodeError> {
        if input.len() > MAX_INPUT {
            return Err(DecodeError::TooLong(input.len()));
        }
        let mut d = Decoder {
            buf: input,
            pos: 0,
            items: 0,
        };
        let v = d.value(0)?;
        if d.pos != input.len() {
            return Err(DecodeError::Trailing(input.len() - d.pos));
        }
        Ok(v)
    }
}

fn encode_bytes(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::str(s)
    }
}
impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Bytes(s.into_bytes())
    }
}
impl From<&[u8]> for Value {
    fn from(s: &[u8]) -> Value {
        Value::Bytes(s.to_vec())
    }
}
impl From<Vec<u8>> for Value {
    fn from(s: Vec<u8>) -> Value {
        Value::Bytes(s)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Int(i)
    }
}
impl From<u64> for Value {
    fn from(i: u64) -> Value {
        Value::Int(i64::try_from(i).unwrap_or(i64::MAX))
    }
}
impl From<u16> for Value {
    fn from(i: u16) -> Value {
        Value::Int(i.into())
    }
}
impl From<Vec<Value>> for Value {
    fn from(l: Vec<Value>) -> Value {
        Value::List(l)
    }
}

/// Shows the value JSON-like, strings lossily as UTF-8 (for logs and error messages).
impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Bytes(b) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Value::List(l) => f.debug_list().entries(l).finish(),
            Value::Dict(d) => f
                .debug_map()
                .entries(d.iter().map(|(k, v)| (String::from_utf8_lossy(k), v)))
                .finish(),
        }
    }
}

struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    items: usize,
}

impl Decoder<'_> {
    fn peek(&self) -> Result<u8, DecodeError> {
        self.buf
            .get(self.pos)
            .copied()
            .ok_or(DecodeError::Truncated(self.pos))
    }

    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        self.items += 1;
        if self.items > MAX_ITEMS {
            return Err(DecodeError::TooManyItems);
        }
        let at = self.pos;
        match self.peek()? {
            b'i' => {
                self.pos += 1;
                let end = self.find(b'e')?;
                let i = parse_int(&self.buf[self.pos..end]).ok_or(DecodeError::BadInt(at))?;
                self.pos = end + 1;
                Ok(Value::Int(i))
            }
            b'0'..=b'9' => Ok(Value::Bytes(self.bytes()?.to_vec())),
            b'l' | b'd' if depth >= MAX_DEPTH => Err(DecodeError::TooDeep(at)),
            b'l' => {
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek()? != b'e' {
                    items.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                Ok(Value::List(items))
            }
            b'd' => {
                self.pos += 1;
                let mut entries: Vec<(Vec<u8>, Value)> = Vec::new();
                while self.peek()? != b'e' {
                    let kat = self.pos;
                    if !self.peek()?.is_ascii_digit() {
                        return Err(DecodeError::KeyNotString(kat));
                    }
                    self.items += 1;
                    let key = self.bytes()?.to_vec();
                    // Linear: ng dictionaries have a handful of keys, and MAX_ITEMS bounds
                    // the worst case.
                    if entries.iter().any(|(k, _)| *k == key) {
                        return Err(DecodeError::DuplicateKey(
                            String::from_utf8_lossy(&key).into_owned(),
                        ));
                    }
                    let v = self.value(depth + 1)?;
                    entries.push((key, v));
                }
                self.pos += 1;
                Ok(Value::Dict(entries))
            }
            byte => Err(DecodeError::Unexpected { byte, at }),
        }
    }

    /// `<len>:<bytes>` starting at a digit.
    fn bytes(&mut self) -> Result<&[u8], DecodeError> {
        let at = self.pos;
        let colon = self.find(b':')?;
        let digits = &self.buf[self.pos..colon];
        if digits.is_empty()
            || digits.len() > 6
            || (digits.len() > 1 && digits[0] == b'0')
            || !digits.iter().all(u8::is_ascii_digit)
        {
            return Err(DecodeError::BadLength(at));
        }
        // At most 6 digits: cannot overflow.
        let len = digits
            .iter()
            .fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
        let start = colon + 1;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= self.buf.len())
            .ok_or(DecodeError::Truncated(self.buf.len()))?;
        self.pos = end;
        Ok(&self.buf[start..end])
    }

    fn find(&self, byte: u8) -> Result<usize, DecodeError> {
        self.buf[self.pos..]
            .iter()
            .position(|&b| b == byte)
            .map(|i| self.pos + i)
            .ok_or(DecodeError::Truncated(self.buf.len()))
    }
}

fn parse_int(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty()
        || !digits.iter().all(u8::is_ascii_digit)
        || (digits[0] == b'0' && (digits.len() > 1 || neg))
    {
        return None;
    }
    // Accumulate negatively so i64::MIN parses.
    let mut n: i64 = 0;
    for d in digits {
        n = n.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
    }
    if neg { Some(n) } else { n.checked_neg() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let v = Value::dict()
            .with("command", "offer")
            .with("call-id", "abc@host")
            .with("n", -42i64)
            .with(
                "flags",
                vec![Value::str("strict source"), Value::str("symmetric")],
            )
            .with("nested", Value::dict().with("x", Value::List(vec![])));
        let enc = v.encode();
        assert_eq!(
            enc,
            b"d7:command5:offer7:call-id8:abc@host1:ni-42e5:flagsl13:strict source9:symmetrice6:nestedd1:xleee"
        );
        assert_eq!(Value::decode(&enc).unwrap(), v);
    }

    #[test]
    fn keeps_unsorted_keys_in_order() {
        let v = Value::decode(b"d1:bi1e1:ai2ee").unwrap();
        let keys: Vec<_> = v
            .as_dict()
            .unwrap()
            .iter()
            .map(|(k, _)| k.clone())
            .collect();
        assert_eq!(keys, vec![b"b".to_vec(), b"a".to_vec()]);
        assert_eq!(v.get("a").and_then(Value::as_int), Some(2));
    }

    #[test]
    fn integers() {
        for (s, v) in [
            (&b"i0e"[..], 0),
            (b"i-1e", -1),
            (b"i9223372036854775807e", i64::MAX),
            (b"i-9223372036854775808e", i64::MIN),
        ] {
            assert_eq!(Value::decode(s).unwrap(), Value::Int(v), "{s:?}");
            assert_eq!(Value::Int(v).encode(), s);
        }
        for s in [
            &b"i-0e"[..],
            b"i01e",
            b"ie",
            b"i-e",
            b"i1.5e",
            b"i9223372036854775808e",
            b"i+1e",
            b"i 1e",
        ] {
            assert!(
                matches!(Value::decode(s), Err(DecodeError::BadInt(0))),
                "{s:?}"
            );
        }
    }

    #[test]
    fn malformed_and_truncated() {
        use DecodeError::*;
        let cases: &[(&[u8], DecodeError)] = &[
            (b"", Truncated(0)),
            (b"d", Truncated(1)),
            (b"d3:abc", Truncated(6)),
            (b"l", Truncated(1)),
            (b"5:abc", Truncated(5)),
            (b"i12", Truncated(3)),
            (b"3", Truncated(1)),
            (b"03:abc", BadLength(0)),
            (b"-1:a", Unexpected { byte: b'-', at: 0 }),
            (b"9999999:a", BadLength(0)),
            (b"x", Unexpected { byte: b'x', at: 0 }),
            (b"di1ei2ee", KeyNotString(1)),
            (b"d1:ai1e1:ai2ee", DuplicateKey("a".into())),
            (b"i1ei2e", Trailing(3)),
            (b"le ", Trailing(1)),
            (b"1:", Truncated(2)),
        ];
        for (input, want) in cases {
            assert_eq!(Value::decode(input).as_ref(), Err(want), "{input:?}");
        }
    }

    #[test]
    fn limits() {
        let deep = [vec![b'l'; MAX_DEPTH + 1], vec![b'e'; MAX_DEPTH + 1]].concat();
        assert!(matches!(Value::decode(&deep), Err(DecodeError::TooDeep(_))));
        let ok = [vec![b'l'; MAX_DEPTH], vec![b'e'; MAX_DEPTH]].concat();
        assert!(Value::decode(&ok).is_ok());
        let big = vec![b'0'; MAX_INPUT + 1];
        assert!(matches!(Value::decode(&big), Err(DecodeError::TooLong(_))));
        // 32k empty strings in a list is within MAX_INPUT and MAX_ITEMS.
        let many = [&b"l"[..], &b"0:".repeat(30_000), b"e"].concat();
        assert!(Value::decode(&many).is_ok());
    }

    #[test]
    fn every_prefix_of_a_message_fails_cleanly() {
        let msg = Value::dict()
            .with("sdp", "v=0\r\n")
            .with("l", vec![Value::Int(-5), Value::dict().with("k", "v")])
            .encode();
        for n in 0..msg.len() {
            assert!(Value::decode(&msg[..n]).is_err(), "prefix {n} accepted");
        }
        assert!(Value::decode(&msg).is_ok());
    }

    #[test]
    fn garbage_never_panics() {
        // Deterministic xorshift fuzz: mutate valid messages and random bytes.
        let seed_msg = Value::dict()
            .with("command", "query")
            .with("x", vec![Value::Int(12), Value::str("ab")])
            .encode();
        let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        const ALPHA: &[u8] = b"ilde0123456789:-xa";
        for _ in 0..20_000 {
            let mut m = seed_msg.clone();
            for _ in 0..(next() % 4 + 1) {
                let i = (next() as usize) % m.len();
                m[i] = ALPHA[(next() as usize) % ALPHA.len()];
            }
            let _ = Value::decode(&m);
            let n = (next() % 24) as usize;
            let r: Vec<u8> = (0..n)
                .map(|_| ALPHA[(next() as usize) % ALPHA.len()])
                .collect();
            let _ = Value::decode(&r);
        }
    }
}
