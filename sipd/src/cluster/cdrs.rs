//! CDRs to the capped stream `<prefix>:cdrs` (`XADD ... MAXLEN ~ cdr_stream_max`), once the
//! local settle (debit, CDR) is durable: the node's store stays the record, the stream is
//! for a billing system to consume (with `XREAD` or a consumer group).
//!
//! Each entry's fields, all strings: `node` (the node that handled the call), `cdr_id` (the
//! CDR's id in that node's store), `call_id`, `start_ms`, `answer_ms` (empty: never
//! answered), `end_ms` (Unix ms), `caller`, `callee`, `source` (`ip:port`, may be empty),
//! `account_id` and `connection_id` (the node's ids, may be empty), `account` and
//! `connection` (their names when the CDR was streamed, may be empty), `result_code` (the
//! final SIP status sent to the caller), `reason`, `duration_secs` (billed seconds),
//! `cost_micros` (what was debited, in millionths of the currency unit: an integer),
//! `hung_up_by`. The entry id is Redis's (`<ms>-<seq>`).
//!
//! Delivery is at least once: an `XADD` whose answer was lost (Redis away at that moment) is
//! sent again, so a consumer dedups on (`node`, `cdr_id`). While Redis is away the CDRs wait
//! in memory (at most `cdr_stream_max`; past it the oldest are dropped, counted) and go when
//! it is back; a restart loses what was waiting (the store still has them: `sipd cdrs
//! export`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use fred::interfaces::StreamsInterface;
use sipd_core::records::Cdr;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tracing::warn;

use super::{COMMAND_TIMEOUT, Cluster};

/// The names of a CDR's account and connection, as the store has them now.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Names {
    /// The account's name; empty without an account (or when it is gone).
    pub account: String,
    /// The upstream connection's name; likewise.
    pub connection: String,
}

/// Looks up the names of `cdr`'s account and connection in the node's store.
fn names(c: &Cluster, cdr: &Cdr) -> Names {
    let account = cdr
        .call
        .account_id
        .and_then(|id| c.store.account(id).ok().flatten())
        .map(|a| a.name)
        .unwrap_or_default();
    let connection = cdr
        .call
        .connection_id
        .and_then(|id| c.store.connection(id).ok().flatten())
        .map(|x| x.name)
        .unwrap_or_default();
    Names {
        account,
        connection,
    }
}

/// The stream entry's fields for `cdr` handled by `node`.
pub fn fields(node: &str, cdr: &Cdr, names: &Names) -> Vec<(&'static str, String)> {
    let opt = |v: Option<String>| v.unwrap_or_default();
    let c = &cdr.call;
    vec![
        ("node", node.to_owned()),
        ("cdr_id", cdr.id.to_string()),
        ("call_id", c.call_id.clone()),
        ("start_ms", c.start_ms.to_string()),
        ("answer_ms", opt(c.answer_ms.map(|v| v.to_string()))),
        ("end_ms", c.end_ms.to_string()),
        ("caller", c.caller.clone()),
        ("callee", c.callee.clone()),
        ("source", opt(c.source.map(|v| v.to_string()))),
        ("account_id", opt(c.account_id.map(|v| v.to_string()))),
        ("connection_id", opt(c.connection_id.map(|v| v.to_string()))),
        ("account", names.account.clone()),
        ("connection", names.connection.clone()),
        ("result_code", c.result_code.to_string()),
        ("reason", c.reason.clone()),
        ("duration_secs", c.duration_secs.to_string()),
        ("cost_micros", c.cost.0.to_string()),
        ("hung_up_by", opt(c.hung_up_by.clone())),
    ]
}

async fn xadd(c: &Cluster, cdr: &Cdr, names: &Names) -> Result<(), String> {
    let max = i64::try_from(c.cfg.cdr_stream_max).unwrap_or(i64::MAX);
    let fut = c.client.xadd::<String, _, _, _, _>(
        c.key("cdrs"),
        false,
        ("MAXLEN", "~", max, None::<i64>),
        "*",
        fields(&c.node, cdr, names),
    );
    match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {COMMAND_TIMEOUT:?}")),
    }
}

/// Starts the streamer; the store writer sends each durable CDR to what it returns.
pub fn spawn(c: Arc<Cluster>) -> UnboundedSender<Cdr> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(run(c, rx));
    tx
}

async fn run(c: Arc<Cluster>, mut rx: UnboundedReceiver<Cdr>) {
    let cap = usize::try_from(c.cfg.cdr_stream_max).unwrap_or(usize::MAX);
    let mut waiting: VecDeque<Cdr> = VecDeque::new();
    let mut status = c.status();
    loop {
        if waiting.is_empty() || !c.is_up() {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(cdr) => waiting.push_back(cdr),
                    None => return,
                },
                r = status.changed() => if r.is_err() { return },
            }
        }
        while let Ok(cdr) = rx.try_recv() {
            waiting.push_back(cdr);
        }
        while waiting.len() > cap {
            waiting.pop_front();
            c.counts.cdrs_dropped.fetch_add(1, Ordering::Relaxed);
        }
        while c.is_up() {
            let Some(cdr) = waiting.front() else { break };
            // A store read, cached by sled: the names are read when the CDR goes.
            let n = names(&c, cdr);
            match xadd(&c, cdr, &n).await {
                Ok(()) => {
                    waiting.pop_front();
                    c.counts.cdrs_streamed.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    warn!(error = %e, waiting = waiting.len(), "cluster: CDR not added to the stream; it waits for Redis");
                    c.counts.write_failures.fetch_add(1, Ordering::Relaxed);
                    c.set_status(super::Status::Down);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_named_and_money_is_an_integer() {
        let call = sipd_core::records::CdrDraft {
            call_id: "a@b".into(),
            start_ms: 1,
            answer_ms: None,
            end_ms: 3,
            caller: "441".into(),
            callee: "331".into(),
            source: None,
            account_id: Some(7),
            connection_id: None,
            result_code: 486,
            reason: "busy".into(),
            duration_secs: 0,
            cost: sipd_core::records::Micros(1_500_000),
            hung_up_by: Some("callee".into()),
        };
        let cdr = Cdr { id: 42, call };
        let names = Names {
            account: "acme".into(),
            connection: String::new(),
        };
        let f = fields("n1", &cdr, &names);
        assert_eq!(f.len(), 18);
        assert!(f.contains(&("cdr_id", "42".into())));
        assert!(f.contains(&("account", "acme".into())));
        assert!(f.contains(&("connection", String::new())));
        assert!(f.contains(&("cost_micros", "1500000".into())));
        assert!(f.contains(&("answer_ms", String::new())));
        assert!(f.contains(&("node", "n1".into())));
    }
}
