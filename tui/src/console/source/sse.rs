//! A parser for `text/event-stream` (the subset sipd sends: `event:`, `data:`, comments),
//! fed lines so that it works on any reader.

/// Collects lines into events.
#[derive(Debug, Default)]
pub struct SseParser {
    event: String,
    data: String,
}

impl SseParser {
    /// Feeds one line without its line ending; returns `(kind, data)` when a blank line ends
    /// an event. An event without `event:` is a `message`, as the standard says.
    pub fn line(&mut self, line: &str) -> Option<(String, String)> {
        if line.is_empty() {
            if self.data.is_empty() && self.event.is_empty() {
                return None;
            }
            let kind = std::mem::take(&mut self.event);
            let kind = if kind.is_empty() {
                "message".into()
            } else {
                kind
            };
            return Some((kind, std::mem::take(&mut self.data)));
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(value);
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_comments_and_multiline_data() {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for l in [
            ": keepalive",
            "event: counters",
            "data: {\"a\":",
            "data: 1}",
            "",
            "",
            "data: x",
            "",
        ] {
            out.extend(p.line(l));
        }
        assert_eq!(
            out,
            vec![
                ("counters".into(), "{\"a\":\n1}".into()),
                ("message".into(), "x".into())
            ]
        );
    }
}
