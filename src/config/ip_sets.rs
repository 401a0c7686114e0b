//! `[ip_sets]`, a route's `allow`, `[server] allow` and `[server] trusted_proxies`: the
//! file types ([`IpSetsFile`], [`IpSetSource`]) and their compilation into the
//! [`IpSet`]s and [`Allowlist`]s of `crate::allowlist`, which owns what an entry means and
//! the client-address rule. IP list files are read here, relative to the config file.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::IpNet;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::Problem;
use crate::allowlist::{parse_entry, parse_ip_list, Allowlist, IpSet};

/// The `[ip_sets]` table: set name → inline list or file reference.
///
/// ```toml
/// [ip_sets]
/// office = ["203.0.113.0/24", "2001:db8:1::/48"]
/// github = { file = "ip/github.txt" }   # relative to the config file's directory
/// ```
pub type IpSetsFile = BTreeMap<String, IpSetSource>;

/// Where a named set's entries come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpSetSource {
    /// `name = ["10.0.0.0/8", "192.0.2.1"]`
    Inline(Vec<String>),
    /// `name = { file = "conf/ip/github.txt" }`
    File(IpSetFileRef),
}

/// `{ file = "..." }`: one entry per line, `#` comments and blank lines allowed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpSetFileRef {
    pub file: PathBuf,
}

impl<'de> Deserialize<'de> for IpSetSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SourceVisitor;

        impl<'de> Visitor<'de> for SourceVisitor {
            type Value = IpSetSource;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a list of CIDRs such as [\"10.0.0.0/8\"] or a table { file = \"ip/list.txt\" }",
                )
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<IpSetSource, A::Error> {
                Vec::<String>::deserialize(de::value::SeqAccessDeserializer::new(seq))
                    .map(IpSetSource::Inline)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<IpSetSource, A::Error> {
                IpSetFileRef::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(IpSetSource::File)
            }
        }

        deserializer.deserialize_any(SourceVisitor)
    }
}

/// The compiled `[ip_sets]`: name → set.
#[derive(Debug, Clone, Default)]
pub struct IpSets {
    sets: BTreeMap<String, Arc<IpSet>>,
    /// Sets that are defined but did not compile: their own problems say why,
    /// so a reference to one is not reported again as an unknown name.
    broken: BTreeSet<String>,
}

impl IpSets {
    /// Compiles `[ip_sets]`. Relative file paths resolve against `base_dir` (the directory of
    /// the config file). Problem keys are relative to `[ip_sets]`: `"github"` for the set,
    /// `"office[1]"` for an inline entry; file problems name the file and line in the message.
    pub fn compile(file: &IpSetsFile, base_dir: &Path) -> Result<IpSets, Vec<Problem>> {
        let (sets, problems) = IpSets::compile_partly(file, base_dir);
        if problems.is_empty() {
            Ok(sets)
        } else {
            Err(problems)
        }
    }

    /// [`IpSets::compile`] that keeps going: the sets that compiled, with the
    /// names of those that did not (see [`IpSets::resolve`]), and the problems.
    pub fn compile_partly(file: &IpSetsFile, base_dir: &Path) -> (IpSets, Vec<Problem>) {
        let mut sets = BTreeMap::new();
        let mut broken = BTreeSet::new();
        let mut problems = Vec::new();
        for (name, source) in file {
            let before = problems.len();
            if let Err(message) = check_set_name(name) {
                problems.push(Problem::new(name.as_str(), message));
                continue;
            }
            let nets = match source {
                IpSetSource::Inline(entries) => {
                    let mut nets = Vec::with_capacity(entries.len());
                    for (i, entry) in entries.iter().enumerate() {
                        match parse_entry(entry) {
                            Ok(net) => nets.push(net),
                            Err(message) => {
                                problems.push(Problem::new(format!("{name}[{i}]"), message))
                            }
                        }
                    }
                    nets
                }
                IpSetSource::File(reference) => {
                    let path = resolve_path(base_dir, &reference.file);
                    match load_ip_file(&path) {
                        Ok(nets) => nets,
                        Err(messages) => {
                            let key = format!("{name}.file");
                            problems.extend(messages.into_iter().map(|m| Problem::new(&key, m)));
                            Vec::new()
                        }
                    }
                }
            };
            if problems.len() > before {
                broken.insert(name.clone());
                continue;
            }
            if nets.is_empty() {
                problems.push(Problem::new(
                    name.as_str(),
                    "IP set has no entries; an allowlist using it would refuse every request. \
                     Add CIDRs or remove the set",
                ));
                broken.insert(name.clone());
                continue;
            }
            sets.insert(name.clone(), Arc::new(IpSet::new(nets)));
        }
        (IpSets { sets, broken }, problems)
    }

    pub fn get(&self, name: &str) -> Option<&IpSet> {
        self.sets.get(name).map(|s| &**s)
    }

