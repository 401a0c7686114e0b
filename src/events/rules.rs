//! Event patterns: exact names and globs, matched in the order of the config.
//!
//! Owns: the pattern syntax (`*` any run of characters, `?` exactly one character, everything
//! else literal and case-sensitive) and matching an event against one pattern. Does not own:
//! the rule list, its order or its upstreams (`events::EventRouter`).
//!
//! Globs are matched by a linear-time two-pointer algorithm (no regex, no backtracking
//! explosion): `*` matches across dots too, so `"payment_intent.*"` matches
//! `payment_intent.succeeded` and `"pull_request*"` matches `pull_request_review`.

/// One `match` entry of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: Box<str>,
    glob: bool,
}

impl Pattern {
    /// Longest pattern accepted (event types are short; this also bounds the metric label).
    pub const MAX_LEN: usize = 128;

    /// Parses one pattern. Errors say what is wrong and how to fix it.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err(
                "empty pattern; write an event type such as \"push\" or a glob such as \
                        \"payment_intent.*\""
                    .into(),
            );
        }
        if text.len() > Self::MAX_LEN {
            return Err(format!(
                "pattern is {} bytes long; at most {} are allowed",
                text.len(),
                Self::MAX_LEN
            ));
        }
        if text.chars().any(char::is_control) {
            return Err(format!("pattern {text:?} contains control characters"));
        }
        Ok(Pattern {
            text: text.into(),
            glob: text.contains(['*', '?']),
        })
    }

    /// The pattern as written: also the bounded metric label of events it matches.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern has `*` or `?`.
    pub fn is_glob(&self) -> bool {
        self.glob
    }

    pub fn matches(&self, event: &str) -> bool {
        if self.glob {
            glob_matches(&self.text, event)
        } else {
            *self.text == *event
        }
    }
}

/// `*` matches any run of characters (none included), `?` exactly one character.
pub(crate) fn glob_matches(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0usize, 0usize);
    // Where to resume after the last `*`: pattern index after it, text index it covers to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi + 1, ti));
                pi += 1;
            }
            Some(b'?') => {
                pi += 1;
                ti += char_len(t[ti]);
            }
            Some(&c) if c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more character and retry.
                Some((after_star, covered)) => {
                    let next = covered + char_len(t[covered]);
                    star = Some((after_star, next));
                    pi = after_star;
                    ti = next;
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Length of the UTF-8 character starting with `first` (1 for a stray continuation byte).
fn char_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn glob_table() {
        let table = [
            ("payment_intent.*", "payment_intent.succeeded", true),
            ("payment_intent.*", "payment_intent.", true),
            ("payment_intent.*", "payment_intent", false),
            ("payment_intent.*", "charge.succeeded", false),
            ("pull_request*", "pull_request", true),
            ("pull_request*", "pull_request_review_comment", true),
            ("pull_request*", "pull", false),
            ("*", "", true),
            ("*", "anything.at.all", true),
            ("*.deleted", "customer.subscription.deleted", true),
            ("*.deleted", "customer.deleted.not", false),
            ("customer.*.deleted", "customer.subscription.deleted", true),
            ("customer.*.deleted", "customer.deleted", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "abcabc", true),
            ("a*b*c", "acb", false),
            ("issue?", "issues", true),
            ("issue?", "issue", false),
            ("issue?", "issuess", false),
            ("?", "é", true),
            ("caf?", "café", true),
            ("caf?", "cafée", false),
            ("*é", "café", true),
            ("Push", "push", false),
            ("**", "x", true),
            ("a**b", "ab", true),
            (
                "*a",
                "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
                false,
            ),
        ];
        for (pattern, text, expected) in table {
            assert_eq!(glob_matches(pattern, text), expected, "{pattern} vs {text}");
        }
    }

    #[test]
    fn patterns_parse() {
        let exact = Pattern::parse("issues").unwrap();
        assert!(!exact.is_glob());
        assert!(exact.matches("issues"));
        assert!(!exact.matches("issues2"));
        // Without wildcards, '.' and the like are literal.
        assert!(!Pattern::parse("a.b").unwrap().matches("aXb"));
        let glob = Pattern::parse("payment_intent.*").unwrap();
        assert!(glob.is_glob());
        assert_eq!(glob.as_str(), "payment_intent.*");
        assert!(Pattern::parse("").unwrap_err().contains("empty"));
        assert!(Pattern::parse(&"x".repeat(129))
            .unwrap_err()
            .contains("at most 128"));
        assert!(Pattern::parse("a\nb").unwrap_err().contains("control"));
    }

    /// Reference matcher: straightforward recursion over characters.
    fn reference(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len()).any(|i| reference(rest, &t[i..])),
            Some(('?', rest)) => !t.is_empty() && reference(rest, &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && reference(rest, &t[1..]),
        }
    }

    proptest! {
        #[test]
        fn glob_agrees_with_reference(p in "[ab*?é.]{0,7}", t in "[abé.]{0,9}") {
            let pc: Vec<char> = p.chars().collect();
            let tc: Vec<char> = t.chars().collect();
            prop_assert_eq!(glob_matches(&p, &t), reference(&pc, &tc), "{} vs {}", p, t);
        }
    }
}
