//! One probe of one target: TCP connect, HTTP(S) request (in `http`), or an exec program.

use std::{
    io,
    net::SocketAddr,
    process::{ExitStatus, Stdio},
    time::Duration,
};

use tokio::{io::AsyncReadExt, net::TcpStream, process::Command, time::Instant};

use super::{http, human, CheckKind, CheckSpec, ProbeOutcome, Reason, TargetKey};

/// Sent with every HTTP(S) check, so a target's logs show who asks.
pub const USER_AGENT: &str = concat!("lb-health-check/", env!("CARGO_PKG_VERSION"));

/// At most this much of a response body is read for a `body_contains` match.
pub const BODY_LIMIT: usize = 64 * 1024;

/// At most the last this many bytes of an exec program's output are kept, for its weight
/// line; the rest is read and dropped.
const EXEC_OUTPUT_KEEP: usize = 4096;

/// Checks `key` once as `spec` says; never takes (much) longer than `spec.timeout`.
pub async fn probe(key: &TargetKey, spec: &CheckSpec) -> ProbeOutcome {
    let started = Instant::now();
    let addr = SocketAddr::new(key.address, spec.port);
    let run = async {
        match &spec.kind {
            CheckKind::Tcp => tcp(addr).await,
            CheckKind::Http {
                path,
                matcher,
                body_contains,
            } => http::check(addr, false, path, matcher, body_contains.as_deref()).await,
            CheckKind::Https {
                path,
                matcher,
                body_contains,
            } => http::check(addr, true, path, matcher, body_contains.as_deref()).await,
            CheckKind::Exec { command } => exec(key, spec.port, command).await,
        }
    };
    // Dropping the probe on timeout closes its socket, or kills the exec program's
    // process group (see `GroupKiller`).
    let mut outcome = match tokio::time::timeout(spec.timeout, run).await {
        Ok(outcome) => outcome,
        Err(_elapsed) => ProbeOutcome::failure(
            Reason::Timeout,
            format!("timed out after {}", human(spec.timeout)),
            Duration::ZERO,
        ),
    };
    outcome.latency = started.elapsed();
    outcome
}

/// Healthy when the connection is accepted.
async fn tcp(addr: SocketAddr) -> ProbeOutcome {
    match TcpStream::connect(addr).await {
        Ok(stream) => {
            // Close with a reset, as HAProxy's checks do: a plain close would leave a
            // TIME_WAIT socket per probe here, and at thousands of probes a second those
            // use up the ephemeral ports towards a target. A zero linger never blocks.
            if let Err(error) = stream.set_zero_linger() {
                tracing::debug!(%addr, %error, "cannot set SO_LINGER on a health-check socket");
            }
            ProbeOutcome::success("connected", Duration::ZERO)
        }
        Err(error) => connect_failure(&error),
    }
}

/// The outcome of a connection that could not be made (or broke): timeouts are
/// `Target.Timeout`, everything else `Target.FailedHealthChecks`.
pub(super) fn connect_failure(error: &io::Error) -> ProbeOutcome {
    let (reason, detail) = match error.kind() {
        io::ErrorKind::TimedOut => (Reason::Timeout, "connection timed out".to_owned()),
        io::ErrorKind::ConnectionRefused => {
            (Reason::FailedHealthChecks, "connection refused".to_owned())
        }
        io::ErrorKind::ConnectionReset => {
            (Reason::FailedHealthChecks, "connection reset".to_owned())
        }
        _ => (Reason::FailedHealthChecks, error.to_string()),
    };
    ProbeOutcome::failure(reason, detail, Duration::ZERO)
}