    /// The set names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sets.keys().map(String::as_str)
    }

    /// Compiles a list of entries (CIDRs, addresses, set names) into one set; used for
    /// `trusted_proxies` and inside [`IpSets::allowlist`]. An empty list gives an empty set.
    /// Problem keys are `"{key}[{index}]"`, e.g. `"allow[2]"`.
    pub fn resolve(&self, key: &str, entries: &[String]) -> Result<IpSet, Vec<Problem>> {
        let mut nets = Vec::new();
        let mut problems = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let entry = entry.trim();
            if looks_like_set_name(entry) {
                match self.sets.get(entry) {
                    Some(set) => nets.extend_from_slice(set.networks()),
                    // Defined, and reported where it is defined.
                    None if self.broken.contains(entry) => {}
                    None => problems.push(Problem::new(
                        format!("{key}[{i}]"),
                        self.unknown_name_message(entry),
                    )),
                }
                continue;
            }
            match parse_entry(entry) {
                Ok(net) => nets.push(net),
                Err(message) => problems.push(Problem::new(format!("{key}[{i}]"), message)),
            }
        }
        if problems.is_empty() {
            Ok(IpSet::new(nets))
        } else {
            Err(problems)
        }
    }

    /// Compiles an `allow` list. `None` (the key is absent) gives `default`: pass
    /// [`Allowlist::any`] for `[server] allow`, and the compiled `[server] allow` for routes.
    /// An empty list is a problem (it would refuse every request).
    pub fn allowlist(
        &self,
        key: &str,
        entries: Option<&[String]>,
        default: &Allowlist,
    ) -> Result<Allowlist, Vec<Problem>> {
        match entries {
            None => Ok(default.clone()),
            Some([]) => Err(vec![Problem::new(
                key,
                "empty list would refuse every request; remove the key to use the default \
                 (the [server] allow list, or any address), or write [\"0.0.0.0/0\", \"::/0\"] \
                 to allow any address",
            )]),
            Some(entries) => self.resolve(key, entries).map(Allowlist::only),
        }
    }

    fn unknown_name_message(&self, name: &str) -> String {
        if self.sets.is_empty() && self.broken.is_empty() {
            format!(
                "unknown IP set {name:?}: no [ip_sets] are defined; define it there or write a \
                 CIDR such as \"10.0.0.0/8\""
            )
        } else {
            let names: BTreeSet<&String> = self.sets.keys().chain(&self.broken).collect();
            let known: Vec<String> = names.iter().map(|k| format!("{k:?}")).collect();
            format!(
                "unknown IP set {name:?}; known sets: {}. Define it under [ip_sets] or write a \
                 CIDR such as \"10.0.0.0/8\"",
                known.join(", ")
            )
        }
    }
}

/// Set names start with a letter and contain only letters, digits, `_` and `-`, so they can
/// never be mistaken for an address.
fn check_set_name(name: &str) -> Result<(), String> {
    if looks_like_set_name(name) {
        Ok(())
    } else {
        Err(format!(
            "invalid IP set name {name:?}; names start with a letter and use only letters, \
             digits, '_' and '-'"
        ))
    }
}

fn looks_like_set_name(text: &str) -> bool {
    let mut chars = text.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !text.contains(':')
}

fn resolve_path(base_dir: &Path, file: &Path) -> PathBuf {
    if file.is_absolute() {
        file.to_path_buf()
    } else {
        base_dir.join(file)
    }
}

