//! Resolving secret references from the config into [`Secret`]s, failing closed.
//!
//! Owns the three accepted forms and the record of what was read (for reload
//! fingerprints and the literal-secret warning). Does not own where the secrets
//! are used (`verify`, `admin`) or the newtype itself (`secret`).
//!
//! - `"${NAME}"`: the environment variable `NAME` (letters, digits, `_`); unset
//!   or empty is an error.
//! - `"file:PATH"`: the file's contents without one trailing newline; a relative
//!   `PATH` is relative to the config file's directory. Read again on every reload.
//! - `"literal:VALUE"`: `VALUE` itself. For tests and the demo; `hookgate check`
//!   warns about every use, because the secret is then readable in the config file.
//!
//! Anything else is an error, never a silent literal: `"$NAME"`, `"{NAME}"` or
//! `"${NAME"` is a broken reference, and a bare string is a secret written
//! without saying so. Error messages name the variable or file where the
//! reference is well formed, and never repeat a value that might be the secret.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use crate::secret::Secret;

/// What a reference asked for, once it parsed.
enum Reference<'a> {
    Env(&'a str),
    File(&'a str),
    Literal(&'a str),
}

/// The three forms, for error messages.
const FORMS: &str =
    "write \"${ENV_VAR}\" (environment), \"file:/path\" (a file) or \"literal:VALUE\" (inline)";

fn parse(reference: &str) -> Result<Reference<'_>, String> {
    if let Some(value) = reference.strip_prefix("literal:") {
        if value.is_empty() {
            return Err(format!("\"literal:\" needs a value after it; {FORMS}"));
        }
        return Ok(Reference::Literal(value));
    }
    if let Some(path) = reference.strip_prefix("file:") {
        if path.is_empty() {
            return Err(format!("\"file:\" needs a path after it; {FORMS}"));
        }
        return Ok(Reference::File(path));
    }
    if let Some(name) = reference
        .strip_prefix("${")
        .and_then(|r| r.strip_suffix('}'))
    {
        if is_env_name(name) {
            return Ok(Reference::Env(name));
        }
        return Err(format!(
            "not a valid environment variable reference: a name between \"${{\" and \"}}\" uses only letters, digits and '_'; {FORMS}"
        ));
    }
    if reference.is_empty() {
        return Err(format!("empty secret; {FORMS}"));
    }
    if reference.starts_with('$') || reference.starts_with('{') || reference.ends_with('}') {
        return Err(format!(
            "looks like a broken environment variable reference (braces or '$' missing); {FORMS}"
        ));
    }
    Err(format!(
        "a bare string is not taken as a secret, so a typo cannot become the key; {FORMS}"
    ))
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether `reference` is the explicit inline form `literal:…`.
pub fn is_literal(reference: &str) -> bool {
    reference.starts_with("literal:")
}

/// Resolves one secret reference; see the module doc for the forms.
pub fn resolve(reference: &str, base_dir: &Path) -> Result<Secret, String> {
    Resolver::new(base_dir).resolve(reference)
}

/// Resolves references against one config directory and remembers every file
/// it read, with the exact bytes, so a reload can tell whether they changed.
pub struct Resolver<'a> {
    base_dir: &'a Path,
    read: RefCell<Vec<(PathBuf, Vec<u8>)>>,
}

impl<'a> Resolver<'a> {
    pub fn new(base_dir: &'a Path) -> Self {
        Resolver {
            base_dir,
            read: RefCell::new(Vec::new()),
        }
    }

    /// Resolves one reference. Errors never contain the value.
    pub fn resolve(&self, reference: &str) -> Result<Secret, String> {
        match parse(reference)? {
            Reference::Literal(value) => Ok(Secret::new(value.as_bytes())),
            Reference::Env(name) => match std::env::var_os(name) {
                Some(value) if !value.is_empty() => Ok(Secret::new(value.into_encoded_bytes())),
                Some(_) => Err(format!("environment variable {name} is empty")),
                None => Err(format!("environment variable {name} is not set")),
            },
            Reference::File(path) => {
                let path = self.base_dir.join(path);
                let raw = std::fs::read(&path)
                    .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
                let mut bytes = raw.clone();
                self.read.borrow_mut().push((path.clone(), raw));
                if bytes.ends_with(b"\n") {
                    bytes.pop();
                    if bytes.ends_with(b"\r") {
                        bytes.pop();
                    }
                }
                if bytes.is_empty() {
                    return Err(format!("secret file {} is empty", path.display()));
                }
                Ok(Secret::new(bytes))
            }
        }
    }

    /// The directory relative `file:` paths start from.
    pub fn base_dir(&self) -> &'a Path {
        self.base_dir
    }

    /// Every file read so far with the bytes read, in reading order.
    pub fn into_files(self) -> Vec<(PathBuf, Vec<u8>)> {
        self.read.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_references() {
        std::env::set_var("HOOKGATE_TEST_SECRET_A", "s3cret");
        std::env::set_var("HOOKGATE_TEST_SECRET_EMPTY", "");
        let dir = Path::new(".");
        assert_eq!(
            resolve("${HOOKGATE_TEST_SECRET_A}", dir).unwrap().expose(),
            b"s3cret"
        );
        let unset = resolve("${HOOKGATE_TEST_SECRET_UNSET}", dir).unwrap_err();
        assert!(
            unset.contains("HOOKGATE_TEST_SECRET_UNSET is not set"),
            "{unset}"
        );
        assert!(resolve("${HOOKGATE_TEST_SECRET_EMPTY}", dir)
            .unwrap_err()
            .contains("empty"));
        assert!(resolve("${BAD-NAME}", dir).is_err());
    }

    #[test]
    fn file_references_drop_one_trailing_newline_and_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "value\n").unwrap();
        std::fs::write(dir.path().join("b"), "value\r\n").unwrap();
        std::fs::write(dir.path().join("c"), "\n").unwrap();
        let resolver = Resolver::new(dir.path());
        assert_eq!(resolver.resolve("file:a").unwrap().expose(), b"value");
        assert_eq!(resolver.resolve("file:b").unwrap().expose(), b"value");
        assert!(resolver.resolve("file:c").unwrap_err().contains("is empty"));
        let missing = resolver.resolve("file:missing").unwrap_err();
        assert!(
            missing.contains("cannot read secret file") && missing.contains("missing"),
            "{missing}"
        );
        let read = resolver.into_files();
        assert_eq!(
            read.len(),
            3,
            "a, b and c were read; the missing file was not"
        );
        assert_eq!(read[0], (dir.path().join("a"), b"value\n".to_vec()));
    }

    #[test]
    fn literals_need_the_explicit_prefix() {
        let dir = Path::new(".");
        assert_eq!(resolve("literal:plain", dir).unwrap().expose(), b"plain");
        assert_eq!(
            resolve("literal:${NOT_A_REF}", dir).unwrap().expose(),
            b"${NOT_A_REF}"
        );
        assert!(is_literal("literal:x") && !is_literal("${X}"));
        for bad in ["", "literal:", "file:"] {
            assert!(resolve(bad, dir).is_err(), "{bad:?}");
        }
    }

    /// A broken reference or a bare string is an error that names the three
    /// forms and never echoes what was written (it may be the secret itself).
    #[test]
    fn anything_else_fails_closed_without_echoing_the_value() {
        let dir = Path::new(".");
        for (bad, why) in [
            ("$GITHUB_SECRET_X1", "broken"),
            ("{GITHUB_SECRET_X1}", "broken"),
            ("${GITHUB_SECRET_X1", "broken"),
            ("$GITHUB_SECRET_X1}", "broken"),
            ("${GITHUB SECRET X1}", "not a valid environment variable"),
            ("whsec_GITHUB_SECRET_X1", "bare string"),
        ] {
            let error = resolve(bad, dir).unwrap_err();
            assert!(error.contains(why), "{bad:?}: {error}");
            assert!(
                error.contains("literal:VALUE") && error.contains("file:/path"),
                "{error}"
            );
            assert!(!error.contains("SECRET_X1"), "{bad:?} echoed: {error}");
        }
    }
}