/// Runs the program; healthy when it exits 0. Its output may carry a weight line.
async fn exec(key: &TargetKey, port: u16, command: &[String]) -> ProbeOutcome {
    let Some((program, args)) = command.split_first() else {
        return ProbeOutcome::failure(Reason::InternalError, "empty command", Duration::ZERO);
    };
    let mut child = match Command::new(program)
        .args(args)
        .env("LB_TARGET_ADDRESS", key.address.to_string())
        .env("LB_TARGET_PORT", port.to_string())
        .env("LB_TARGET_GROUP", &key.group)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // Its own process group, so that a timeout kills what it started too (a shell's
        // `sleep`), not only the program itself.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(error) => {
            return ProbeOutcome::failure(
                Reason::InternalError,
                format!("cannot run {program}: {error}"),
                Duration::ZERO,
            )
        }
    };
    let mut killer = GroupKiller(child.id());
    // The output is read while the program runs, to the end, so that a program that
    // prints megabytes neither blocks on a full pipe nor dies of SIGPIPE: only its last
    // EXEC_OUTPUT_KEEP bytes are kept (the weight line is the last one).
    let reading = read_tail(child.stdout.take());
    tokio::pin!(reading);
    let mut output = None;
    // Once the program has exited, but before it is reaped (so its process group id
    // cannot have been reused yet), whatever it left running in its group is killed: a
    // check that forks children and exits 0 leaves nothing behind, and a child holding
    // the output pipe open cannot hold the probe until its timeout.
    match ExitWatch::new(child.id()) {
        Some(mut exit) => {
            loop {
                tokio::select! {
                    () = exit.exited() => break,
                    out = &mut reading, if output.is_none() => output = Some(out),
                }
            }
            killer.kill_group();
        }
        None => {
            tracing::debug!(%key, "cannot watch an exec health check with a pidfd; its leftover children are killed only on timeout")
        }
    }
    let output = match output {
        Some(out) => out,
        None => reading.await,
    };
    let status = child.wait().await;
    killer.disarm();
    let weight_pct = parse_exec_weight(&String::from_utf8_lossy(&output));
    let mut outcome = match status {
        Ok(status) if status.success() => ProbeOutcome::success("exit 0", Duration::ZERO),
        Ok(status) => ProbeOutcome::failure(
            Reason::FailedHealthChecks,
            describe_exit(status),
            Duration::ZERO,
        ),
        Err(error) => ProbeOutcome::failure(
            Reason::InternalError,
            format!("cannot wait for {program}: {error}"),
            Duration::ZERO,
        ),
    };
    outcome.weight_pct = weight_pct;
    outcome
}

fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// The last `weight=N` or `N%` line of an exec program's output, clamped to 100.
fn parse_exec_weight(output: &str) -> Option<u8> {
    output
        .lines()
        .rev()
        .find_map(|line| {
            let line = line.trim();
            let number = line
                .strip_prefix("weight=")
                .or_else(|| line.strip_suffix('%'))?;
            number.trim().parse::<u32>().ok()
        })
        .map(|pct| pct.min(100) as u8)
}

/// Reads `stdout` to its end, keeping the last [`EXEC_OUTPUT_KEEP`] bytes.
async fn read_tail(stdout: Option<tokio::process::ChildStdout>) -> Vec<u8> {
    let Some(mut stdout) = stdout else {
        return Vec::new();
    };
    let mut kept = Vec::with_capacity(EXEC_OUTPUT_KEEP);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stdout.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * EXEC_OUTPUT_KEEP {
                    kept.drain(..kept.len() - EXEC_OUTPUT_KEEP);
                }
            }
            Err(error) => {
                tracing::debug!(%error, "cannot read the output of an exec health check");
                break;
            }
        }
    }
    if kept.len() > EXEC_OUTPUT_KEEP {
        kept.drain(..kept.len() - EXEC_OUTPUT_KEEP);
    }
    kept
}

/// Tells when a child process has exited without reaping it: a pidfd (Linux 5.3) turns
/// readable then, and the zombie keeps its pid, and so its process group id, reserved.
struct ExitWatch(tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>);

impl ExitWatch {
    fn new(pid: Option<u32>) -> Option<Self> {
        use std::os::fd::FromRawFd as _;
        let pid = libc::pid_t::try_from(pid?).ok()?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
        // SAFETY: the descriptor was just created and is owned by nothing else.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        // SAFETY: the AsyncFd owns the descriptor, so it stays open while registered.
        unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        }
        .ok()
        .map(Self)
    }

    async fn exited(&mut self) {
        // Readable once the process has exited, and from then on: no need to clear it.
        if let Err(error) = self.0.readable().await {
            tracing::debug!(%error, "cannot poll an exec health check's pidfd");
            std::future::pending::<()>().await;
        }
    }
}

