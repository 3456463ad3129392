//! Throwaway network topologies (namespaces + veth pairs) for end-to-end tests and the demo.
//!
//! The load balancer only proves itself on real packets between real processes: a client, the
//! XDP program on a veth, and backends that answer. Network namespaces give every test its own
//! hosts, addresses and routes without touching the machine's network, so tests can run in
//! parallel and on a developer's laptop. What they do not give is cleanup: a namespace outlives
//! the test that made it, and a process left inside one keeps its veths alive. So everything
//! here is owned:
//!
//! - [`Topology`] deletes every namespace it created when it is dropped, including while a
//!   failing test unwinds, after killing whatever still runs inside them.
//! - [`Topology::new`] first removes what a crashed or killed earlier run left behind under the
//!   same prefix, so one bad run does not poison the next.
//! - [`ChildGuard`] stops and reaps the process it holds.
//!
//! Everything goes through `ip` (iproute2), the same tool an operator would use to reproduce a
//! failing topology by hand. Only [`Ns::enter`] uses `setns(2)` directly, because sockets and
//! netlink/BPF-link calls must be made from a thread that lives in the namespace.
//!
//! Tests must only use addresses in 198.18.0.0/15 (RFC 2544) and 2001:2::/48 (RFC 5180).

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use nix::errno::Errno;
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{geteuid, getpid, Pid};

/// Where `ip netns add` bind-mounts named namespaces.
const NETNS_RUN_DIR: &str = "/run/netns";

/// `IFNAMSIZ - 1`: the kernel rejects longer interface names, and `ip` would only say
/// "name not a valid ifname", so we check first and name the culprit.
const MAX_IFNAME_LEN: usize = 15;

/// Sysctls set in every new namespace, with the reason for each.
const NS_SYSCTLS: &[(&str, &str)] = &[
    // Duplicate address detection keeps a new IPv6 address "tentative" (unusable) for about a
    // second; a test would race it. `nodad` covers addresses we add, these cover the rest
    // (link-local addresses of veths created later inherit `default`).
    ("net.ipv6.conf.all.accept_dad", "0"),
    ("net.ipv6.conf.default.accept_dad", "0"),
    // A new namespace inherits IPv4 `conf/{all,default}` from the root namespace
    // (net.core.devconf_inherit_init_net = 0), and Debian sets rp_filter = 2 there. The
    // effective value is max(all, interface), so both must be 0 for a load balancer's
    // asymmetric paths (direct server return, VIP on a backend's loopback) to work.
    ("net.ipv4.conf.all.rp_filter", "0"),
    ("net.ipv4.conf.default.rp_filter", "0"),
];

/// Fails with the reason when the process is not root.
///
/// Namespaced end-to-end tests cannot run unprivileged; they must fail loudly rather than
/// silently pass, or a green run would mean nothing.
pub fn require_root() -> Result<()> {
    if geteuid().is_root() {
        Ok(())
    } else {
        bail!(
            "this test needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF): run it through \
             `cargo xtask test`, which re-executes under sudo"
        )
    }
}

/// Polls `f` every 20 ms until it returns true or `timeout` has passed; returns whether it did.
///
/// Packets, sysctls and process exits take effect asynchronously; polling with a deadline is
/// both faster and less flaky than a fixed sleep.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    const INTERVAL: Duration = Duration::from_millis(20);
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(INTERVAL.min(deadline - now));
    }
}

/// Sets its flag when dropped: a load loop's stop flag, so a scoped workload ends however
/// the code driving it ends (an error returned early or a panic included), instead of
/// the scope waiting for it forever.
pub struct StopOnDrop<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A set of namespaces named `<prefix>-<name>`, deleted (with everything in them) on drop.
#[derive(Debug)]
pub struct Topology {
    prefix: String,
    /// Full names, in creation order. Only these are deleted on drop: a [`Ns`] handle does not
    /// own anything, so clones of it can be passed around freely.
    namespaces: Vec<String>,
}

