//! CLI/CLD patterns in auth rules: a number prefix (what most carriers mean) or a regex for
//! the rest. Regexes are size-limited so a provisioning mistake cannot make matching slow.

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

const MAX_PREFIX_LEN: usize = 64;
const MAX_REGEX_LEN: usize = 512;
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// A CLI or CLD pattern as provisioned; [`Pattern::compile`] checks it and readies it for calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Pattern {
    /// Empty prefix matches everything.
    Prefix(String),
    /// Matched anywhere unless anchored; write `^…$` for whole-number matches.
    Regex(String),
}

/// Why a [`Pattern`] is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// A prefix over 64 characters, or with whitespace or control characters.
    #[error(
        "prefix longer than {MAX_PREFIX_LEN} characters or contains whitespace/control characters"
    )]
    BadPrefix,
    /// A regex over 512 bytes.
    #[error("regex longer than {MAX_REGEX_LEN} characters")]
    RegexTooLong,
    /// A regex that does not parse or compiles too large; the parser's last line says why.
    #[error("invalid regex: {0}")]
    BadRegex(String),
}

/// A compiled pattern, ready for the call path.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// Matches numbers starting with it.
    Prefix(String),
    /// Matches numbers it finds a match in (size-limited).
    Regex(Regex),
}

impl Pattern {
    /// The pattern ready for matching, or why it is refused (length, characters, regex syntax or
    /// compiled size).
    pub fn compile(&self) -> Result<Matcher, PatternError> {
        match self {
            Pattern::Prefix(p) => {
                if p.chars().count() > MAX_PREFIX_LEN
                    || p.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(PatternError::BadPrefix);
                }
                Ok(Matcher::Prefix(p.clone()))
            }
            Pattern::Regex(r) => {
                if r.len() > MAX_REGEX_LEN {
                    return Err(PatternError::RegexTooLong);
                }
                RegexBuilder::new(r)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map(Matcher::Regex)
                    .map_err(|e| {
                        // The parser's message draws a caret diagram over several lines; the
                        // last line says what is wrong, which is what fits an error report.
                        let text = e.to_string();
                        PatternError::BadRegex(
                            text.lines().last().unwrap_or_default().trim().to_owned(),
                        )
                    })
            }
        }
    }
}

impl Matcher {
    /// Whether `number` (a CLI or CLD) matches.
    pub fn matches(&self, number: &str) -> bool {
        match self {
            Matcher::Prefix(p) => number.starts_with(p.as_str()),
            Matcher::Regex(r) => r.is_match(number),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_and_regex() {
        let p = Pattern::Prefix("44".into()).compile().unwrap();
        assert!(p.matches("441234") && !p.matches("1441234"));
        let r = Pattern::Regex("^00[1-9][0-9]{6,}$".into())
            .compile()
            .unwrap();
        assert!(r.matches("0019995551234") && !r.matches("0009995551234"));
        assert!(matches!(
            Pattern::Regex("(".into()).compile(),
            Err(PatternError::BadRegex(_))
        ));
        assert!(matches!(
            Pattern::Regex("a{1000}{1000}".into()).compile(),
            Err(PatternError::BadRegex(_))
        ));
        assert_eq!(
            Pattern::Prefix("4 4".into()).compile().unwrap_err(),
            PatternError::BadPrefix
        );
    }
}