/// Reads and parses an IP list file; every message names the file (and the line).
fn load_ip_file(path: &Path) -> Result<Vec<IpNet>, Vec<String>> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("cannot read IP list file {shown}: {e}")])?;
    parse_ip_list(&text).map_err(|errors| {
        errors
            .into_iter()
            .map(|(line, message)| format!("{shown} line {line}: {message}"))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> std::net::IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn shipped_ip_lists_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/ip");
        let mut found = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "txt") {
                let nets = load_ip_file(&path).unwrap_or_else(|e| panic!("{e:?}"));
                assert!(!nets.is_empty(), "{}", path.display());
                found += 1;
            }
        }
        assert!(found >= 2, "found {found} lists in {}", dir.display());
    }

    fn strings(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|e| e.to_string()).collect()
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("hookgate-allowlist-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn sets_file(toml_text: &str) -> IpSetsFile {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Doc {
            ip_sets: IpSetsFile,
        }
        toml::from_str::<Doc>(toml_text).unwrap().ip_sets
    }

    #[test]
    fn ip_sets_compile_inline_and_files() {
        let dir = temp_dir("ok");
        std::fs::create_dir_all(dir.join("ip")).unwrap();
        std::fs::write(
            dir.join("ip/hooks.txt"),
            "# test\n192.30.252.0/22\n2a0a:a440::/29\n",
        )
        .unwrap();
        let file = sets_file(
            r#"
            [ip_sets]
            office = ["203.0.113.0/24", "2001:db8:1::/48"]
            hooks = { file = "ip/hooks.txt" }
            "#,
        );
        let sets = IpSets::compile(&file, &dir).unwrap();
        assert_eq!(sets.names().collect::<Vec<_>>(), vec!["hooks", "office"]);
        assert!(sets.get("hooks").unwrap().contains(ip("192.30.253.1")));
        assert!(sets.get("office").unwrap().contains(ip("2001:db8:1::9")));

        let allow = sets
            .allowlist(
                "allow",
                Some(&strings(&["hooks", "10.0.0.0/8", "2001:db8::/32"])),
                &Allowlist::any(),
            )
            .unwrap();
        assert!(allow.permits(ip("192.30.252.1")));
        assert!(allow.permits(ip("10.2.3.4")));
        assert!(allow.permits(ip("2001:db8::1")));
        assert!(!allow.permits(ip("8.8.8.8")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ip_sets_report_every_problem() {
        let dir = temp_dir("bad");
        std::fs::write(dir.join("bad.txt"), "1.2.3.0/24\n\n1.2.3.4/24\nhello\n").unwrap();
        let file = sets_file(
            r#"
            [ip_sets]
            bad = { file = "bad.txt" }
            missing = { file = "nope.txt" }
            inline = ["10.0.0.0/8", "10.0.0.1/8", "x"]
            empty = []
            "1bad" = ["10.0.0.0/8"]
            "#,
        );
        let problems = IpSets::compile(&file, &dir).unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "1bad",
                "bad.file",
                "bad.file",
                "empty",
                "inline[1]",
                "inline[2]",
                "missing.file"
            ]
        );
        let bad: Vec<&str> = problems
            .iter()
            .filter(|p| p.key == "bad.file")
            .map(|p| p.message.as_str())
            .collect();
        assert!(bad[0].contains("bad.txt line 3"), "{}", bad[0]);
        assert!(bad[0].contains("\"1.2.3.0/24\""), "{}", bad[0]);
        assert!(bad[1].contains("bad.txt line 4"), "{}", bad[1]);
        let missing = problems.iter().find(|p| p.key == "missing.file").unwrap();
        assert!(missing.message.contains("nope.txt"), "{}", missing.message);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ip_set_source_shapes() {
        #[derive(Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Doc {
            ip_sets: IpSetsFile,
        }
        let err =
            toml::from_str::<Doc>("[ip_sets]\na = { file = \"x\", extra = 1 }\n").unwrap_err();
        assert!(err.to_string().contains("extra"), "{err}");
        let err = toml::from_str::<Doc>("[ip_sets]\na = 5\n").unwrap_err();
        assert!(err.to_string().contains("list of CIDRs"), "{err}");
        let err = toml::from_str::<Doc>("[ip_sets]\na = [1]\n").unwrap_err();
        assert!(err.to_string().contains("string"), "{err}");
    }

    #[test]
    fn allow_lists_name_the_index_and_known_sets() {
        let file =
            sets_file("[ip_sets]\ngithub = [\"192.30.252.0/22\"]\nstripe = [\"3.18.12.63\"]\n");
        let sets = IpSets::compile(&file, Path::new(".")).unwrap();
        let problems = sets
            .allowlist(
                "allow",
                Some(&strings(&["github", "10.0.0.1/8", "gitlab", "::1"])),
                &Allowlist::any(),
            )
            .unwrap_err();
        assert_eq!(problems.len(), 2);
        assert_eq!(problems[0].key, "allow[1]");
        assert_eq!(problems[1].key, "allow[2]");
        assert!(
            problems[1].message.contains("\"github\", \"stripe\""),
            "{}",
            problems[1].message
        );
        assert_eq!(
            problems[1]
                .clone()
                .within("routes[3]")
                .to_string()
                .split(':')
                .next(),
            Some("routes[3].allow[2]")
        );

        // Absent: the default. Empty: a problem.
        let server = sets
            .allowlist("allow", Some(&strings(&["stripe"])), &Allowlist::any())
            .unwrap();
        let route = sets.allowlist("allow", None, &server).unwrap();
        assert_eq!(route, server);
        assert!(route.permits(ip("3.18.12.63")) && !route.permits(ip("3.18.12.64")));
        assert!(Allowlist::any().permits(ip("8.8.8.8")));
        assert_eq!(
            sets.allowlist("allow", Some(&[]), &server).unwrap_err()[0].key,
            "allow"
        );

        // No sets defined.
        let none = IpSets::default()
            .resolve("trusted_proxies", &strings(&["lb"]))
            .unwrap_err();
        assert!(
            none[0].message.contains("no [ip_sets]"),
            "{}",
            none[0].message
        );
        assert!(IpSets::default()
            .resolve("trusted_proxies", &[])
            .unwrap()
            .is_empty());
    }
}
