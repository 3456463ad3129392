//! Why a configuration was not accepted, and how that reads: the file and position of a
//! TOML-level error, or the list of every validation problem.

use std::path::{Path, PathBuf};

/// Why a configuration was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not TOML, or not this schema's shape (unknown key, wrong type). TOML reports one
    /// such error at a time.
    #[error("{}{}{message}", origin(.path.as_deref()), position(*.line, *.column))]
    Syntax {
        path: Option<PathBuf>,
        /// 1-based line and column (in characters) of the offending text, when known.
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    /// Well-formed, but some values are wrong: every problem found, one line each.
    #[error("{}", invalid(.path.as_deref(), .problems))]
    Invalid {
        path: Option<PathBuf>,
        problems: Vec<String>,
    },
}

impl ConfigError {
    /// The individual problems: every one for [`ConfigError::Invalid`], the message for
    /// the others.
    pub fn problems(&self) -> Vec<String> {
        match self {
            Self::Invalid { problems, .. } => problems.clone(),
            other => vec![other.to_string()],
        }
    }
}

fn origin(path: Option<&Path>) -> String {
    match path {
        Some(p) => format!("configuration file {}: ", p.display()),
        None => "configuration: ".to_owned(),
    }
}

fn position(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!("line {l}, column {c}: "),
        (Some(l), None) => format!("line {l}: "),
        _ => String::new(),
    }
}

fn invalid(path: Option<&Path>, problems: &[String]) -> String {
    let what = match path {
        Some(p) => format!("configuration file {}", p.display()),
        None => "configuration".to_owned(),
    };
    let count = match problems.len() {
        1 => "1 problem".to_owned(),
        n => format!("{n} problems"),
    };
    let mut text = format!("{what} is invalid ({count}):");
    for p in problems {
        text.push_str("\n  - ");
        text.push_str(p);
    }
    text
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}