impl Topology {
    /// Starts a topology whose namespaces are all named `<prefix>-<name>`.
    ///
    /// Removes leftovers of an earlier run first: every namespace whose name starts with
    /// `<prefix>-`, after killing the processes inside it. Each test must therefore use its own
    /// prefix, and no prefix may be another one followed by `-` (`lbt` would sweep `lbt-x-…`).
    pub fn new(prefix: &str) -> Result<Self> {
        require_root()?;
        check_name("namespace prefix", prefix)?;
        let stale: Vec<String> = netns_list()?
            .into_iter()
            .filter(|name| has_prefix(name, prefix))
            .collect();
        if !stale.is_empty() {
            eprintln!("netns: removing leftovers of an earlier run: {stale:?}");
            // They are orphans: nobody waits for a graceful exit, so SIGKILL at once.
            kill_processes_in(&stale, Duration::ZERO)?;
            for name in &stale {
                netns_delete(name)?;
            }
        }
        Ok(Self {
            prefix: prefix.to_owned(),
            namespaces: Vec::new(),
        })
    }

    /// The prefix every namespace of this topology starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Creates namespace `<prefix>-<name>` with `lo` up and the test sysctls set.
    pub fn add_ns(&mut self, name: &str) -> Result<Ns> {
        check_name("namespace name", name)?;
        let full = format!("{}-{name}", self.prefix);
        ensure!(
            !self.namespaces.contains(&full),
            "namespace {full} already exists in this topology"
        );
        run_checked(Command::new("ip").args(["netns", "add", &full]))?;
        // Recorded before configuring it, so a failure below still deletes it on drop.
        self.namespaces.push(full.clone());
        let ns = Ns { name: full };
        ns.ip(&["link", "set", "lo", "up"])?;
        for (key, value) in NS_SYSCTLS {
            ns.sysctl(key, value)?;
        }
        Ok(ns)
    }

    /// Connects `a` and `b` with a veth pair (`a_if` in `a`, `b_if` in `b`), both ends up.
    ///
    /// Both namespaces must belong to this topology: deleting them is what removes the pair.
    pub fn veth(&mut self, a: &Ns, a_if: &str, b: &Ns, b_if: &str) -> Result<()> {
        check_ifname(a_if)?;
        check_ifname(b_if)?;
        for ns in [a, b] {
            ensure!(
                self.namespaces.contains(&ns.name),
                "namespace {} does not belong to topology {}",
                ns.name,
                self.prefix
            );
        }
        // Created inside `a` with the peer placed straight into `b`: the pair never exists in
        // the root namespace, so it cannot collide with the host's interfaces or leak there.
        a.ip(&[
            "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
        ])?;
        a.ip(&["link", "set", a_if, "up"])?;
        b.ip(&["link", "set", b_if, "up"])?;
        Ok(())
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Never panic here: this also runs while a failed test unwinds, and a second panic
        // would abort the whole test binary. Failures are reported and cleanup goes on.
        if let Err(e) = kill_processes_in(&self.namespaces, Duration::from_secs(1)) {
            eprintln!("netns: cleanup of {}: {e:#}", self.prefix);
        }
        for name in self.namespaces.iter().rev() {
            if let Err(e) = netns_delete(name) {
                eprintln!("netns: cleanup of {}: {e:#}", self.prefix);
            }
        }
    }
}

/// A handle to one namespace of a [`Topology`]; it owns nothing and may be cloned freely.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ns {
    /// The full name, `<prefix>-<name>`, as `ip netns list` shows it.
    pub name: String,
}

