//! CDRs (R): filtered list as JSON or CSV.

use axum::Json;
use axum::extract::State as Extract;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::api::error::{ApiError, ApiResult, Query};
use crate::api::{Caller, State, blocking};
use crate::mgmt::Visible;
use crate::store::{Cdr, Id, Store};

const KNOWN: [&str; 6] = ["after", "limit", "account", "from_ms", "to_ms", "result"];
const BATCH: usize = 1000;

/// A CDR as the API lists it (JSON) and exports it (one CSV row, same columns in this order).
#[derive(Debug, Clone, Serialize)]
pub struct CdrView {
    /// The store's id: increasing in the order CDRs were written, so `after=<id>` pages.
    pub id: Id,
    /// The caller's (A leg's) Call-ID.
    pub call_id: String,
    /// INVITE received, Unix milliseconds.
    pub start_ms: u64,
    /// Answered, Unix milliseconds; `None` when the call was never answered.
    pub answer_ms: Option<u64>,
    /// Ended, Unix milliseconds.
    pub end_ms: u64,
    /// Calling number: the user part of the caller's From (from the network: untrusted text).
    pub caller: String,
    /// Called number: the user part of the Request-URI (from the network: untrusted text).
    pub callee: String,
    /// Where the caller's SIP came from.
    pub source: Option<std::net::SocketAddr>,
    /// The account the call was authenticated as; `None` when refused before that.
    pub account_id: Option<Id>,
    /// The upstream connection of the last attempt; `None` when no upstream was tried.
    pub connection_id: Option<Id>,
    /// Final SIP status sent to the caller (200 for an answered call).
    pub result_code: u16,
    /// Why: a Reason/Warning text or the pipeline stage that refused the call.
    pub reason: String,
    /// Seconds from answer to end, rounded up; 0 for an unanswered call.
    pub duration_secs: u64,
    /// Decimal currency ("0.03").
    pub cost: String,
    /// Who ended the call: `caller`, `callee`, `sbc` or `staff:<username>`; `None` for a
    /// CDR written before this was recorded.
    pub hung_up_by: Option<String>,
}

/// `c` as `visible` may see it: a customer sees its own account's users by name, staff only
/// as `staff` (their usernames are none of its business).
fn view_for(c: &Cdr, visible: Visible) -> CdrView {
    let mut v = view(c);
    v.hung_up_by = v.hung_up_by.map(|by| hung_up_by_for(by, visible));
    v
}

/// `hung_up_by` (`staff:<username>`, or `staff:<username> (account #N)` for a customer's
/// user) as `visible` may see it.
fn hung_up_by_for(by: String, visible: Visible) -> String {
    match visible {
        Visible::Account(a)
            if by.starts_with("staff:") && !by.ends_with(&format!("(account #{a})")) =>
        {
            "staff".into()
        }
        _ => by,
    }
}

fn view(c: &Cdr) -> CdrView {
    let d = &c.call;
    CdrView {
        id: c.id,
        call_id: d.call_id.clone(),
        start_ms: d.start_ms,
        answer_ms: d.answer_ms,
        end_ms: d.end_ms,
        caller: d.caller.clone(),
        callee: d.callee.clone(),
        source: d.source,
        account_id: d.account_id,
        connection_id: d.connection_id,
        result_code: d.result_code,
        reason: d.reason.clone(),
        duration_secs: d.duration_secs,
        cost: d.cost.to_string(),
        hung_up_by: d.hung_up_by.clone(),
    }
}

#[derive(Debug, Clone, Copy)]
enum ResultFilter {
    Answered,
    Failed,
    Code(u16),
}

#[derive(Debug, Clone)]
struct Filter {
    after: Id,
    limit: usize,
    account: Option<Id>,
    from_ms: Option<u64>,
    to_ms: Option<u64>,
    result: Option<ResultFilter>,
    /// What the caller may see (a customer: its account's CDRs, whatever `account` says).
    visible: Visible,
}

impl Filter {
    fn parse(
        q: &Query,
        visible: Visible,
        default_limit: usize,
        max_limit: usize,
    ) -> ApiResult<Filter> {
        q.only(&KNOWN)?;
        let limit = q.get::<usize>("limit")?.unwrap_or(default_limit);
        if !(1..=max_limit).contains(&limit) {
            return Err(ApiError::invalid("limit", format!("1..={max_limit}")));
        }
        let result = match q.0.get("result").map(|s| s.trim()) {
            None | Some("") => None,
            Some("answered") => Some(ResultFilter::Answered),
            Some("failed") => Some(ResultFilter::Failed),
            Some(c) => Some(ResultFilter::Code(
                c.parse()
                    .ok()
                    .filter(|c| (100..700).contains(c))
                    .ok_or_else(|| {
                        ApiError::invalid("result", "answered, failed or a SIP status code")
                    })?,
            )),
        };
        Ok(Filter {
            after: q.get("after")?.unwrap_or(0),
            limit,
            account: q.get("account")?,
            from_ms: q.get("from_ms")?,
            to_ms: q.get("to_ms")?,
            result,
            visible,
        })
    }