/// Kills an exec program's process group unless disarmed: a probe dropped on timeout
/// takes the program and its children with it.
struct GroupKiller(Option<u32>);

impl GroupKiller {
    /// The program has exited and been reaped; its group id may be reused from now on.
    fn disarm(&mut self) {
        self.0 = None;
    }

    /// Kills the group now (the program may still be a zombie: its id is still ours).
    fn kill_group(&self) {
        let Some(pid) = self.0.and_then(|pid| i32::try_from(pid).ok()) else {
            return;
        };
        let group = nix::unistd::Pid::from_raw(pid);
        match nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL) {
            // Nothing left in the group: the usual case once the program has exited.
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(error) => {
                tracing::debug!(pid, %error, "cannot kill an exec health check's process group")
            }
        }
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill_group();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StatusMatcher;
    use tokio::net::TcpListener;

    pub(crate) fn spec(kind: CheckKind, port: u16, timeout: Duration) -> CheckSpec {
        CheckSpec {
            kind,
            port,
            interval: Duration::from_secs(1),
            timeout,
            healthy_threshold: 2,
            unhealthy_threshold: 2,
        }
    }

    fn local() -> TargetKey {
        TargetKey::new("web", "127.0.0.1".parse().expect("an address"))
    }

    /// A port nothing listens on (bound, then closed).
    async fn closed_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("address").port()
    }

    #[tokio::test]
    async fn tcp_accepted_is_healthy() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let outcome = probe(
            &local(),
            &spec(CheckKind::Tcp, port, Duration::from_secs(1)),
        )
        .await;
        assert!(outcome.healthy, "{outcome:?}");
        assert_eq!(outcome.reason, None);
        assert_eq!(outcome.detail, "connected");
    }

    #[tokio::test]
    async fn tcp_refused_fails_the_check() {
        let port = closed_port().await;
        let outcome = probe(
            &local(),
            &spec(CheckKind::Tcp, port, Duration::from_secs(1)),
        )
        .await;
        assert!(!outcome.healthy);
        assert_eq!(outcome.reason, Some(Reason::FailedHealthChecks));
        assert_eq!(outcome.detail, "connection refused");
    }

    fn exec_spec(script: &str, timeout: Duration) -> CheckSpec {
        let command = vec!["/bin/sh".to_owned(), "-c".to_owned(), script.to_owned()];
        spec(CheckKind::Exec { command }, 8080, timeout)
    }

    #[tokio::test]
    async fn exec_exit_status_decides() {
        let second = Duration::from_secs(2);
        let ok = probe(&local(), &exec_spec("exit 0", second)).await;
        assert!(ok.healthy, "{ok:?}");
        assert_eq!(ok.weight_pct, None);
        let failed = probe(&local(), &exec_spec("exit 1", second)).await;
        assert_eq!(failed.reason, Some(Reason::FailedHealthChecks));
        assert_eq!(failed.detail, "exit 1");
    }

    #[tokio::test]
    async fn exec_gets_the_target_in_its_environment() {
        let script =
            r#"test "$LB_TARGET_ADDRESS:$LB_TARGET_PORT:$LB_TARGET_GROUP" = 127.0.0.1:8080:web"#;
        let outcome = probe(&local(), &exec_spec(script, Duration::from_secs(2))).await;
        assert!(outcome.healthy, "{outcome:?}");
    }

    #[tokio::test]
    async fn exec_reports_a_weight() {
        let second = Duration::from_secs(2);
        let half = probe(
            &local(),
            &exec_spec("echo starting; echo weight=50", second),
        )
        .await;
        assert!(half.healthy);
        assert_eq!(half.weight_pct, Some(50));
        let pct = probe(&local(), &exec_spec("echo 250%", second)).await;
        assert_eq!(pct.weight_pct, Some(100));
    }

    #[tokio::test]
    async fn exec_is_killed_on_timeout() {
        let timeout = Duration::from_millis(200);
        let started = std::time::Instant::now();
        let outcome = probe(&local(), &exec_spec("sleep 5", timeout)).await;
        assert!(started.elapsed() < timeout + Duration::from_millis(300));
        assert_eq!(outcome.reason, Some(Reason::Timeout));
        assert_eq!(outcome.detail, "timed out after 200ms");
    }

    #[tokio::test]
    async fn a_timeout_kills_what_the_program_started_too() {
        let pid_file = pid_file("exec");
        let script = format!("sleep 5 & echo $! > {}; wait", pid_file.display());
        let outcome = probe(&local(), &exec_spec(&script, Duration::from_millis(200))).await;
        assert_eq!(outcome.reason, Some(Reason::Timeout));
        assert_gone(&pid_file).await;
    }

    /// A process id written to `file` by a script is gone (or a zombie waiting for init
    /// to reap it) within a second.
    async fn assert_gone(pid_file: &std::path::Path) {
        let pid = std::fs::read_to_string(pid_file).expect("the script wrote its child's pid");
        let _ = std::fs::remove_file(pid_file);
        let stat = format!("/proc/{}/stat", pid.trim());
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        let dead = || {
            std::fs::read_to_string(&stat).map_or(true, |stat| {
                stat.rsplit(") ")
                    .next()
                    .is_some_and(|rest| rest.starts_with('Z'))
            })
        };
        while !dead() {
            assert!(std::time::Instant::now() < deadline, "{stat} survived");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn pid_file(what: &str) -> std::path::PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        std::env::temp_dir().join(format!("lb-health-{what}-{}-{nanos}", std::process::id()))
    }

    #[tokio::test]
    async fn children_left_behind_by_a_passing_check_are_killed() {
        // One child with its output elsewhere (the program's exit ends the read), one
        // holding the output pipe (the read would wait for it until the timeout).
        let (quiet, holding) = (pid_file("quiet"), pid_file("holding"));
        let script = format!(
            "sleep 30 >/dev/null & echo $! > {}; sleep 30 & echo $! > {}; echo weight=40; exit 0",
            quiet.display(),
            holding.display()
        );
        let timeout = Duration::from_secs(3);
        let started = std::time::Instant::now();
        let outcome = probe(&local(), &exec_spec(&script, timeout)).await;
        assert!(outcome.healthy, "{outcome:?}");
        assert_eq!(outcome.weight_pct, Some(40));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the check waited for its children: {:?}",
            started.elapsed()
        );
        assert_gone(&quiet).await;
        assert_gone(&holding).await;
    }

    #[tokio::test]
    async fn megabytes_of_output_are_read_and_dropped() {
        // 8 MiB, then the weight line: the program is neither blocked nor killed by a
        // closed pipe, and the line after the flood still counts.
        let script = "head -c 8388608 /dev/zero; echo; echo weight=30";
        let outcome = probe(&local(), &exec_spec(script, Duration::from_secs(5))).await;
        assert!(outcome.healthy, "{outcome:?}");
        assert_eq!(outcome.weight_pct, Some(30));
        // Output without end is a program that never finishes.
        let endless = probe(&local(), &exec_spec("yes", Duration::from_millis(300))).await;
        assert_eq!(endless.reason, Some(Reason::Timeout), "{endless:?}");
    }

    #[tokio::test]
    async fn exec_that_cannot_start_is_an_internal_error() {
        let command = vec!["/nonexistent/check".to_owned()];
        let spec = spec(CheckKind::Exec { command }, 80, Duration::from_secs(1));
        let outcome = probe(&local(), &spec).await;
        assert_eq!(outcome.reason, Some(Reason::InternalError));
    }

    #[test]
    fn exec_weight_lines() {
        assert_eq!(parse_exec_weight("weight=0\n"), Some(0));
        assert_eq!(parse_exec_weight("75%"), Some(75));
        assert_eq!(parse_exec_weight("ok\nweight=x\n"), None);
        assert_eq!(parse_exec_weight("weight=10\nweight=20"), Some(20));
    }

    #[test]
    fn the_matcher_reads_as_configured() {
        // Used in details: "HTTP 500 not in 200-399".
        let matcher = StatusMatcher::parse("200-399").expect("a matcher");
        assert_eq!(matcher.to_string(), "200-399");
    }
}
