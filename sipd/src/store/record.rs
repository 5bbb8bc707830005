//! How records are laid out on disk: `{"v": VERSION, "d": …}` in JSON.
//!
//! JSON rather than postcard: these trees are small (CDRs are the bulk, at a few hundred bytes
//! each), and a self-describing format means a damaged or old record can still be read with
//! any tool during an incident, new optional fields need no migration, and `sipd export` is
//! a straight translation. postcard would save space but turn every schema change into a
//! migration and every corrupted byte into an opaque failure.

use serde::{Deserialize, Serialize};

use super::{Record, StoreError};

#[derive(Serialize)]
struct Out<'a, T> {
    v: u32,
    d: &'a T,
}

#[derive(Deserialize)]
struct In {
    v: u32,
    d: serde_json::Value,
}

pub(crate) fn encode<T: Record>(record: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(&Out {
        v: T::VERSION,
        d: record,
    })
    .map_err(|e| StoreError::Encode {
        kind: T::KIND,
        reason: e.to_string(),
    })
}

pub(crate) fn decode<T: Record>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        kind: T::KIND,
        key: key_text(key),
        reason,
    };
    let env: In = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    let body = match env.v {
        v if v == T::VERSION => env.d,
        v if v < T::VERSION => T::upgrade(v, env.d).map_err(corrupt)?,
        v => {
            return Err(StoreError::NewerVersion {
                kind: T::KIND,
                key: key_text(key),
                found: v,
                supported: T::VERSION,
            });
        }
    };
    serde_json::from_value(body).map_err(|e| corrupt(e.to_string()))
}

/// Keys are big-endian ids (shown as numbers) or id + name; either way printable in errors.
pub(crate) fn key_text(key: &[u8]) -> String {
    match key.len() {
        8 => u64::from_be_bytes(key.try_into().unwrap_or([0; 8])).to_string(),
        n if n > 8 => format!(
            "{}/{}",
            u64::from_be_bytes(key[..8].try_into().unwrap_or([0; 8])),
            String::from_utf8_lossy(&key[8..])
        ),
        _ => String::from_utf8_lossy(key).into_owned(),
    }
}