    fn matches(&self, c: &Cdr) -> bool {
        let d = &c.call;
        self.visible.shows(d.account_id)
            && self.account.is_none_or(|a| d.account_id == Some(a))
            && self.from_ms.is_none_or(|f| d.start_ms >= f)
            && self.to_ms.is_none_or(|t| d.start_ms < t)
            && match self.result {
                None => true,
                Some(ResultFilter::Answered) => d.answer_ms.is_some(),
                Some(ResultFilter::Failed) => d.answer_ms.is_none(),
                Some(ResultFilter::Code(code)) => d.result_code == code,
            }
    }

    /// Oldest first, from `after`, until `limit` matched or the log ends.
    fn run(&self, store: &Store) -> Vec<Cdr> {
        let mut out = Vec::new();
        let mut cursor = self.after;
        loop {
            let batch = store.cdrs(cursor, BATCH);
            let n = batch.len();
            for r in batch {
                match r {
                    Ok(c) => {
                        cursor = c.id;
                        if self.matches(&c) {
                            out.push(c);
                            if out.len() >= self.limit {
                                return out;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping an unreadable CDR");
                        cursor += 1;
                    }
                }
            }
            if n < BATCH {
                return out;
            }
        }
    }
}

/// `GET /api/cdrs` (View; a customer's narrowed to its account): CDRs oldest first, filtered by `after` (id), `account`,
/// `from_ms`/`to_ms` (start time, Unix ms, end exclusive), `result` (`answered`, `failed` or a
/// status code) and `limit` (1..=10000, default 100).
pub async fn list(
    c: Caller,
    Extract(st): Extract<State>,
    q: Query,
) -> ApiResult<Json<Vec<CdrView>>> {
    let f = Filter::parse(&q, c.visible, 100, 10_000)?;
    blocking(&st, move |s| {
        Ok(Json(
            f.run(s.store())
                .iter()
                .map(|d| view_for(d, c.visible))
                .collect(),
        ))
    })
    .await
}

/// A CSV field: quoted when needed, and prefixed with `'` when it starts with `=`, `+`,
/// `-`, `@`, tab or CR, which a spreadsheet may run as a formula (caller IDs and reasons come
/// from the network). No exception for `+`/`-` before a digit: `-2+3+cmd|' /C calc'!A0` is
/// a formula too. An E.164 number shows as `'+44…`, which spreadsheets display as text.
fn field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// The CSV export of `rows`: a header line, then one line per CDR, every cell quoted as needed and
/// guarded against spreadsheet formula injection.
pub fn to_csv(rows: &[CdrView]) -> String {
    let mut out = String::from(
        "id,call_id,start_ms,answer_ms,end_ms,caller,callee,source,account_id,connection_id,result_code,reason,duration_secs,cost,hung_up_by\n",
    );
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    for r in rows {
        let cols = [
            r.id.to_string(),
            r.call_id.clone(),
            r.start_ms.to_string(),
            opt(r.answer_ms),
            r.end_ms.to_string(),
            r.caller.clone(),
            r.callee.clone(),
            r.source.map(|s| s.to_string()).unwrap_or_default(),
            opt(r.account_id),
            opt(r.connection_id),
            r.result_code.to_string(),
            r.reason.clone(),
            r.duration_secs.to_string(),
            r.cost.clone(),
            r.hung_up_by.clone().unwrap_or_default(),
        ];
        // Every cell, not only the ones known to come from the network: a column that is
        // a number today is no promise about tomorrow's.
        let cols: Vec<String> = cols.iter().map(|c| field(c)).collect();
        out.push_str(&cols.join(","));
        out.push('\n');
    }
    out
}

/// `GET /api/cdrs.csv` (View): the same filters as `/api/cdrs` with `limit` up to 1000000 (default
/// 100000), as a `cdrs.csv` attachment.
pub async fn csv(c: Caller, Extract(st): Extract<State>, q: Query) -> ApiResult<Response> {
    let f = Filter::parse(&q, c.visible, 100_000, 1_000_000)?;
    let body = blocking(&st, move |s| {
        let rows: Vec<CdrView> = f
            .run(s.store())
            .iter()
            .map(|d| view_for(d, c.visible))
            .collect();
        Ok(to_csv(&rows))
    })
    .await?;
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"cdrs.csv\""),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customers_see_staff_who_hung_up_without_a_name() {
        let a = Visible::Account(7);
        let by = |s: &str, v| hung_up_by_for(s.to_owned(), v);
        assert_eq!(by("staff:admin", a), "staff");
        assert_eq!(by("staff:bob (account #8)", a), "staff");
        assert_eq!(
            by("staff:alice (account #7)", a),
            "staff:alice (account #7)"
        );
        assert_eq!(by("caller", a), "caller");
        assert_eq!(by("staff:admin", Visible::All), "staff:admin");
    }

    #[test]
    fn csv_fields() {
        for (cell, out) in [
            ("=cmd()", "'=cmd()"),
            ("+4420", "'+4420"),
            ("-x", "'-x"),
            ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "\"'\r=1\""),
            ("4420", "4420"),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("", ""),
        ] {
            assert_eq!(field(cell), out, "{cell:?}");
        }
    }
}
