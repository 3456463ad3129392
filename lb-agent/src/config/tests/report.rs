//! How problems are reported (`validate/mod.rs`, `ConfigError`): syntax errors with line
//! and column, every validation problem at once, required fields and names, errors that
//! name the file.

use std::path::Path;

use super::{group, group_g, ok, problem, problems, syntax, vip, vip_and_group, TempFile};
use crate::config::{load, parse, ConfigError, EXAMPLE};

#[test]
fn unknown_field_is_rejected_with_line_and_column() {
    let text = vip(&[("colour", "\"red\"")]) + &group_g("");
    let line = text
        .lines()
        .position(|l| l.starts_with("colour"))
        .expect("line")
        + 1;
    let (l, c, message) = syntax(&text);
    assert_eq!((l, c), (Some(line), Some(1)));
    assert!(
        message.contains("unknown field `colour`"),
        "message: {message}"
    );
    let shown = parse(&text).expect_err("rejected").to_string();
    assert!(
        shown.starts_with(&format!(
            "configuration: line {line}, column 1: unknown field"
        )),
        "{shown}"
    );
}

#[test]
fn unknown_fields_in_every_table_are_rejected() {
    let cases = [
        ("[agent]\nhash_sead = 1\n".to_owned(), "hash_sead"),
        // Targets have no port: lb never rewrites the destination port.
        (
            vip(&[])
                + &group_g("")
                + "  [[target_group.target]]\n  address = \"198.18.12.2\"\n  port = 8080\n",
            "port",
        ),
        (
            vip(&[]) + &group_g("[target_group.health_check]\n    intervall_secs = 5"),
            "intervall_secs",
        ),
        (vip(&[]) + &group_g("") + "[vips]\n", "vips"),
    ];
    for (text, key) in cases {
        let (l, c, message) = syntax(&text);
        assert!(
            message.contains(&format!("unknown field `{key}`")),
            "{message}\n{text}"
        );
        // The last line naming the key (an earlier table may have a valid one).
        let lines: Vec<&str> = text.lines().collect();
        let line = lines
            .iter()
            .rposition(|l| l.trim_start().starts_with(key) || l.starts_with(&format!("[{key}]")))
            .expect("line");
        assert_eq!(l, Some(line + 1), "{message}\n{text}");
        let column = lines[line].find(key).expect("key") + 1;
        assert_eq!(c, Some(column), "{message}\n{text}");
    }
}

#[test]
fn wrong_type_and_bad_toml_are_syntax_errors() {
    let (l, _, message) = syntax(&vip(&[("port", "\"80\"")]));
    assert_eq!(l, Some(4));
    assert!(message.contains("invalid type"), "{message}");
    let (l, c, message) = syntax("[[vip]]\nname = \"v\nport = 1\n");
    assert_eq!(l, Some(2), "{message}");
    assert!(c.is_some(), "{message}");
}

#[test]
fn all_problems_are_reported() {
    let text =
        vip(&[("port", "70000"), ("mode", "\"nat\"")]) + &group_g("deregistration_delay_secs = -1");
    assert_eq!(
        problems(&text),
        [
            "vip \"v\": field \"port\": 70000 is out of range: must be between 0 and 65535",
            "vip \"v\": field \"mode\": \"nat\" is not one of \"dr\", \"tunnel\", \"gue\"",
            "target_group \"g\": field \"deregistration_delay_secs\": -1 is out of range: must \
             be between 0 and 3600",
        ]
    );
    let shown = parse(&text).expect_err("rejected").to_string();
    assert!(
        shown.starts_with("configuration is invalid (3 problems):\n  - vip \"v\": field \"port\""),
        "{shown}"
    );
    assert_eq!(shown.lines().count(), 4);
}

#[test]
fn missing_required_fields() {
    assert_eq!(
        problems("[[vip]]\nname = \"v\"\n"),
        [
            "vip \"v\": field \"address\": missing (required)",
            "vip \"v\": field \"port\": missing (required)",
            "vip \"v\": field \"protocol\": missing (required)",
            "vip \"v\": field \"target_group\": missing (required)",
        ]
    );
    assert_eq!(
        problems(
            &(vip(&[]) + &group_g("") + "[[vip]]\n[[target_group]]\n[[target_group.target]]\n")
        ),
        [
            "vip #2: field \"name\": missing (required)",
            "vip #2: field \"address\": missing (required)",
            "vip #2: field \"port\": missing (required)",
            "vip #2: field \"protocol\": missing (required)",
            "vip #2: field \"target_group\": missing (required)",
            "target_group #2: field \"name\": missing (required)",
            "target_group #2: target #1: field \"address\": missing (required)",
        ]
    );
}

#[test]
fn names_are_checked() {
    assert_eq!(
        problem(&vip_and_group(&[("name", "\"web server\"")])),
        "vip \"web server\": field \"name\": \"web server\" contains ' '; names use only \
         letters, digits, '.', '_' and '-'"
    );
    let long = "x".repeat(65);
    assert_eq!(
        problem(&vip_and_group(&[("name", &format!("\"{long}\""))])),
        format!("vip \"{long}\": field \"name\": is 65 characters long; at most 64 are allowed")
    );
    assert_eq!(
        problem(&vip_and_group(&[("name", "\"\"")])),
        "vip #1: field \"name\": must not be empty"
    );
    ok(&vip_and_group(&[(
        "name",
        &format!("\"{}\"", "a".repeat(64)),
    )]));
    ok(&vip_and_group(&[("name", "\"Web-1.prod_v2\"")]));
    assert_eq!(
        problem(&(vip(&[("target_group", "\"g/1\"")]) + &group("g/1", "", &["198.18.11.2"]))),
        "target_group \"g/1\": field \"name\": \"g/1\" contains '/'; names use only letters, \
         digits, '.', '_' and '-'"
    );
}

#[test]
fn load_names_the_file_in_errors() {
    let missing = Path::new("/nonexistent/lb.toml");
    let e = load(missing).expect_err("no such file");
    assert!(matches!(e, ConfigError::Read { ref path, .. } if path == missing));
    assert!(
        e.to_string()
            .starts_with("cannot read the configuration file /nonexistent/lb.toml: "),
        "{e}"
    );

    let f = TempFile::new("syntax", "[agent]\nseed = 1\n");
    let e = load(&f.0).expect_err("unknown field");
    assert!(
        e.to_string().starts_with(&format!(
            "configuration file {}: line 2, column 1: unknown field `seed`",
            f.0.display()
        )),
        "{e}"
    );

    let f = TempFile::new("invalid", &vip_and_group(&[("port", "-1")]));
    let e = load(&f.0).expect_err("invalid");
    assert_eq!(
        e.to_string(),
        format!(
            "configuration file {} is invalid (1 problem):\n  - vip \"v\": field \"port\": -1 is \
             out of range: must be between 0 and 65535",
            f.0.display()
        )
    );
    assert_eq!(
        e.problems(),
        ["vip \"v\": field \"port\": -1 is out of range: must be between 0 and 65535"]
    );

    let f = TempFile::new("example", EXAMPLE);
    assert_eq!(load(&f.0).expect("example loads"), ok(EXAMPLE));
}
