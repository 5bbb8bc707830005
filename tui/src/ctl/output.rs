//! What commands print: the API's JSON with `--json`, otherwise tables, `key: value` lines
//! and short sentences for people.

use serde_json::Value;

use super::Ctx;
use crate::api::Error;
use crate::table::{self, Table};

impl Ctx<'_, '_> {
    pub(super) fn say(&mut self, text: &str) -> Result<(), Error> {
        let _ = writeln!(self.io.out, "{text}");
        Ok(())
    }

    pub(super) fn print_json(&mut self, v: &Value) -> Result<(), Error> {
        if !v.is_null() {
            let _ = writeln!(
                self.io.out,
                "{}",
                serde_json::to_string_pretty(v).expect("serialises")
            );
        }
        Ok(())
    }

    /// One object: JSON, or `key: value` lines.
    pub(super) fn show(&mut self, v: &Value) -> Result<(), Error> {
        if self.g.json {
            return self.print_json(v);
        }
        self.key_values(v);
        Ok(())
    }

    /// The object at `path`, shown.
    pub(super) fn show_get(&mut self, path: &str) -> Result<(), Error> {
        let v = self.client()?.get(path)?;
        self.show(&v)
    }

    /// A list: JSON, or a table.
    pub(super) fn list(&mut self, v: &Value, cols: &[table::Col]) -> Result<(), Error> {
        if self.g.json {
            return self.print_json(v);
        }
        self.write(&Table::from_json(v, cols).render());
        Ok(())
    }

    /// The result of a change: JSON (none for 204), or `done` (and the object, if any).
    pub(super) fn done(&mut self, v: &Value, what: &str) -> Result<(), Error> {
        self.answer(v, what)?;
        if !self.g.json && v.is_object() {
            self.key_values(v);
        }
        Ok(())
    }

    /// The result of a change told in one line: JSON, or the line.
    pub(super) fn answer(&mut self, v: &Value, line: &str) -> Result<(), Error> {
        if self.g.json {
            return self.print_json(v);
        }
        self.say(line)
    }

    pub(super) fn key_values(&mut self, v: &Value) {
        self.write(&table::key_values(v));
    }

    pub(super) fn write(&mut self, text: &str) {
        let _ = self.io.out.write_all(text.as_bytes());
    }

    /// A password strength estimate `{"score", "guesses_log10", "warning", "suggestions"}`.
    pub(super) fn strength(&mut self, s: Option<&Value>) -> Result<(), Error> {
        let Some(s) = s else { return Ok(()) };
        if let Some(score) = s.get("score").and_then(Value::as_u64) {
            self.say(&format!("strength: {score}/4"))?;
        }
        if let Some(w) = s
            .get("warning")
            .and_then(Value::as_str)
            .filter(|w| !w.is_empty())
        {
            self.say(&format!("warning: {w}"))?;
        }
        for x in s
            .get("suggestions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(x) = x.as_str() {
                self.say(&format!("suggestion: {x}"))?;
            }
        }
        Ok(())
    }
}

/// `created <what> <id>`, or without the id when the reply has none.
pub(super) fn created(what: &str, v: &Value) -> String {
    match v.get("id") {
        Some(id) => format!("created {what} {id}"),
        None => format!("created {what}"),
    }
}
