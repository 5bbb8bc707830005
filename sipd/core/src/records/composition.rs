//! The rules every password policy shares, staff logins and SIP digest secrets alike: length,
//! character classes, no control characters, and a floor on a strength estimate that the shell
//! computes. One place, so both policies refuse the same password with the same words.

/// Length, classes and strength floor of one policy. `max_chars` bounds the estimate's work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Composition {
    /// Fewest characters (not bytes).
    pub min_length: usize,
    /// Most characters: the strength estimate's work grows with length.
    pub max_chars: usize,
    /// How many of the four classes (lowercase, uppercase, digit, other) must appear (1..=4).
    pub min_classes: u8,
    /// Lowest strength score accepted, on zxcvbn's 0-4 scale.
    pub min_strength: u8,
}

impl Composition {
    /// Problems with the policy itself, for the configuration check.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !(8..=self.max_chars).contains(&self.min_length) {
            out.push(format!(
                "min_length {} is outside 8..={}",
                self.min_length, self.max_chars
            ));
        }
        if !(1..=4).contains(&self.min_classes) {
            out.push(format!("min_classes {} is outside 1..=4", self.min_classes));
        }
        if self.min_strength > 4 {
            out.push(format!(
                "min_strength {} is outside 0..=4",
                self.min_strength
            ));
        }
        out
    }

    /// Every length, class and character rule `password` breaks, a phrase each ("is 6
    /// characters; ..."); the strength floor is [`Composition::too_weak`], once the caller has
    /// an estimate. Over `max_chars`, nothing else is judged.
    pub fn breaks(&self, password: &str) -> Vec<String> {
        let mut out = Vec::new();
        let len = password.chars().count();
        if len < self.min_length {
            out.push(format!(
                "is {len} characters; at least {} are needed",
                self.min_length
            ));
        }
        if len > self.max_chars {
            out.push(format!("is over {} characters", self.max_chars));
            return out;
        }
        if password.chars().any(char::is_control) {
            out.push("contains control characters".into());
        }
        let classes = classes(password);
        if classes < usize::from(self.min_classes) {
            out.push(format!(
                "uses {classes} of the character classes (lowercase, uppercase, digit, other); {} are needed",
                self.min_classes
            ));
        }
        out
    }

    /// The phrase for a strength `score` under the floor, `None` when it is enough.
    pub fn too_weak(&self, score: u8) -> Option<String> {
        (score < self.min_strength).then(|| {
            format!(
                "is too easy to guess (strength {score} of 4; {} needed)",
                self.min_strength
            )
        })
    }
}

/// How many of lowercase, uppercase, ASCII digit and other (non-alphanumeric) appear.
pub fn classes(password: &str) -> usize {
    [
        password.chars().any(char::is_lowercase),
        password.chars().any(char::is_uppercase),
        password.chars().any(|c| c.is_ascii_digit()),
        password.chars().any(|c| !c.is_alphanumeric()),
    ]
    .iter()
    .filter(|&&b| b)
    .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Composition = Composition {
        min_length: 12,
        max_chars: 128,
        min_classes: 3,
        min_strength: 3,
    };

    #[test]
    fn each_rule_is_named_once() {
        assert!(P.breaks("Correct-Horse-9").is_empty());
        let b = P.breaks("short");
        assert_eq!(b.len(), 2, "{b:?}");
        assert!(b[0].starts_with("is 5 characters"));
        assert!(b[1].contains("uses 1 of the character classes"));
        assert!(P.breaks("abcdefghijkl\u{7}A1")[0].contains("control"));
        assert_eq!(P.breaks(&"a".repeat(200)), ["is over 128 characters"]);
        assert_eq!(P.too_weak(3), None);
        assert!(P.too_weak(2).unwrap().contains("strength 2 of 4; 3 needed"));
    }

    #[test]
    fn policies_outside_their_ranges_are_problems() {
        assert!(P.problems().is_empty());
        let bad = Composition {
            min_length: 4,
            min_classes: 0,
            min_strength: 5,
            ..P
        };
        assert_eq!(bad.problems().len(), 3);
    }
}
