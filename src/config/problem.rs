//! One problem found in a configuration file: the key at fault and what is wrong.
//!
//! Compilers of config sections (routes, verifiers, limiters, allowlists) return
//! these with a key path relative to their section (`"secrets[1]"`); the loader
//! prefixes the section (`"routes[2].verify."`) and adds the file and line.

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