/// `aa:bb:cc:dd:ee:ff`, as `ip neigh` takes it.
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Ns {
    /// Fails unless `ifname` here has a driver-mode (not generic) XDP program.
    pub fn ensure_native_xdp(&self, ifname: &str) -> Result<()> {
        let out = self.ip(&["-d", "link", "show", "dev", ifname])?;
        let text = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(
            text.contains("prog/xdp ") && !text.contains("xdpgeneric"),
            "expected a native XDP program on {ifname} in {}:\n{text}",
            self.name
        );
        Ok(())
    }

    /// The bind mount that pins this namespace, the handle for `setns(2)`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(NETNS_RUN_DIR).join(&self.name)
    }

    /// Runs `ip -n <ns> <args>`; fails with `ip`'s stderr on non-zero exit.
    pub fn ip(&self, args: &[&str]) -> Result<Output> {
        run_checked(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// Adds an address (`198.18.0.1/24`, `2001:2::1/64`) to `ifname`.
    pub fn addr(&self, ifname: &str, cidr: &str) -> Result<()> {
        let mut args = vec!["addr", "add", cidr, "dev", ifname];
        if cidr.contains(':') {
            // Usable at once instead of "tentative" until DAD finishes.
            args.push("nodad");
        }
        self.ip(&args).map(drop)
    }

    /// `ip route add <args>`, with `-6` when any argument is an IPv6 address.
    pub fn route(&self, args: &[&str]) -> Result<()> {
        let mut full = Vec::with_capacity(args.len() + 3);
        if args.iter().any(|a| a.contains(':')) {
            full.push("-6");
        }
        full.extend(["route", "add"]);
        full.extend_from_slice(args);
        self.ip(&full).map(drop)
    }

    /// Sets a sysctl (`net.ipv4.ip_forward`, or a `/`-separated path for keys whose parts
    /// contain dots) in this namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = sysctl_path(key)?;
        // /proc/sys/net resolves against the calling *thread's* namespace, so writing it from
        // an entered thread needs no `sysctl` binary and no process per key.
        self.enter(|| std::fs::write(&path, value))?
            .with_context(|| format!("sysctl {key}={value} in {}", self.name))
    }

    /// The MAC address of `ifname`.
    pub fn mac(&self, ifname: &str) -> Result<[u8; 6]> {
        let out = self.ip(&["-o", "link", "show", "dev", ifname])?;
        let text = String::from_utf8_lossy(&out.stdout);
        parse_link_mac(&text)
            .with_context(|| format!("no MAC address for {ifname} in {}: {text}", self.name))
    }

    /// The interface index of `ifname` inside this namespace (indexes are per namespace).
    pub fn ifindex(&self, ifname: &str) -> Result<u32> {
        self.enter(|| nix::net::if_::if_nametoindex(ifname))?
            .with_context(|| format!("no interface {ifname} in {}", self.name))
    }

    /// A `Command` that runs `prog args` inside the namespace (`ip netns exec`), stdin closed.
    ///
    /// `ip netns exec` execs the program in place, so the child's pid is the program's and
    /// signals reach it directly. It also remounts /sys, so /sys/class/net shows this
    /// namespace's interfaces to the program.
    pub fn command(&self, prog: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, prog])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `prog args` in the namespace to completion; fails, quoting its stderr, on non-zero
    /// exit.
    /// Like [`Ns::command`] but entering only the network namespace (`nsenter --net`):
    /// the process keeps the host's mount namespace, so what it pins in bpffs outlives it
    /// (`ip netns exec` gives each process a private /sys, pins included).
    pub fn command_net_only(&self, prog: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path().display()))
            .arg(prog)
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, prog: &str, args: &[&str]) -> Result<Output> {
        run_checked(&mut self.command(prog, args))
    }

    /// Like [`Ns::run`], but a non-zero exit is returned in the `Output`, not as an error.
    pub fn run_unchecked(&self, prog: &str, args: &[&str]) -> Result<Output> {
        let mut cmd = self.command(prog, args);
        cmd.output().with_context(|| format!("cannot run {cmd:?}"))
    }

    /// Starts a long-running `prog args` in the namespace, stopped and reaped when the guard
    /// drops. Stdout is piped (see [`ChildGuard::take_stdout`]; read it, or a chatty child
    /// blocks once the pipe is full), stderr is inherited so its complaints reach the test log.
    /// For other plumbing, build with [`Ns::command`] and wrap in [`ChildGuard::new`].
    ///
    /// The program is inside the namespace only once `ip` has switched and exec'd it, a moment
    /// after this returns: wait for a sign of readiness (a line on stdout, a port that answers)
    /// before sending it traffic.
    pub fn spawn(&self, prog: &str, args: &[&str]) -> Result<ChildGuard> {
        let mut cmd = self.command(prog, args);
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot spawn {cmd:?}"))?;
        Ok(ChildGuard::new(child, format!("{prog} in {}", self.name)))
    }

    /// Runs `f` on a fresh thread that has joined this namespace and returns its result.
    ///
    /// Sockets, netlink requests and XDP attachments made in `f` happen in this namespace, and
    /// file descriptors keep their namespace after the thread ends, so `f` may return e.g. a
    /// bound `UdpSocket` for the caller to use. A separate thread because `setns` cannot be
    /// undone safely on a thread the caller (or the test harness) goes on using; the thread is
    /// discarded afterwards. A panic in `f` is resumed in the caller, as if `f` had run there.
    pub fn enter<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let path = self.path();
        let file = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        std::thread::scope(|scope| {
            let handle = std::thread::Builder::new()
                .name("netns-enter".into())
                .spawn_scoped(scope, move || -> Result<R> {
                    setns(&file, CloneFlags::CLONE_NEWNET)
                        .with_context(|| format!("setns into {}", path.display()))?;
                    Ok(f())
                })
                .context("cannot spawn a thread to enter the namespace")?;
            match handle.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

/// A child process that is stopped (SIGTERM, then SIGKILL after 2 s) and reaped on drop.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    /// For messages: what this child is.
    what: String,
}

impl ChildGuard {
    /// Takes ownership of `child`; `what` describes it in error messages.
    pub fn new(child: Child, what: impl Into<String>) -> Self {
        Self {
            child,
            what: what.into(),
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child's stdout, if it was piped and not taken yet.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// The child's stderr, if it was piped and not taken yet.
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.child.stderr.take()
    }

    /// The exit status if the child has exited, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .with_context(|| format!("cannot wait for {}", self.what))
    }

    /// Stops the child: SIGTERM, up to 5 s to exit, then SIGKILL. Returns how it ended.
    pub fn stop(mut self) -> Result<ExitStatus> {
        terminate(&mut self.child, Duration::from_secs(5))
            .with_context(|| format!("cannot stop {}", self.what))
        // Drop runs next and finds the child already reaped: nothing more to do.
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // No panics in drop (see Topology's Drop).
        if let Err(e) = terminate(&mut self.child, Duration::from_secs(2)) {
            eprintln!("netns: cannot stop {}: {e:#}", self.what);
        }
    }
}

/// SIGTERM, wait up to `grace`, SIGKILL, then reap.
fn terminate(child: &mut Child, grace: Duration) -> Result<ExitStatus> {
    // `Child` remembers a reaped status, so this also makes a second call harmless, and we
    // never signal a pid that may have been reused after reaping.
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    let pid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
    // Not yet reaped, so the pid is still ours even if the process just exited (a zombie).
    signal(pid, Signal::SIGTERM)?;
    let deadline = Instant::now() + grace;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill()?;
    Ok(child.wait()?)
}

/// Sends `sig`; a process that is already gone is not an error.
fn signal(pid: Pid, sig: Signal) -> Result<()> {
    match kill(pid, sig) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("kill({pid}, {sig})")),
    }
}

