//! Tests of the configuration: one file per part of the validator (`address`, `agent`,
//! `vip`, `group`, `health`, `agent_check`, `cross`, and `metrics` for `[metrics]`), plus
//! `report` (how problems are reported), `example` (the shipped file and the defaults),
//! `abi` (a VIP's data-plane values) and `draft` (runtime edits). Here: the fixtures they
//! share, which build small files from TOML snippets and read back the result.

mod abi;
mod address;
mod agent;
mod agent_check;
mod announce;
mod cross;
mod draft;
mod example;
mod group;
mod health;
mod metrics;
mod report;
mod vip;

use super::{parse, Config, ConfigError, EXAMPLE};

/// The configuration `text` describes; panics, showing the problems, if it is invalid.
fn ok(text: &str) -> Config {
    parse(text).unwrap_or_else(|e| panic!("rejected: {e}\n--- text ---\n{text}"))
}

/// Every problem `text` has (it must be well-formed TOML).
fn problems(text: &str) -> Vec<String> {
    match parse(text) {
        Err(ConfigError::Invalid { problems, path }) => {
            assert_eq!(path, None);
            problems
        }
        Err(e) => panic!("expected validation problems, got: {e}\n--- text ---\n{text}"),
        Ok(_) => panic!("accepted an invalid configuration:\n{text}"),
    }
}

/// The one problem `text` has.
fn problem(text: &str) -> String {
    let p = problems(text);
    assert_eq!(p.len(), 1, "expected one problem, got {p:#?}");
    p.into_iter().next().unwrap_or_default()
}

/// A `[[vip]]` table with the required fields filled in (VIP "v", 198.18.200.1:80 tcp, to
/// group "g"), each replaced or added by `fields` (TOML key, TOML value); an empty value
/// leaves the key out.
fn vip(fields: &[(&str, &str)]) -> String {
    let mut all: Vec<(String, String)> = [
        ("name", "\"v\""),
        ("address", "\"198.18.200.1\""),
        ("port", "80"),
        ("protocol", "\"tcp\""),
        ("target_group", "\"g\""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in fields {
        match all.iter_mut().find(|(name, _)| name == k) {
            Some(entry) => entry.1 = v.to_string(),
            None => all.push((k.to_string(), v.to_string())),
        }
    }
    let mut text = "[[vip]]\n".to_owned();
    for (k, v) in all.iter().filter(|(_, v)| !v.is_empty()) {
        text.push_str(&format!("{k} = {v}\n"));
    }
    text
}

/// A `[[target_group]]` called `name` with `keys` (TOML lines) and targets at `addresses`.
fn group(name: &str, keys: &str, addresses: &[&str]) -> String {
    let mut text = format!("[[target_group]]\nname = \"{name}\"\n{keys}\n");
    for a in addresses {
        text.push_str(&format!("[[target_group.target]]\naddress = \"{a}\"\n"));
    }
    text
}

/// Group "g" with one IPv4 target and `keys`.
fn group_g(keys: &str) -> String {
    group("g", keys, &["198.18.11.2"])
}

/// VIP "v" (with `fields` changed) and group "g".
fn vip_and_group(fields: &[(&str, &str)]) -> String {
    vip(fields) + &group_g("")
}

/// The example's commented-out tunnel block, uncommented as its instructions say.
fn example_with_tunnel_block() -> String {
    let mut inside = false;
    let mut out = String::new();
    for line in EXAMPLE.lines() {
        if line.starts_with("# --- begin") {
            inside = true;
        } else if line.starts_with("# --- end") {
            inside = false;
        } else if inside {
            let line = line.strip_prefix('#').unwrap_or(line);
            let line = if line.starts_with('#') {
                line
            } else {
                line.strip_prefix(' ').unwrap_or(line)
            };
            out.push_str(line);
            out.push('\n');
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The line, column and message of the TOML-level error `text` has.
fn syntax(text: &str) -> (Option<usize>, Option<usize>, String) {
    match parse(text) {
        Err(ConfigError::Syntax {
            path,
            line,
            column,
            message,
        }) => {
            assert_eq!(path, None);
            (line, column, message)
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

/// A file in the system temporary directory, removed on drop.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("lb-config-test-{}-{name}.toml", std::process::id()));
        std::fs::write(&path, text).expect("write temp file");
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
