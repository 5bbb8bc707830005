//! Output for people: aligned tables, `key: value` listings of objects, UTC times.

use serde_json::Value;

/// How a column shows its JSON value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fmt {
    /// Strings as they are, numbers, `yes`/`no`, lists joined with `,`, null as `-`.
    Plain,
    /// Unix milliseconds as `YYYY-MM-DD HH:MM:SS` (UTC).
    Time,
    /// Like `Plain`, but null shows as this word (e.g. `permanent` for a ban without end).
    NullAs(&'static str),
}

/// A column: its header, the value's key (`a.b` reaches into objects) and its format.
#[derive(Debug, Clone, Copy)]
pub struct Col {
    /// Column heading.
    pub header: &'static str,
    /// The JSON key (a dotted path) of the value.
    pub key: &'static str,
    /// How the value is shown.
    pub fmt: Fmt,
}

/// A column shown as the value is.
pub const fn col(header: &'static str, key: &'static str) -> Col {
    Col {
        header,
        key,
        fmt: Fmt::Plain,
    }
}

/// A column of Unix-ms times, shown as UTC dates.
pub const fn time(header: &'static str, key: &'static str) -> Col {
    Col {
        header,
        key,
        fmt: Fmt::Time,
    }
}

/// A plain column whose null value means something (shown as `null`, not `-`).
pub const fn or_null(header: &'static str, key: &'static str, null: &'static str) -> Col {
    Col {
        header,
        key,
        fmt: Fmt::NullAs(null),
    }
}

/// A table of text cells, rendered with every column as wide as its widest cell.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these headings.
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Table {
        Table {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows of a JSON array (anything else is one row).
    pub fn from_json(rows: &Value, cols: &[Col]) -> Table {
        let mut t = Table::new(cols.iter().map(|c| c.header));
        let one = std::slice::from_ref(rows);
        let items = rows.as_array().map(Vec::as_slice).unwrap_or(one);
        for item in items {
            t.row(
                cols.iter()
                    .map(|c| format_value(get(item, c.key), c.fmt))
                    .collect(),
            );
        }
        t
    }

    /// Header, then rows; two spaces between columns, no trailing spaces. An empty table
    /// says `(none)` under its header.
    pub fn render(&self) -> String {
        let n = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.headers.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0; n];
        for r in std::iter::once(&self.headers).chain(&self.rows) {
            for (i, c) in r.iter().enumerate() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |cells: &[String]| {
            let mut l = String::new();
            for (i, c) in cells.iter().enumerate() {
                if i > 0 {
                    l.push_str("  ");
                }
                l.push_str(c);
                if i + 1 < cells.len() {
                    l.extend(std::iter::repeat_n(' ', widths[i] - c.chars().count()));
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(&self.headers);
        for r in &self.rows {
            line(r);
        }
        if self.rows.is_empty() {
            out.push_str("(none)\n");
        }
        out
    }
}

/// `a.b.c` inside nested objects; missing is `null`.
pub fn get<'a>(v: &'a Value, key: &str) -> &'a Value {
    key.split('.')
        .try_fold(v, |v, k| v.get(k))
        .unwrap_or(&Value::Null)
}

/// One JSON value as a table cell.
pub fn format_value(v: &Value, fmt: Fmt) -> String {
    match (v, fmt) {
        (Value::Number(n), Fmt::Time) => match n.as_u64() {
            Some(ms) => format_ms(ms),
            None => n.to_string(),
        },
        (Value::Null, Fmt::NullAs(word)) => word.into(),
        (Value::Null, _) => "-".into(),
        (Value::Bool(b), _) => if *b { "yes" } else { "no" }.into(),
        (Value::String(s), _) if s.is_empty() => "-".into(),
        (Value::String(s), _) => s.clone(),
        (Value::Number(n), _) => n.to_string(),
        (Value::Array(a), _) if a.is_empty() => "-".into(),
        (Value::Array(a), _) => a
            .iter()
            .map(|x| format_value(x, Fmt::Plain))
            .collect::<Vec<_>>()
            .join(","),
        (Value::Object(o), _) => {
            // A one-key object such as {"prefix": "44"} reads as `prefix 44`.
            if o.len() == 1 {
                let (k, v) = o.iter().next().expect("one");
                format!("{k} {}", format_value(v, Fmt::Plain))
            } else {
                v.to_string()
            }
        }
    }
}

/// An object as `key: value` lines, nested objects flattened to `a.b`, keys aligned; keys
/// ending in `_ms` are shown as times. Non-objects print as themselves.
pub fn key_values(v: &Value) -> String {
    let mut pairs = Vec::new();
    flatten("", v, &mut pairs);
    let w = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        if k.is_empty() {
            out.push_str(&v);
        } else {
            out.push_str(format!("{k:<w$}  {v}").trim_end());
        }
        out.push('\n');
    }
    out
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(o) if !o.is_empty() && (prefix.is_empty() || o.len() > 1) => {
            for (k, x) in o {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, x, out);
            }
        }
        _ => {
            let fmt = if prefix.ends_with("_ms") {
                Fmt::Time
            } else {
                Fmt::Plain
            };
            let key = if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}:")
            };
            out.push((key, format_value(v, fmt)));
        }
    }
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn format_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// A time for `--from`/`--to`: Unix milliseconds, or `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS]`
/// (also with a space instead of `T`, and an optional `Z`), taken as UTC.
pub fn parse_time(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map_err(|_| format!("{s}: too large"));
    }
    let bad = || {
        format!(
            "{s}: expected Unix milliseconds or a UTC time like 2026-05-01 or 2026-05-01T13:45[:00]"
        )
    };
    let t = t.strip_suffix('Z').unwrap_or(t);
    let (date, clock) = match t.split_once(['T', ' ']) {
        Some((d, c)) => (d, Some(c)),
        None => (t, None),
    };
    let num = |x: &str, lo: u32, hi: u32| -> Result<u32, String> {
        match x.parse::<u32>() {
            Ok(n) if (lo..=hi).contains(&n) && x.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => Err(bad()),
        }
    };
    let d: Vec<&str> = date.split('-').collect();
    let [y, mo, da] = d.as_slice() else {
        return Err(bad());
    };
    let (y, mo, da) = (num(y, 1970, 9999)?, num(mo, 1, 12)?, num(da, 1, 31)?);
    let mut secs = 0u64;
    if let Some(c) = clock {
        let parts: Vec<&str> = c.split(':').collect();
        let (h, mi, se) = match parts.as_slice() {
            [h, m] => (num(h, 0, 23)?, num(m, 0, 59)?, 0),
            [h, m, s] => (num(h, 0, 23)?, num(m, 0, 59)?, num(s, 0, 60)?),
            _ => return Err(bad()),
        };
        secs = u64::from(h) * 3600 + u64::from(mi) * 60 + u64::from(se);
    }
    let days = days_from_civil(i64::from(y), mo, da);
    if civil_from_days(days) != (i64::from(y), mo, da) {
        return Err(format!("{s}: no such date"));
    }
    Ok((days as u64 * 86_400 + secs) * 1000)
}

