//! Operations: what the SBC is doing now and has done (its status, alerts, calls in
//! progress, call detail records).

use serde_json::Value;

use super::Ctx;
use super::columns::{ALERT_COLS, CALL_COLS, CDR_COLS, CLUSTER_CALL_COLS};
use super::validation::time_param;
use crate::api::{Error, Method};
use crate::cli::{Calls, CdrFilter};

impl Ctx<'_, '_> {
    pub(super) fn status(&mut self) -> Result<(), Error> {
        self.show_get("/api/status")
    }

    pub(super) fn alerts(&mut self) -> Result<(), Error> {
        let v = self.client()?.get("/api/alerts")?;
        if !self.g.json && v.as_array().is_some_and(Vec::is_empty) {
            return self.say("no alerts");
        }
        self.list(&v, ALERT_COLS)
    }

    pub(super) fn calls(&mut self, x: Calls) -> Result<(), Error> {
        let c = self.client()?;
        match x {
            Calls::List { cluster: false } => {
                let v = c.get("/api/calls")?;
                self.list(&v, CALL_COLS)
            }
            Calls::List { cluster: true } => {
                let v = c.get("/api/cluster/calls")?;
                if self.g.json {
                    return self.print_json(&v);
                }
                let (rows, errors) = cluster_rows(&v);
                self.list(&rows, CLUSTER_CALL_COLS)?;
                for e in errors {
                    let _ = writeln!(self.io.err, "{e}");
                }
                Ok(())
            }
            Calls::Hangup { id, node: None } => {
                let v = c.json(Method::Delete, &format!("/api/calls/{id}"), &[], None)?;
                self.done(&v, &format!("hung up call {id}"))
            }
            Calls::Hangup { id, node: Some(n) } => {
                let path = format!("/api/cluster/calls/{n}/{id}");
                let v = c.json(Method::Delete, &path, &[], None)?;
                self.done(&v, &format!("hung up call {id} on {n}"))
            }
            Calls::Messages { id } => {
                let v = c.get(&format!("/api/calls/{id}/messages"))?;
                if self.g.json {
                    return self.print_json(&v);
                }
                self.write(&ladder(&v));
                Ok(())
            }
        }
    }

    pub(super) fn cdrs(&mut self, f: CdrFilter) -> Result<(), Error> {
        let c = self.client()?;
        let q = [
            ("after", num_param(f.after)),
            ("limit", num_param(f.limit)),
            ("account", num_param(f.account)),
            ("from_ms", time_param("--from", f.from.as_deref())?),
            ("to_ms", time_param("--to", f.to.as_deref())?),
            ("result", f.result.unwrap_or_default()),
        ];
        if f.csv {
            let r = c.call(Method::Get, "/api/cdrs.csv", &q, None)?;
            let _ = self.io.out.write_all(&r.body);
            return Ok(());
        }
        let v = c.json(Method::Get, "/api/cdrs", &q, None)?;
        self.list(&v, CDR_COLS)?;
        // A full page: tell people how to get the next one (scripts use the ids).
        if !self.g.json
            && let (Some(limit), Some(rows)) = (f.limit, v.as_array())
            && rows.len() as u64 >= limit
            && let Some(last) = rows
                .last()
                .and_then(|r| r.get("id"))
                .and_then(Value::as_u64)
        {
            let _ = writeln!(self.io.err, "more may follow: --after {last}");
        }
        Ok(())
    }
}

/// A call's messages, one line each: time, leg, direction, peers, first line.
fn ladder(v: &Value) -> String {
    let mut out = String::new();
    for m in v["messages"].as_array().into_iter().flatten() {
        let s = |k: &str| m[k].as_str().unwrap_or("");
        out += &format!(
            "{} {:<6} {:<3} {} {} -> {}  {}\n",
            super::follow::clock(m["at_ms"].as_u64().unwrap_or(0)),
            s("leg"),
            s("dir"),
            s("transport"),
            s("from"),
            s("to"),
            s("first_line"),
        );
    }
    if out.is_empty() {
        out = "no messages kept for this call\n".into();
    }
    out
}

/// A number as a query value; empty (left out of the query) when absent.
pub(super) fn num_param(n: Option<u64>) -> String {
    n.map(|n| n.to_string()).unwrap_or_default()
}

/// `GET /api/cluster/calls` as one list of calls, each with its `node`, and a line for each
/// node that gave no list.
fn cluster_rows(v: &Value) -> (Value, Vec<String>) {
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for n in v.as_array().into_iter().flatten() {
        let node = n["node"].as_str().unwrap_or("?");
        if let Some(e) = n["error"].as_str() {
            errors.push(format!("{node}: {e}"));
        }
        for call in n["calls"].as_array().into_iter().flatten() {
            let mut call = call.clone();
            if let Some(o) = call.as_object_mut() {
                o.insert("node".into(), Value::String(node.to_owned()));
            }
            rows.push(call);
        }
    }
    (Value::Array(rows), errors)
}