/// Kills every process in the namespaces `names`: SIGTERM and `grace` to exit first (none if
/// zero), then SIGKILL. Needed because a namespace, and so its veths, lives on as long as any
/// process is in it, and because grandchildren (a server started by a shell) escape their
/// [`ChildGuard`].
fn kill_processes_in(names: &[String], grace: Duration) -> Result<()> {
    // Processes that exited but are not reaped yet (our own guarded children, say) have already
    // left their namespaces and are not listed, so "none listed" means "all gone".
    let signal_all = |sig: Signal| -> Result<usize> {
        let mut signalled = 0;
        for name in names {
            for pid in netns_pids(name)? {
                signal(pid, sig)?;
                signalled += 1;
            }
        }
        Ok(signalled)
    };
    let all_gone = || {
        names
            .iter()
            .all(|name| matches!(netns_pids(name), Ok(p) if p.is_empty()))
    };

    if !grace.is_zero() && (signal_all(Signal::SIGTERM)? == 0 || wait_until(grace, all_gone)) {
        return Ok(());
    }
    if signal_all(Signal::SIGKILL)? == 0 {
        return Ok(());
    }
    ensure!(
        wait_until(Duration::from_secs(2), all_gone),
        "processes still running in {names:?} after SIGKILL"
    );
    Ok(())
}

