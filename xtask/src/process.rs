//! Running external commands, all the same way.
//!
//! Every step of xtask is some other program (apt-get, cargo, mount, …). When one fails,
//! the person at the terminal needs the exact command line and what it printed, so they
//! can rerun it by hand: these helpers print both and return an error with context.

use std::{
    ffi::OsStr,
    fmt::Write as _,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};

/// Runs `cmd` with the terminal as its stdio (for long steps whose progress matters).
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = display(cmd);
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        // Its stderr already went to the terminal.
        eprintln!("xtask: command failed ({status}): {shown}");
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its stdout; on failure prints the command and its output.
pub fn output(cmd: &mut Command) -> Result<String> {
    let shown = display(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !out.status.success() {
        eprintln!("xtask: command failed ({}): {shown}", out.status);
        print_tail("stdout", &out.stdout, 20);
        print_tail("stderr", &out.stderr, usize::MAX);
        bail!("`{shown}` failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` with stderr on the terminal and returns its stdout (for cargo's JSON messages).
pub fn stdout_only(cmd: &mut Command) -> Result<String> {
    let shown = display(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !out.status.success() {
        eprintln!("xtask: command failed ({}): {shown}", out.status);
        bail!("`{shown}` failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A detection probe: stdout if `cmd` ran and exited 0, `None` otherwise, silently
/// (a missing or broken tool is an answer here, not an error).
pub fn probe(cmd: &mut Command) -> Option<String> {
    let out = cmd.stdin(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Replaces this process with `cmd`, so signals reach it directly and its exit status is
/// ours. Returns only if the exec itself failed.
pub fn exec(cmd: &mut Command) -> anyhow::Error {
    let shown = display(cmd);
    let err = cmd.exec();
    eprintln!("xtask: could not run: {shown}");
    anyhow::Error::new(err).context(format!("could not exec `{shown}`"))
}

/// Finds `name` on PATH, or in the sbin directories a non-root PATH often lacks.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            [
                "/usr/local/sbin",
                "/usr/local/bin",
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
                "/bin",
            ]
            .map(PathBuf::from),
        )
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The command as a shell line, with the variables it sets in front.
pub fn display(cmd: &Command) -> String {
    let mut line = String::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            let _ = write!(line, "{}={} ", key.to_string_lossy(), quote(value));
        }
    }
    line.push_str(&quote(cmd.get_program()));
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&quote(arg));
    }
    line
}

fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn print_tail(label: &str, bytes: &[u8], max_lines: usize) {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    if lines.is_empty() {
        return;
    }
    let skip = lines.len().saturating_sub(max_lines);
    eprintln!(
        "--- {label}{} ---",
        if skip > 0 { " (last lines)" } else { "" }
    );
    for line in &lines[skip..] {
        eprintln!("{line}");
    }
}