// Howard Hinnant's algorithms (proleptic Gregorian, days since 1970-01-01).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(["ID", "NAME", "BALANCE"]);
        t.row(vec!["1".into(), "acme".into(), "10.00".into()]);
        t.row(vec![
            "12".into(),
            "a-much-longer-name".into(),
            "0.50".into(),
        ]);
        assert_eq!(
            t.render(),
            "ID  NAME                BALANCE\n\
             1   acme                10.00\n\
             12  a-much-longer-name  0.50\n"
        );
    }

    #[test]
    fn empty_table_and_unicode_width() {
        let t = Table::new(["ID", "NAME"]);
        assert_eq!(t.render(), "ID  NAME\n(none)\n");
        let mut t = Table::new(["N", "X"]);
        t.row(vec!["Zürich".into(), "1".into()]);
        t.row(vec!["a".into(), String::new()]);
        assert_eq!(t.render(), "N       X\nZürich  1\na\n");
    }

    #[test]
    fn table_from_json() {
        let rows = json!([
            {"id": 1, "name": "acme", "enabled": true, "sip": {"username": "u1"},
             "cld_prefixes": ["44", "33"], "started_ms": 0, "cli": {"prefix": "44"}},
            {"id": 2, "name": "beta", "enabled": false, "sip": null,
             "cld_prefixes": [], "started_ms": 1_700_000_000_123u64, "cli": null}
        ]);
        let cols = [
            col("ID", "id"),
            col("NAME", "name"),
            col("ON", "enabled"),
            col("SIP USER", "sip.username"),
            col("CLD", "cld_prefixes"),
            time("STARTED", "started_ms"),
            col("CLI", "cli"),
        ];
        assert_eq!(
            Table::from_json(&rows, &cols).render(),
            "ID  NAME  ON   SIP USER  CLD    STARTED              CLI\n\
             1   acme  yes  u1        44,33  1970-01-01 00:00:00  prefix 44\n\
             2   beta  no   -         -      2023-11-14 22:13:20  -\n"
        );
    }

    #[test]
    fn null_as_a_word() {
        let rows = json!([{"addr": "192.0.2.1", "remaining_secs": null},
                          {"addr": "192.0.2.2", "remaining_secs": 60}]);
        let cols = [
            col("ADDRESS", "addr"),
            or_null("REMAINING", "remaining_secs", "permanent"),
        ];
        assert_eq!(
            Table::from_json(&rows, &cols).render(),
            "ADDRESS    REMAINING\n192.0.2.1  permanent\n192.0.2.2  60\n"
        );
    }

    #[test]
    fn key_value_listing() {
        let v = json!({"id": 3, "username": "ops", "expires_ms": 86_400_000,
                       "core": {"a": 1, "b": "x"}, "sip": {"username": "u"}, "none": null});
        assert_eq!(
            key_values(&v),
            "core.a:      1\n\
             core.b:      x\n\
             expires_ms:  1970-01-02 00:00:00\n\
             id:          3\n\
             none:        -\n\
             sip:         username u\n\
             username:    ops\n"
        );
        assert_eq!(key_values(&json!("text")), "text\n");
    }

    #[test]
    fn times() {
        assert_eq!(format_ms(0), "1970-01-01 00:00:00");
        assert_eq!(format_ms(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(parse_time("1700000000123").unwrap(), 1_700_000_000_123);
        assert_eq!(parse_time("2000-02-29").unwrap(), 951_782_400_000);
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(parse_time("2023-11-14 22:13").unwrap(), 1_699_999_980_000);
        for bad in [
            "",
            "2023-02-30",
            "2023-13-01",
            "yesterday",
            "2023-1-1x",
            "2023-11-14T25:00",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        for days in [-1000i64, 0, 59, 60, 11_016, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