/// Pids of the processes in namespace `name`, never our own (a safety net: the test process
/// itself must not be killed even if its main thread somehow ended up in there).
fn netns_pids(name: &str) -> Result<Vec<Pid>> {
    let out = run_checked(Command::new("ip").args(["netns", "pids", name]))?;
    let me = getpid();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|word| {
            word.parse::<i32>()
                .map(Pid::from_raw)
                .with_context(|| format!("`ip netns pids {name}` printed {word:?}"))
        })
        .filter(|pid| !matches!(pid, Ok(p) if *p == me))
        .collect()
}

/// Names from `ip netns list`.
fn netns_list() -> Result<Vec<String>> {
    let out = run_checked(Command::new("ip").args(["netns", "list"]))?;
    Ok(parse_netns_list(&String::from_utf8_lossy(&out.stdout)))
}

/// `ip netns list` prints `name` or `name (id: 3)` per line.
fn parse_netns_list(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn netns_delete(name: &str) -> Result<()> {
    run_checked(Command::new("ip").args(["netns", "del", name])).map(drop)
}

fn has_prefix(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|rest| rest.starts_with('-'))
}

/// Runs `cmd` to completion; a non-zero exit is an error quoting the command and its output.
fn run_checked(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): stderr: {} stdout: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(out)
}

/// Namespace names become file names under /run/netns and arguments to `ip`: keep them plain.
fn check_name(what: &str, name: &str) -> Result<()> {
    ensure!(
        !name.is_empty()
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')),
        "invalid {what} {name:?}: use letters, digits, '-', '_' and '.'"
    );
    Ok(())
}

fn check_ifname(name: &str) -> Result<()> {
    check_name("interface name", name)?;
    ensure!(
        name.len() <= MAX_IFNAME_LEN,
        "interface name {name:?} is {} bytes; Linux allows at most {MAX_IFNAME_LEN}",
        name.len()
    );
    Ok(())
}

/// `net.ipv4.ip_forward` -> `/proc/sys/net/ipv4/ip_forward`; a key that already uses `/`
/// is taken as a path, which is how sysctl(8) handles names containing dots (`eth0.100`).
fn sysctl_path(key: &str) -> Result<PathBuf> {
    ensure!(
        !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '_' | '-'))
            && !key
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == ".."),
        "invalid sysctl key {key:?}"
    );
    let rel = if key.contains('/') {
        key.to_owned()
    } else {
        key.replace('.', "/")
    };
    Ok(PathBuf::from("/proc/sys").join(rel))
}

