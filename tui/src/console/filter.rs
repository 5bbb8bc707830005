//! The `/` filter: a regex (case-insensitive), or a leading `!` for the rows that do not
//! match. A pattern that is not a valid regex matches as plain text.

use regex::{Regex, RegexBuilder};

/// A compiled filter.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    text: String,
    re: Option<Regex>,
    invert: bool,
}

impl Filter {
    /// Compiles what the user typed; empty (or a lone `!`) matches everything.
    pub fn new(text: &str) -> Filter {
        let (invert, pat) = match text.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let re = if pat.is_empty() {
            None
        } else {
            RegexBuilder::new(pat)
                .case_insensitive(true)
                .size_limit(1 << 20)
                .build()
                .or_else(|_| {
                    RegexBuilder::new(&regex::escape(pat))
                        .case_insensitive(true)
                        .build()
                })
                .ok()
        };
        Filter {
            text: text.to_owned(),
            re,
            invert,
        }
    }

    /// What the user typed.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether a row's text passes.
    pub fn matches(&self, row: &str) -> bool {
        match &self.re {
            None => true,
            Some(re) => re.is_match(row) != self.invert,
        }
    }

    /// No filter.
    pub fn is_empty(&self) -> bool {
        self.re.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_invert_and_plain() {
        let f = Filter::new("^44");
        assert!(f.matches("4420") && !f.matches("3344"));
        let f = Filter::new("!^44");
        assert!(!f.matches("4420") && f.matches("3344"));
        let f = Filter::new("a(b");
        assert!(f.matches("xa(b") && !f.matches("ab"));
        assert!(Filter::new("").matches("x") && Filter::new("!").matches("x"));
        assert!(Filter::new("ALICE").matches("alice"));
    }
}
