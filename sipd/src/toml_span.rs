//! Turning positions in a TOML file into what an operator can act on: line and column of a
//! byte offset, and of the value at a dotted key path.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// A position in a file, 1-based, columns in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1, counted in characters (not bytes).
    pub column: usize,
}

impl Location {
    /// The place of byte `offset` in `src` (clamped to its end and to a character boundary), as
    /// TOML parse errors report it.
    pub fn of(src: &str, offset: usize) -> Location {
        let mut offset = offset.min(src.len());
        while !src.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &src[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            line,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Where the value at `path` (`media.port_min`, `account.2.rule.0.remote`) is written, if
/// the document writes it. Numeric segments index arrays (including arrays of tables).
pub fn locate(src: &str, path: &str) -> Option<Location> {
    fn step<'a, 'i>(v: &'a DeValue<'i>, seg: &str) -> Option<&'a Spanned<DeValue<'i>>> {
        match (v, seg.parse::<usize>()) {
            (DeValue::Array(a), Ok(i)) => a.get(i),
            (DeValue::Table(t), _) => t
                .iter()
                .find(|(name, _)| name.get_ref().as_ref() == seg)
                .map(|(_, v)| v),
            _ => None,
        }
    }
    let doc = DeTable::parse(src).ok()?;
    let mut segs = path.split('.');
    let first = segs.next()?;
    let mut cur = doc
        .get_ref()
        .iter()
        .find(|(name, _)| name.get_ref().as_ref() == first)
        .map(|(_, v)| v)?;
    for seg in segs {
        cur = step(cur.get_ref(), seg)?;
    }
    Some(Location::of(src, cur.span().start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_counts_characters_not_bytes() {
        assert_eq!(
            Location::of("é = 1\nab", 8),
            Location { line: 2, column: 2 }
        );
        assert_eq!(Location::of("x", 99), Location { line: 1, column: 2 });
        assert_eq!(Location::of("é", 1), Location { line: 1, column: 1 });
    }

    #[test]
    fn locates_keys_and_array_elements() {
        let src = "a = 1\n[[t]]\nx = 1\n[[t]]\nx = 2\n[[t.r]]\ny = \"v\"\n";
        assert_eq!(locate(src, "a"), Some(Location { line: 1, column: 5 }));
        assert_eq!(locate(src, "t.1.x"), Some(Location { line: 5, column: 5 }));
        assert_eq!(
            locate(src, "t.1.r.0.y"),
            Some(Location { line: 7, column: 5 })
        );
        assert_eq!(locate(src, "t.2"), None);
        assert_eq!(locate(src, "nope"), None);
    }
}