/// The address after `link/<type>` in `ip -o link show` output, e.g.
/// `7: v0@if6: <…> mtu 1500 … \    link/ether 5e:1b:00:aa:bb:cc brd ff:ff:ff:ff:ff:ff …`.
fn parse_link_mac(text: &str) -> Option<[u8; 6]> {
    let mut words = text.split_whitespace();
    words.find(|w| w.starts_with("link/"))?;
    parse_mac(words.next()?)
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead as _, BufReader};
    use std::net::UdpSocket;
    use std::os::unix::fs::MetadataExt as _;
    use std::os::unix::process::ExitStatusExt as _;
    use std::path::Path;

    use super::*;

    #[test]
    fn macs_read_as_ip_neigh_takes_them() {
        assert_eq!(mac_text([0xde, 0xad, 0, 1, 2, 0xff]), "de:ad:00:01:02:ff");
    }

    /// Namespaces currently listed under `prefix`.
    fn listed(prefix: &str) -> Result<Vec<String>> {
        Ok(netns_list()?
            .into_iter()
            .filter(|n| has_prefix(n, prefix))
            .collect())
    }

    /// The identity of the namespace file at `path` (a /proc/<pid>/ns/net link or a bind
    /// mount under /run/netns), as (device, inode).
    fn netns_id_of(path: &Path) -> Result<(u64, u64)> {
        let meta = std::fs::metadata(path).with_context(|| format!("stat {}", path.display()))?;
        Ok((meta.dev(), meta.ino()))
    }

    /// Whether process `pid` runs in `ns`. Only true once `ip netns exec` has switched and
    /// exec'd the program, a moment after `spawn` returns.
    fn in_ns(pid: u32, ns: &Ns) -> bool {
        let proc_ns = PathBuf::from(format!("/proc/{pid}/ns/net"));
        matches!(
            (netns_id_of(&proc_ns), netns_id_of(&ns.path())),
            (Ok(p), Ok(n)) if p == n
        )
    }

    fn stdout_of(out: &Output) -> String {
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    #[test]
    fn parses_helper_formats() {
        assert_eq!(
            parse_netns_list("lbt-a-x (id: 1)\nlbt-a-y\n\nother (id: 0)\n"),
            ["lbt-a-x", "lbt-a-y", "other"]
        );
        assert!(has_prefix("lbt-a-x", "lbt-a"));
        assert!(!has_prefix("lbt-ab-x", "lbt-a"));
        assert!(!has_prefix("lbt-a", "lbt-a"));
        let line = "7: v0@if6: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP \
                    mode DEFAULT group default qlen 1000\\    link/ether 5e:1b:00:aa:bb:cc brd \
                    ff:ff:ff:ff:ff:ff link-netns lbt-x-b";
        assert_eq!(
            parse_link_mac(line),
            Some([0x5e, 0x1b, 0x00, 0xaa, 0xbb, 0xcc])
        );
        assert_eq!(
            parse_link_mac("3: ipip0@NONE: <NOARP> link/ipip 0.0.0.0 brd"),
            None
        );
        assert_eq!(parse_mac("5e:1b:00:aa:bb:cc:dd"), None);
        assert_eq!(parse_mac("5e:1b:00:aa:bb"), None);
        assert!(check_ifname("exactly15chars_").is_ok());
        assert!(check_ifname("sixteen-chars-xx").is_err());
        assert!(check_name("prefix", "../etc").is_err());
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward").ok(),
            Some(PathBuf::from("/proc/sys/net/ipv4/ip_forward"))
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/v0.100/rp_filter").ok(),
            Some(PathBuf::from("/proc/sys/net/ipv4/conf/v0.100/rp_filter"))
        );
        assert!(sysctl_path("net/../../etc/passwd").is_err());
    }

    #[test]
    fn wait_until_polls_then_gives_up() {
        let mut calls = 0;
        assert!(wait_until(Duration::from_secs(1), || {
            calls += 1;
            calls == 3
        }));
        let start = Instant::now();
        assert!(!wait_until(Duration::from_millis(50), || false));
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn two_namespaces_talk_over_veth_and_everything_is_cleaned_up() -> Result<()> {
        const PREFIX: &str = "lbt-nsut-main";
        let mut topo = Topology::new(PREFIX)?;
        let a = topo.add_ns("a")?;
        let b = topo.add_ns("b")?;
        topo.veth(&a, "nsut-a", &b, "nsut-b")?;
        assert_eq!(listed(PREFIX)?, ["lbt-nsut-main-a", "lbt-nsut-main-b"]);

        // The sysctls of add_ns, checked through a real process in the namespace.
        for key in ["ipv6/conf/all/accept_dad", "ipv6/conf/default/accept_dad"] {
            let out = a.run("cat", &[&format!("/proc/sys/net/{key}")])?;
            assert_eq!(stdout_of(&out), "0", "{key}");
        }
        let out = b.run("cat", &["/proc/sys/net/ipv4/conf/all/rp_filter"])?;
        assert_eq!(stdout_of(&out), "0");
        // And a sysctl set in one namespace stays there.
        a.sysctl("net.ipv4.ip_forward", "1")?;
        assert_eq!(
            stdout_of(&a.run("cat", &["/proc/sys/net/ipv4/ip_forward"])?),
            "1"
        );
        assert_eq!(
            stdout_of(&b.run("cat", &["/proc/sys/net/ipv4/ip_forward"])?),
            "0"
        );

        a.addr("nsut-a", "198.18.0.1/24")?;
        b.addr("nsut-b", "198.18.0.2/24")?;
        a.addr("nsut-a", "2001:2::1/64")?;
        b.addr("nsut-b", "2001:2::2/64")?;
        a.run("ping", &["-c1", "-W2", "198.18.0.2"])?;
        a.run("ping", &["-6", "-c1", "-W2", "2001:2::2"])?;

        a.route(&["198.19.0.0/24", "via", "198.18.0.2"])?;
        a.route(&["2001:2:0:1::/64", "via", "2001:2::2"])?;
        let v4 = stdout_of(&a.ip(&["route", "show", "198.19.0.0/24"])?);
        assert!(v4.contains("via 198.18.0.2 dev nsut-a"), "{v4}");
        let v6 = stdout_of(&a.ip(&["-6", "route", "show", "2001:2:0:1::/64"])?);
        assert!(v6.contains("via 2001:2::2 dev nsut-a"), "{v6}");

        // enter() really is inside: the veth exists there, with the index `ip` reports, and
        // not in the root namespace the test runs in.
        let index = a.enter(|| nix::net::if_::if_nametoindex("nsut-a"))??;
        assert_eq!(a.ifindex("nsut-a")?, index);
        let line = stdout_of(&a.ip(&["-o", "link", "show", "dev", "nsut-a"])?);
        assert!(line.starts_with(&format!("{index}: nsut-a@")), "{line}");
        assert!(nix::net::if_::if_nametoindex("nsut-a").is_err());

        let mac_a = a.mac("nsut-a")?;
        let mac_b = b.mac("nsut-b")?;
        assert_ne!(mac_a, mac_b);
        let sys = stdout_of(&a.run("cat", &["/sys/class/net/nsut-a/address"])?);
        let parsed = parse_mac(&sys).with_context(|| format!("bad MAC {sys:?}"))?;
        assert_eq!(parsed, mac_a);

        // Sockets made by enter() keep their namespace after the thread is gone.
        let rx = b.enter(|| UdpSocket::bind("198.18.0.2:0"))??;
        let tx = a.enter(|| UdpSocket::bind("198.18.0.1:0"))??;
        rx.set_read_timeout(Some(Duration::from_secs(2)))?;
        tx.send_to(b"hello", rx.local_addr()?)?;
        let mut buf = [0u8; 16];
        let (len, from) = rx.recv_from(&mut buf)?;
        assert_eq!(&buf[..len], b"hello");
        assert_eq!(from, tx.local_addr()?);

        // A guarded child runs in the namespace and is killed and reaped on drop.
        let sleeper = b.spawn("sleep", &["30"])?;
        let pid = sleeper.pid();
        assert!(
            wait_until(Duration::from_secs(2), || in_ns(pid, &b)),
            "sleep {pid} never showed up in {}",
            b.name
        );
        drop(sleeper);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "sleep {pid} survived its guard"
        );

        // An unguarded process (think: a server's own child) is killed by the topology.
        let mut orphan = b.command("sleep", &["30"]).stdout(Stdio::null()).spawn()?;
        let pid = orphan.id();
        assert!(
            wait_until(Duration::from_secs(2), || in_ns(pid, &b)),
            "sleep {pid} never showed up in {}",
            b.name
        );
        drop(topo);
        assert!(
            wait_until(Duration::from_secs(1), || matches!(
                orphan.try_wait(),
                Ok(Some(_))
            )),
            "unguarded sleep survived the topology"
        );
        assert_eq!(listed(PREFIX)?, Vec::<String>::new());
        Ok(())
    }

    #[test]
    fn processes_report_output_and_exit() -> Result<()> {
        const PREFIX: &str = "lbt-nsut-proc";
        let mut topo = Topology::new(PREFIX)?;
        let a = topo.add_ns("a")?;
        let b = topo.add_ns("b")?;
        let err = topo
            .veth(&a, "sixteen-chars-xx", &b, "ok")
            .err()
            .context("a 16-byte interface name was accepted")?;
        assert!(format!("{err:#}").contains("at most 15"), "{err:#}");
        assert!(topo.add_ns("a").is_err(), "duplicate namespace accepted");

        let err = a
            .run("sh", &["-c", "echo oops >&2; exit 3"])
            .err()
            .context("a failing command succeeded")?;
        assert!(format!("{err:#}").contains("oops"), "{err:#}");
        let out = a.run_unchecked("sh", &["-c", "echo out; exit 3"])?;
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(stdout_of(&out), "out");

        let mut server = a.spawn("sh", &["-c", "echo ready; exec sleep 30"])?;
        let stdout = server.take_stdout().context("stdout is piped")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        assert_eq!(line, "ready\n");
        assert_eq!(server.try_wait()?, None);
        let status = server.stop()?;
        assert_eq!(status.signal(), Some(Signal::SIGTERM as i32));
        Ok(())
    }

    #[test]
    fn panic_while_building_still_cleans_up() -> Result<()> {
        const PREFIX: &str = "lbt-nsut-panic";
        let outcome = std::panic::catch_unwind(|| -> Result<()> {
            let mut topo = Topology::new(PREFIX)?;
            let a = topo.add_ns("a")?;
            let b = topo.add_ns("b")?;
            topo.veth(&a, "p-a", &b, "p-b")?;
            let _sleeper = b.spawn("sleep", &["30"])?;
            assert_eq!(listed(PREFIX)?.len(), 2);
            // The panic starts inside the namespace thread and must reach this frame, then
            // unwind through `topo`.
            a.enter(|| panic!("deliberate panic inside the namespace"))?;
            Ok(())
        });
        match outcome {
            Err(_) => {}
            Ok(Err(e)) => return Err(e.context("setup failed before the deliberate panic")),
            Ok(Ok(())) => bail!("the panic inside enter() was swallowed"),
        }
        assert_eq!(listed(PREFIX)?, Vec::<String>::new());
        Ok(())
    }

    #[test]
    fn new_removes_leftovers_of_a_crashed_run() -> Result<()> {
        const PREFIX: &str = "lbt-nsut-left";
        // Shares the text of PREFIX but not "PREFIX-": must survive the sweep.
        let mut neighbour = Topology::new("lbt-nsut-leftover")?;
        let keep = neighbour.add_ns("keep")?;

        // A "crashed run": a namespace nobody owns, with a process in it.
        let stale = "lbt-nsut-left-stale";
        if listed(PREFIX)?.iter().all(|n| n != stale) {
            run_checked(Command::new("ip").args(["netns", "add", stale]))?;
        }
        let mut squatter = Command::new("ip")
            .args(["netns", "exec", stale, "sleep", "30"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        assert!(
            wait_until(Duration::from_secs(2), || {
                matches!(netns_pids(stale), Ok(p) if !p.is_empty())
            }),
            "the squatter never entered {stale}"
        );

        let topo = Topology::new(PREFIX)?;
        assert_eq!(listed(PREFIX)?, Vec::<String>::new());
        assert!(
            wait_until(Duration::from_secs(1), || matches!(
                squatter.try_wait(),
                Ok(Some(_))
            )),
            "the process in the leftover namespace survived"
        );
        assert!(
            netns_list()?.contains(&keep.name),
            "{} was swept",
            keep.name
        );
        drop(topo);
        drop(neighbour);
        assert!(!netns_list()?.contains(&keep.name));
        Ok(())
    }
}
