//! One problem found in a configuration file: the key at fault and what is wrong.
//!
//! A module of its own, outside `config`, so that the domain modules whose
//! sections it reports on (`verify` compiles its own table, one file per scheme)
//! can use it without `config` and those modules depending on each other.
//!
//! Compilers of config sections (routes, verifiers, limiters, allowlists) return
//! these with a key path relative to their section (`"secrets[1]"`); the loader
//! prefixes the section (`"routes[2].verify."`) and adds the file and line.
//!
//! Parse errors come from serde and the TOML parser, whose messages quote the
//! offending value (`invalid type: string "whsec_…", expected a sequence`);
//! [`without_values`] rewrites them to name only the kinds involved, because the
//! value at a wrong key may well be a secret.

use std::fmt;

/// A configuration problem at a dotted key path such as `routes[2].verify.secrets[1]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path with `[index]` for array elements; empty for the whole file.
    pub key: String,
    /// What is wrong and, where possible, how to fix it. Never contains secret values.
    pub message: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            message: message.into(),
        }
    }

    /// Returns this problem with `prefix` put in front of its key (`"routes[2].verify"`).
    pub fn within(mut self, prefix: &str) -> Self {
        self.key = match (prefix.is_empty(), self.key.is_empty()) {
            (true, _) => self.key,
            (false, true) => prefix.to_string(),
            (false, false) if self.key.starts_with('[') => format!("{prefix}{}", self.key),
            (false, false) => format!("{prefix}.{}", self.key),
        };
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// A serde or TOML parser message with every quoted value taken out: `invalid
/// type: string "x", expected a sequence` becomes `wrong type: expected a
/// sequence, found a string`. Key and field names (`unknown field \`listen_port\``)
/// stay, since they name the key at fault; shapes this function does not know
/// keep only their text before the first quote.
pub fn without_values(message: &str) -> String {
    let message = message.trim();
    let split = |rest: &str| {
        rest.rfind(", expected ").map(|at| {
            (
                kind(&rest[..at]),
                rest[at + ", expected ".len()..].to_string(),
            )
        })
    };
    if let Some((found, expected)) = message.strip_prefix("invalid type: ").and_then(split) {
        return format!("wrong type: expected {expected}, found {found}");
    }
    if let Some((found, expected)) = message.strip_prefix("invalid value: ").and_then(split) {
        return format!("invalid value: expected {expected}, found {found}");
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        return match rest.rfind(", expected ") {
            Some(at) => format!(
                "unknown value, expected {}",
                &rest[at + ", expected ".len()..]
            ),
            None => "unknown value".to_string(),
        };
    }
    let names_a_key = [
        "unknown field `",
        "missing field `",
        "duplicate field `",
        "duplicate key `",
    ]
    .iter()
    .any(|p| message.starts_with(p));
    let keeps_no_value = message.starts_with("invalid length ")
        || message.starts_with("data did not match any variant");
    if names_a_key || keeps_no_value {
        return message.to_string();
    }
    // Unknown shape: keep the text before anything quoted, and its first line.
    let cut = message
        .find(['"', '\'', '`', '\n'])
        .map_or(message, |at| &message[..at]);
    let cut = cut.trim_end_matches([' ', ':', ',']);
    if cut.is_empty() {
        "the TOML does not parse here".to_string()
    } else {
        cut.to_string()
    }
}

/// `string "x"` → `a string`; `integer \`5\`` → `an integer`: serde's
/// `Unexpected` without its value.
fn kind(unexpected: &str) -> String {
    let name = unexpected
        .split(['"', '`', '\''])
        .next()
        .unwrap_or("")
        .trim();
    let name = if name.is_empty() { "a value" } else { name };
    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_lose_their_values() {
        for (message, expected) in [
            (
                "invalid type: string \"whsec_SECRET\", expected a sequence",
                "wrong type: expected a sequence, found a string",
            ),
            (
                "invalid type: integer `12345`, expected a string",
                "wrong type: expected a string, found an integer",
            ),
            (
                "invalid type: boolean `true`, expected a string",
                "wrong type: expected a string, found a boolean",
            ),
            (
                "invalid type: sequence, expected a string",
                "wrong type: expected a string, found a sequence",
            ),
            (
                "invalid value: string \"a, expected SECRET\", expected usize",
                "invalid value: expected usize, found a string",
            ),
            (
                "unknown variant `SECRET`, expected `text` or `json`",
                "unknown value, expected `text` or `json`",
            ),
            (
                "unknown field `listen_port`, expected one of `listen`, `admin`",
                "unknown field `listen_port`, expected one of `listen`, `admin`",
            ),
            ("missing field `upstream`", "missing field `upstream`"),
            (
                "invalid length 3, expected fewer elements in array",
                "invalid length 3, expected fewer elements in array",
            ),
            ("some custom text \"SECRET\" here", "some custom text"),
            ("invalid string\nexpected `\"`, `'`", "invalid string"),
            ("\"SECRET\"", "the TOML does not parse here"),
        ] {
            let shown = without_values(message);
            assert_eq!(shown, expected, "{message}");
            assert!(!shown.contains("SECRET"), "{shown}");
        }
    }
}
