//! Fault matrix, the pins: lb's pin directory removed, pins replaced by other objects,
//! and bpffs unmounted, each under a running agent and client load through the VIP,
//! each followed by a restart that must adopt the same link and maps. A pin that stays
//! missing would cost nothing until the agent exits, and then everything: the link,
//! held by the agent's descriptor alone, detaches, and the next agent starts with empty
//! maps (every flow lost). The agent's pin watchdog puts them back within a second or
//! two, which these tests time.

use std::{
    fs::File,
    io::{BufRead as _, BufReader},
    os::fd::{AsFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::{Command as Process, Stdio},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _};
use lb_agent::dataplane::bpf_obj;
use lb_tests::{
    agentnet::AgentNet,
    faults::{config_text, exists, FaultNet, FaultReport, Load},
    netns::ChildGuard,
};

/// How long the watchdog may take to put the pins right (it checks every second; the
/// other engineer's builds share the CPUs).
const RESTORE_WITHIN: Duration = Duration::from_secs(5);

/// The link and map ids pinned for l0: what a restart must adopt.
#[derive(Debug, PartialEq, Eq)]
struct Ids {
    link: u32,
    maps: Vec<(&'static str, u32)>,
}

fn ids(net: &AgentNet) -> anyhow::Result<Ids> {
    Ok(Ids {
        link: net.xdp_link()?.0,
        maps: net.pinned_map_ids()?,
    })
}

/// Waits until `read` gives `want` (pins restored); returns when.
fn wait_for_ids(
    want: &Ids,
    mut read: impl FnMut() -> anyhow::Result<Ids>,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + RESTORE_WITHIN;
    loop {
        let seen = read();
        match &seen {
            Ok(ids) if ids == want => return Ok(Instant::now()),
            _ if Instant::now() > deadline => {
                anyhow::bail!(
                    "pins not restored within {RESTORE_WITHIN:?}: want {want:?}, see {seen:?}"
                )
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The next `n` log lines of the agent containing `needle` (the agent logs what it
/// restored just after restoring it).
fn wait_lines(f: &FaultNet, needle: &str, n: usize) -> anyhow::Result<Vec<String>> {
    (0..n)
        .map(|_| Ok(f.wait_log(needle, Duration::from_secs(3))?.0))
        .collect()
}

/// The end of every case: the agent restarted ([`restart`]), which must adopt the ids
/// `read` gives (`before`), its steady state, two more seconds of load, and the load's
/// figures under `name`; also how long the restart took.
fn restart_and_finish(
    f: &mut FaultNet,
    load: Load,
    before: &Ids,
    read: impl Fn(&FaultNet) -> anyhow::Result<Ids>,
    name: &str,
) -> anyhow::Result<(FaultReport, Duration)> {
    let restart_took = restart(f)?;
    ensure!(
        read(f)? == *before,
        "the restart did not adopt the same link and maps"
    );
    f.wait_steady(Duration::from_secs(15))?;
    std::thread::sleep(Duration::from_secs(2));
    Ok((load.finish(name), restart_took))
}

/// SIGTERM to the agent, then a new one on the same configuration (in the same mount
/// namespace) that must adopt the pinned data plane; returns how long that took.
fn restart(f: &mut FaultNet) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let agent = f.agent.take().context("no agent running")?;
    let status = agent.process.stop()?;
    ensure!(status.success(), "the agent exited with {status}");
    f.start_agent(&[])?;
    let took = t.elapsed();
    ensure!(
        !f.log_lines("adopted the running data plane").is_empty(),
        "the restarted agent did not adopt the pinned data plane"
    );
    Ok(took)
}

/// (a) `rm -rf` of the agent's pin directory under load: the watchdog pins everything
/// again from its own descriptors; then a restart adopts the same link and maps and
/// nothing is lost across the whole sequence.
#[test]
fn pin_directory_removed_then_restart() -> anyhow::Result<()> {
    let mut f = FaultNet::start("lbt-fa2", "", &[])?;
    let before = ids(&f.net)?;
    let load = Load::start(&f.net)?;
    std::thread::sleep(Duration::from_secs(1));
    let removed = Instant::now();
    remove_dir(&f.net.pin_dir())?;
    let restored = wait_for_ids(&before, || ids(&f.net))? - removed;
    // The link and every map, each logged (more only if a check ran in the middle of
    // `rm -rf`).
    let missing = wait_lines(&f, "was missing", 1 + before.maps.len())?;
    let (report, restart_took) = restart_and_finish(
        &mut f,
        load,
        &before,
        |f| ids(&f.net),
        "pin directory removed, agent restarted",
    )?;
    println!(
        "FAULT pin directory removed: restored after {} ms ({} pins); restart adopted the same link {} and maps in {} ms",
        restored.as_millis(),
        missing.len(),
        before.link,
        restart_took.as_millis()
    );
    report.assert_nothing_lost()
}

/// (b) The flow table's pin and the link's pin replaced by another map (the test's
/// own, made for this): the watchdog logs an error for each, pins its own objects back,
/// and a restart adopts the right ones; nothing is lost.
#[test]
fn pins_replaced_then_restart() -> anyhow::Result<()> {
    let mut f = FaultNet::start("lbt-fa3", "", &[])?;
    let before = ids(&f.net)?;
    let flows = f.net.pin_dir().join("maps").join(lb_common::maps::FLOWS);
    let link = f.net.pin_dir().join("link");
    let stranger = foreign_map()?;
    let stranger_id = map_id_of(&stranger)?;
    let load = Load::start(&f.net)?;
    std::thread::sleep(Duration::from_secs(1));
    let replaced = Instant::now();
    for path in [&flows, &link] {
        replace_pin(path, &stranger)?;
    }
    let restored = wait_for_ids(&before, || ids(&f.net))? - replaced;
    let errors = wait_lines(&f, "held another object", 2)?;
    ensure!(
        errors
            .iter()
            .all(|l| l.contains("ERROR") && l.contains(&format!("map id {stranger_id}"))),
        "expected two errors naming map {stranger_id}, saw {errors:#?}"
    );
    drop(stranger);
    let (report, restart_took) = restart_and_finish(
        &mut f,
        load,
        &before,
        |f| ids(&f.net),
        "pins replaced, agent restarted",
    )?;
    println!(
        "FAULT pins replaced (flow table and link by map {stranger_id}): restored after {} ms; restart adopted the same link and maps in {} ms",
        restored.as_millis(),
        restart_took.as_millis()
    );
    report.assert_nothing_lost()
}

/// (c) bpffs unmounted under the agent. Never the machine's (other tests pin there):
/// the agent runs in a mount namespace of its own with a bpffs of its own at
/// /sys/fs/bpf, and that one is unmounted, which drops every pin in it. The watchdog
/// mounts bpffs again and pins everything again; a restart in that namespace adopts.
#[test]
fn bpffs_unmounted_then_restart() -> anyhow::Result<()> {
    let mut f = FaultNet::prepare("lbt-fa4", &config_text()?)?;
    // After the topology: the namespace's copy of /run/netns must show the topology's
    // namespaces, or the agent would not know which one it runs in.
    let holder = MountNs::new()?;
    f.mount_ns = Some(holder.path());
    f.start_agent(&[])?;
    f.wait_steady(Duration::from_secs(15))?;
    let before = holder.enter(|| ids(&f.net))??;
    ensure!(
        !exists(&f.net.pin_dir()),
        "the agent's pins are visible in the host's bpffs: not a private one"
    );
    let load = Load::start(&f.net)?;
    std::thread::sleep(Duration::from_secs(1));
    let unmounted = Instant::now();
    holder.run(&["umount", "/sys/fs/bpf"])?;
    let restored = wait_for_ids(&before, || holder.enter(|| ids(&f.net))?)? - unmounted;
    wait_lines(&f, "bpffs was not mounted", 1)?;
    let (report, restart_took) = restart_and_finish(
        &mut f,
        load,
        &before,
        |f| {
            let net = &f.net;
            holder.enter(|| ids(net))?
        },
        "bpffs unmounted, agent restarted",
    )?;
    println!(
        "FAULT bpffs unmounted: mounted and every pin restored after {} ms; restart adopted the same link and maps in {} ms",
        restored.as_millis(),
        restart_took.as_millis()
    );
    // The agent stops before its mount namespace goes.
    drop(f);
    drop(holder);
    report.assert_nothing_lost()
}

/// `rm -rf dir`; a watchdog pinning into it meanwhile may make one pass fail.
fn remove_dir(dir: &Path) -> anyhow::Result<()> {
    let mut last = None;
    for _ in 0..5 {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(|| anyhow::anyhow!("?"), anyhow::Error::from))
        .with_context(|| format!("removing {}", dir.display()))
}

/// Replaces the pin at `path` with `fd`'s object; retried when the watchdog pins its
/// own there between the two steps.
fn replace_pin(path: &Path, fd: &OwnedFd) -> anyhow::Result<()> {
    for _ in 0..5 {
        std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
        match bpf_obj::pin(fd.as_fd(), path) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
            Err(e) => return Err(e).with_context(|| format!("pinning at {}", path.display())),
        }
    }
    anyhow::bail!("could not replace {}", path.display())
}

/// The leading fields of `union bpf_attr` for `BPF_MAP_CREATE` (the rest zero).
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// A map of the test's own (an array of one u32), to stand where lb's objects should.
/// (Pinning and identifying it use the agent's own `bpf_obj`; creating a map is the one
/// command the agent never needs.)
fn foreign_map() -> anyhow::Result<OwnedFd> {
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    let mut name = [0u8; 16];
    name[..11].copy_from_slice(b"lbt_foreign");
    let mut attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        map_name: name,
        ..MapCreateAttr::default()
    };
    // SAFETY: `attr` is the BPF_MAP_CREATE member of `bpf_attr`, with no pointers; the
    // kernel reads at most its size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            &mut attr as *mut MapCreateAttr,
            std::mem::size_of::<MapCreateAttr>() as libc::c_uint,
        )
    };
    ensure!(
        rc >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(i32::try_from(rc)?) })
}

/// A map's kernel id, as the agent's watchdog reads it.
fn map_id_of(fd: &OwnedFd) -> anyhow::Result<u32> {
    match bpf_obj::describe(fd.as_fd())? {
        bpf_obj::Object::Map { id } => Ok(id),
        other => anyhow::bail!("not a map: {other}"),
    }
}

/// A private mount namespace with a bpffs of its own at /sys/fs/bpf, held by a
/// sleeping process (stopped on drop, which ends the namespace and drops its pins).
/// The host's mounts are not touched: the namespace is made with private propagation,
/// and its copy of the host's bpffs is unmounted there before its own is mounted.
struct MountNs {
    holder: ChildGuard,
}

impl MountNs {
    fn new() -> anyhow::Result<Self> {
        let child = Process::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(
                "while umount /sys/fs/bpf 2>/dev/null; do :; done; \
                 mount -t bpf bpf /sys/fs/bpf && echo ready && exec sleep 300",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting unshare")?;
        let mut holder = ChildGuard::new(child, "mount namespace holder");
        let out = holder.take_stdout().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line)?;
        ensure!(
            line.trim() == "ready",
            "the mount namespace was not made: {line:?}"
        );
        Ok(Self { holder })
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/mnt", self.holder.pid()))
    }

    /// Runs `prog args` in the namespace.
    fn run(&self, args: &[&str]) -> anyhow::Result<()> {
        let out = Process::new("nsenter")
            .arg(format!("--mount={}", self.path().display()))
            .args(args)
            .output()
            .context("running nsenter")?;
        ensure!(
            out.status.success(),
            "{args:?} in the mount namespace: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Runs `f` on a thread in the namespace (paths resolve in its mounts).
    fn enter<R: Send>(&self, f: impl FnOnce() -> R + Send) -> anyhow::Result<R> {
        let ns = File::open(self.path()).context("opening the mount namespace")?;
        std::thread::scope(|s| {
            s.spawn(|| -> anyhow::Result<R> {
                // A thread shares its filesystem context with the process; only with one
                // of its own may it enter another mount namespace.
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)
                    .context("unshare(CLONE_FS)")?;
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNS)
                    .context("setns into the mount namespace")?;
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the thread in the mount namespace panicked"))?
        })
    }
}
