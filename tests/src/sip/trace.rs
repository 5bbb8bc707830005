//! sipp's message trace (`-trace_msg`) read back: each message it sent or received, and the
//! questions scenarios ask of them.

use std::collections::BTreeMap;

/// One SIP message as sipp traced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    /// Whether sipp received it (else it sent it).
    pub received: bool,
    /// The message as traced, trailing blank lines trimmed.
    pub text: String,
}

impl Msg {
    /// The request or status line, without its line ending.
    pub fn first_line(&self) -> &str {
        self.text.lines().next().unwrap_or("").trim_end()
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        let l = self.first_line().strip_prefix("SIP/2.0 ")?;
        l.get(..3)?.parse().ok()
    }

    /// The method of a request.
    pub fn method(&self) -> Option<&str> {
        let l = self.first_line();
        if l.starts_with("SIP/2.0") {
            return None;
        }
        l.split(' ').next()
    }

    /// First value of a header (case-insensitive name, compact forms not expanded).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers(name).into_iter().next()
    }

    /// Every value of a header, in order.
    pub fn headers(&self, name: &str) -> Vec<&str> {
        self.text
            .lines()
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .filter_map(move |l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
            })
            .collect()
    }

    /// The CSeq method.
    pub fn cseq_method(&self) -> Option<&str> {
        self.header("CSeq")?.split_whitespace().nth(1)
    }

    /// The body: everything after the first blank line, empty when there is none.
    pub fn body(&self) -> &str {
        self.text
            .split_once("\r\n\r\n")
            .or_else(|| self.text.split_once("\n\n"))
            .map_or("", |(_, b)| b)
    }
}

/// A sipp message trace (`-trace_msg`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    /// The messages in the order sipp traced them.
    pub msgs: Vec<Msg>,
}

impl Trace {
    /// Reads a `-trace_msg` file's text; blocks that are not a sent or received message are
    /// skipped.
    pub fn parse(text: &str) -> Trace {
        let mut msgs = Vec::new();
        for block in text.split("----------------------------------------------- ") {
            let mut lines = block.splitn(3, '\n');
            let _stamp = lines.next();
            let Some(kind) = lines.next() else { continue };
            let received = kind.contains("message received");
            if !received && !kind.contains("message sent") {
                continue;
            }
            let body = lines.next().unwrap_or("").trim_start_matches(['\r', '\n']);
            msgs.push(Msg {
                received,
                text: body.trim_end().to_string(),
            });
        }
        Trace { msgs }
    }

    /// The messages sipp received, in order.
    pub fn received(&self) -> impl Iterator<Item = &Msg> {
        self.msgs.iter().filter(|m| m.received)
    }

    /// The messages sipp sent, in order.
    pub fn sent(&self) -> impl Iterator<Item = &Msg> {
        self.msgs.iter().filter(|m| !m.received)
    }

    /// Final responses (>= 200) received to requests of `method`, in order.
    pub fn finals(&self, method: &str) -> Vec<&Msg> {
        self.received()
            .filter(|m| m.status().is_some_and(|s| s >= 200) && m.cseq_method() == Some(method))
            .collect()
    }

    /// Distinct final statuses received for `method` per Call-ID+CSeq (retransmissions of a
    /// response counted once), as status → count.
    pub fn final_counts(&self, method: &str) -> BTreeMap<u16, usize> {
        let mut seen = std::collections::BTreeSet::new();
        let mut counts = BTreeMap::new();
        for m in self.finals(method) {
            let key = (
                m.header("Call-ID").unwrap_or("").to_string(),
                m.header("CSeq").unwrap_or("").to_string(),
            );
            if seen.insert(key) {
                *counts.entry(m.status().unwrap_or(0)).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Requests received with this method.
    pub fn requests_received(&self, method: &str) -> Vec<&Msg> {
        self.received()
            .filter(|m| m.method() == Some(method))
            .collect()
    }

    /// Distinct Call-IDs of sent requests with this method, in order.
    pub fn call_ids_sent(&self, method: &str) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        for m in self.sent().filter(|m| m.method() == Some(method)) {
            let id = m.header("Call-ID").unwrap_or("").to_string();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }

    /// Distinct Call-IDs of received requests with this method.
    pub fn call_ids_received(&self, method: &str) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        for m in self.requests_received(method) {
            let id = m.header("Call-ID").unwrap_or("").to_string();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }
}

impl std::fmt::Display for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The whole trace is long; the first lines and the interesting headers suffice.
        for m in &self.msgs {
            writeln!(
                f,
                "{} {}{}{}",
                if m.received { "<-" } else { "->" },
                m.first_line(),
                m.header("Warning")
                    .map(|w| format!("  [Warning: {w}]"))
                    .unwrap_or_default(),
                m.header("Call-ID")
                    .map(|c| format!("  [{c}]"))
                    .unwrap_or_default()
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_parses_sipp_message_file() {
        let text = "----------------------------------------------- 2026-11-23 12:04:32.130059\n\
            UDP message sent (20 bytes):\n\nINVITE sip:1@h SIP/2.0\r\nCSeq: 1 INVITE\r\n\
            Call-ID: a\r\n\r\nv=0\r\n\n\
            ----------------------------------------------- 2026-11-23 12:04:32.130440\n\
            UDP message received [229] bytes :\n\nSIP/2.0 403 Forbidden\r\nCSeq: 1 INVITE\r\n\
            Warning: 399 sbc \"no matching auth rule\"\r\nCall-ID: a\r\n\r\n\n\
            ----------------------------------------------- 2026-11-23 12:04:32.130440\n\
            UDP message received [229] bytes :\n\nSIP/2.0 403 Forbidden\r\nCSeq: 1 INVITE\r\n\
            Call-ID: a\r\n\r\n";
        let t = Trace::parse(text);
        assert_eq!(t.msgs.len(), 3);
        assert_eq!(t.msgs[0].method(), Some("INVITE"));
        assert!(!t.msgs[0].received);
        assert_eq!(t.msgs[0].body().trim(), "v=0");
        assert_eq!(t.msgs[1].status(), Some(403));
        assert!(t.msgs[1].header("warning").unwrap().contains("no matching"));
        assert_eq!(t.final_counts("INVITE"), BTreeMap::from([(403, 1)]));
        assert_eq!(t.finals("INVITE").len(), 2);
    }
}
