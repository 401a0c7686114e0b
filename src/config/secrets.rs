//! Resolving secret references from the config into [`Secret`]s.
//!
//! - `"${NAME}"`: the environment variable `NAME`; unset or empty is an error.
//! - `"file:PATH"`: the file's contents without one trailing newline; a relative
//!   `PATH` is relative to the config file's directory.
//! - anything else: the literal value. Convenient for tests and the demo; for
//!   real deployments prefer the two forms above, which keep secrets out of the file.
//!
//! Error messages name the variable or file, never a value.

use std::path::Path;

use crate::secret::Secret;

/// Resolves one secret reference.
pub fn resolve(reference: &str, base_dir: &Path) -> Result<Secret, String> {
    if let Some(name) = reference
        .strip_prefix("${")
        .and_then(|r| r.strip_suffix('}'))
    {
        let valid =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(format!(
                "\"${{{name}}}\" is not a valid environment variable reference"
            ));
        }
        return match std::env::var_os(name) {
            Some(value) if !value.is_empty() => Ok(Secret::new(value.into_encoded_bytes())),
            Some(_) => Err(format!("environment variable {name} is empty")),
            None => Err(format!("environment variable {name} is not set")),
        };
    }
    if let Some(path) = reference.strip_prefix("file:") {
        let path = base_dir.join(path);
        let mut bytes = std::fs::read(&path)
            .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
        if bytes.ends_with(b"\n") {
            bytes.pop();
            if bytes.ends_with(b"\r") {
                bytes.pop();
            }
        }
        if bytes.is_empty() {
            return Err(format!("secret file {} is empty", path.display()));
        }
        return Ok(Secret::new(bytes));
    }
    if reference.is_empty() {
        return Err("empty secret; use \"${ENV_VAR}\" or \"file:/path\"".to_string());
    }
    Ok(Secret::new(reference.as_bytes()))
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
    fn file_references_drop_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "value\n").unwrap();
        std::fs::write(dir.path().join("b"), "value\r\n").unwrap();
        std::fs::write(dir.path().join("c"), "\n").unwrap();
        assert_eq!(resolve("file:a", dir.path()).unwrap().expose(), b"value");
        assert_eq!(resolve("file:b", dir.path()).unwrap().expose(), b"value");
        assert!(resolve("file:c", dir.path())
            .unwrap_err()
            .contains("is empty"));
        let missing = resolve("file:missing", dir.path()).unwrap_err();
        assert!(
            missing.contains("cannot read secret file") && missing.contains("missing"),
            "{missing}"
        );
    }

    #[test]
    fn literals_pass_and_errors_never_echo_values() {
        assert_eq!(resolve("plain", Path::new(".")).unwrap().expose(), b"plain");
        assert!(resolve("", Path::new(".")).is_err());
    }
}
