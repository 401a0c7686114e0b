//! The inputs of a configuration: its text and every file it refers to (`file:`
//! secrets, `[ip_sets]` list files), and one fingerprint over all their bytes.
//!
//! Owns the fingerprint, so a reload can tell "nothing changed" from "a secret
//! file was rotated" even when the config text is byte-identical. Does not own
//! reading the files for their meaning (`secrets`, `allowlist`) or watching
//! them (`reload`).
//!
//! The fingerprint is an HMAC-SHA256 under a key drawn at process start, so it
//! can be compared within one process but is no offline oracle for a secret
//! file's contents; it is never shown outside the process.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The bytes of one input as read, or `None` when it could not be read.
pub type InputBytes = Option<Vec<u8>>;

fn process_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut key = [0u8; 32];
        key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        key
    })
}

/// The fingerprint (hex) of a config text and its inputs. `inputs` must be
/// sorted by path with no duplicates (see [`normalize`]).
pub fn fingerprint(text: &[u8], inputs: &[(PathBuf, InputBytes)]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(process_key())
        .expect("HMAC takes a key of any length");
    let mut field = |bytes: &[u8]| {
        mac.update(&(bytes.len() as u64).to_be_bytes());
        mac.update(bytes);
    };
    field(b"hookgate config inputs v1");
    field(text);
    for (path, bytes) in inputs {
        field(path.as_os_str().as_encoded_bytes());
        match bytes {
            Some(bytes) => {
                field(b"present");
                field(bytes);
            }
            None => field(b"missing"),
        }
    }
    hex::encode(mac.finalize().into_bytes())
}

/// Sorts by path and keeps the first reading of each path.
pub fn normalize(mut inputs: Vec<(PathBuf, InputBytes)>) -> Vec<(PathBuf, InputBytes)> {
    inputs.sort_by(|a, b| a.0.cmp(&b.0));
    inputs.dedup_by(|later, earlier| later.0 == earlier.0);
    inputs
}

/// Reads `paths` now; an unreadable file counts as missing.
pub fn read_all(paths: &[PathBuf]) -> Vec<(PathBuf, InputBytes)> {
    normalize(
        paths
            .iter()
            .map(|path| (path.clone(), std::fs::read(path).ok()))
            .collect(),
    )
}

/// The fingerprint the config at `config_path` with the inputs `paths` would
/// have if loaded now, or `None` when the config file cannot be read.
pub fn fingerprint_now(config_path: &Path, paths: &[PathBuf]) -> Option<String> {
    let text = std::fs::read(config_path).ok()?;
    Some(fingerprint(&text, &read_all(paths)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_input_byte_changes_the_fingerprint() {
        let base = vec![(PathBuf::from("/a"), Some(b"one".to_vec()))];
        let same = fingerprint(b"text", &base);
        assert_eq!(same, fingerprint(b"text", &base));
        assert_ne!(same, fingerprint(b"text2", &base));
        assert_ne!(
            same,
            fingerprint(b"text", &[(PathBuf::from("/a"), Some(b"two".to_vec()))])
        );
        assert_ne!(same, fingerprint(b"text", &[(PathBuf::from("/a"), None)]));
        assert_ne!(same, fingerprint(b"text", &[]));
        // Field boundaries are length-prefixed: moving bytes between fields changes it.
        assert_ne!(
            fingerprint(b"ab", &[(PathBuf::from("/c"), Some(Vec::new()))]),
            fingerprint(b"a", &[(PathBuf::from("/c"), Some(b"b".to_vec()))])
        );
    }

    #[test]
    fn normalize_sorts_and_keeps_the_first_reading() {
        let inputs = normalize(vec![
            (PathBuf::from("/b"), None),
            (PathBuf::from("/a"), Some(b"1".to_vec())),
            (PathBuf::from("/a"), Some(b"2".to_vec())),
        ]);
        assert_eq!(
            inputs,
            vec![
                (PathBuf::from("/a"), Some(b"1".to_vec())),
                (PathBuf::from("/b"), None)
            ]
        );
    }
}
