//! Runtime edits through the admin socket of the real agent, checked against real
//! traffic: `backend set-weight`, `drain`/`undrain`, `remove`, `vip add`/`remove`; every
//! refused edit changes nothing; edits and drains survive an agent restart; `apply` of
//! the file discards the edits but keeps the drain.

use std::{collections::BTreeSet, net::IpAddr, path::PathBuf, time::Duration};

use anyhow::{ensure, Context as _};
use lb_agent::admin::{
    client::{call, ClientError},
    protocol::{Command, ErrorCode, Proto, VipSpec},
};
use lb_tests::agentnet::{backend, example_config, udp_query, AgentNet, LineConn, LINE_PORT, VIP};
use serde_json::Value;

const GROUP: &str = "web-servers";
const TIMEOUT: Duration = Duration::from_secs(10);

struct Ctl {
    socket: PathBuf,
}

impl Ctl {
    fn ok(&self, cmd: Command) -> anyhow::Result<Value> {
        let what = format!("{cmd:?}");
        call(&self.socket, cmd, TIMEOUT).with_context(|| what)
    }

    /// The command must fail with `code`.
    fn refused(&self, cmd: Command, code: ErrorCode) -> anyhow::Result<String> {
        let what = format!("{cmd:?}");
        match call(&self.socket, cmd, TIMEOUT) {
            Ok(v) => anyhow::bail!("{what} succeeded: {v}"),
            Err(ClientError::Server(e)) => {
                ensure!(e.code == code, "{what}: {e} (expected {code})");
                Ok(e.message)
            }
            Err(e) => Err(e).context(what),
        }
    }

    /// Waits for the (re)started agent's socket.
    fn ready(&self) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            match call(&self.socket, Command::Status, TIMEOUT) {
                Ok(_) => return Ok(()),
                Err(e) if std::time::Instant::now() > deadline => {
                    return Err(e).context("the agent's admin socket never answered")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn config(&self) -> anyhow::Result<Value> {
        self.ok(Command::ConfigShow)
    }

    /// The backend entry of `address` in `backend_list`.
    fn backend(&self, address: IpAddr) -> anyhow::Result<Value> {
        let list = self.ok(Command::BackendList {
            group: Some(GROUP.into()),
        })?;
        list.as_array()
            .and_then(|l| {
                l.iter()
                    .find(|b| b["address"] == address.to_string())
                    .cloned()
            })
            .with_context(|| format!("{address} not in {list}"))
    }
}

fn be(i: usize) -> IpAddr {
    IpAddr::V4(backend(i))
}

/// Backends reached by `n` new UDP flows from fresh source ports.
fn reached(net: &AgentNet, first_port: u16, n: u16) -> anyhow::Result<BTreeSet<usize>> {
    net.client.enter(|| -> anyhow::Result<BTreeSet<usize>> {
        (first_port..first_port + n).map(udp_query).collect()
    })?
}

#[test]
fn runtime_edits_change_traffic_and_survive_restarts() -> anyhow::Result<()> {
    let net = AgentNet::new("lbt-edits")?;
    let socket = PathBuf::from(format!(
        "/run/lb/test-edits-{}/admin.sock",
        std::process::id()
    ));
    let sock = socket.to_str().context("socket path")?.to_owned();
    let config = example_config();
    let args = ["--stats-interval", "0", "--admin-socket", sock.as_str()];
    let agent = net.start_agent(&config, &args)?;
    let ctl = Ctl {
        socket: socket.clone(),
    };
    ctl.ready()?;
    let all: BTreeSet<usize> = (0..3).collect();
    ensure!(
        reached(&net, 20_000, 60)? == all,
        "not every backend serves"
    );

    // Refused edits change nothing.
    let before = ctl.config()?;
    ensure!(
        before["edited"] == false,
        "fresh agent says edited: {before}"
    );
    ctl.refused(
        Command::BackendAdd {
            group: GROUP.into(),
            address: be(0),
            weight: 1,
        },
        ErrorCode::Conflict,
    )?;
    ctl.refused(
        Command::BackendAdd {
            group: "nope".into(),
            address: be(0),
            weight: 1,
        },
        ErrorCode::NotFound,
    )?;
    ctl.refused(
        Command::BackendSetWeight {
            group: GROUP.into(),
            address: "198.18.99.9".parse()?,
            weight: 1,
        },
        ErrorCode::NotFound,
    )?;
    ctl.refused(
        Command::VipRemove {
            name: "nope".into(),
        },
        ErrorCode::NotFound,
    )?;
    let why = ctl.refused(
        Command::VipAdd(VipSpec {
            name: "web".into(),
            address: VIP.into(),
            port: 8080,
            proto: Proto::Tcp,
            target_group: GROUP.into(),
            mode: None,
            gue_port: None,
            hash: None,
            ring_size: None,
            announce: None,
            announce_min_healthy: None,
        }),
        ErrorCode::Conflict,
    )?;
    ensure!(why.contains("web"), "{why}");
    // A backend that is also a VIP address: the file's validation says why.
    let why = ctl.refused(
        Command::BackendAdd {
            group: GROUP.into(),
            address: VIP.into(),
            weight: 1,
        },
        ErrorCode::InvalidConfig,
    )?;
    ensure!(why.contains("VIP"), "{why}");
    ctl.refused(
        Command::BackendDrain {
            group: GROUP.into(),
            address: "198.18.99.9".parse()?,
        },
        ErrorCode::NotFound,
    )?;
    ensure!(
        ctl.config()? == before,
        "a refused edit changed the configuration"
    );

    // Weight 0 on be0: no new flow reaches it; the report says slots moved.
    let r = ctl.ok(Command::BackendSetWeight {
        group: GROUP.into(),
        address: be(0),
        weight: 0,
    })?;
    let forced: u64 = r["vips"]
        .as_array()
        .context("vips")?
        .iter()
        .filter_map(|v| v["forced"].as_u64())
        .sum();
    ensure!(forced > 0, "set-weight 0 moved no slot: {r}");
    let got = reached(&net, 21_000, 100)?;
    ensure!(
        !got.contains(&0),
        "weight 0 backend still takes new flows: {got:?}"
    );

    // vip add: the line protocol's port becomes a VIP and real connections work.
    ensure!(
        net.client.enter(LineConn::open)?.is_err(),
        "port {LINE_PORT} answers before it is a VIP"
    );
    ctl.ok(Command::VipAdd(VipSpec {
        name: "lines".into(),
        address: VIP.into(),
        port: LINE_PORT,
        proto: Proto::Tcp,
        target_group: GROUP.into(),
        mode: None,
        gue_port: None,
        hash: None,
        ring_size: None,
        announce: None,
        announce_min_healthy: None,
    }))?;

    // Drain be1 while a connection to it is open: new flows avoid it, the connection
    // keeps working, the list says draining with time left.
    let mut long = None;
    net.client.enter(|| -> anyhow::Result<()> {
        for _ in 0..40 {
            let mut c = LineConn::open()?;
            if c.ask()? == 1 {
                long = Some(c);
                break;
            }
        }
        Ok(())
    })??;
    let mut long = long.context("no line connection landed on be1")?;
    let r = ctl.ok(Command::BackendDrain {
        group: GROUP.into(),
        address: be(1),
    })?;
    ensure!(r["changed"] == true, "{r}");
    ensure!(r["backend"]["state"] == "draining", "{r}");
    let b1 = ctl.backend(be(1))?;
    ensure!(
        b1["reason"] == "Target.DeregistrationInProgress"
            && b1["remaining_secs"].as_u64() > Some(0),
        "{b1}"
    );
    ensure!(
        b1["flows"].as_u64() >= Some(1),
        "the open connection is not counted: {b1}"
    );
    let got = reached(&net, 22_000, 100)?;
    ensure!(
        got == BTreeSet::from([2]),
        "new flows during the drain reached {got:?}"
    );
    ensure!(
        net.client.enter(|| long.ask())?? == 1,
        "the drained backend's connection moved"
    );

    // vip add with every optional field, visible in the list and the running
    // configuration.
    ctl.ok(Command::VipAdd(VipSpec {
        name: "lines2".into(),
        address: VIP.into(),
        port: 8081,
        proto: Proto::Udp,
        target_group: GROUP.into(),
        mode: Some("dr".into()),
        gue_port: None,
        hash: Some("source-ip".into()),
        ring_size: Some(4093),
        announce: None,
        announce_min_healthy: None,
    }))?;
    let vips = ctl.ok(Command::VipList)?;
    let added = vips
        .as_array()
        .and_then(|l| l.iter().find(|v| v["name"] == "lines2").cloned())
        .with_context(|| format!("lines2 missing: {vips}"))?;
    ensure!(
        added["ring_size"] == 4093 && added["port"] == 8081,
        "{added}"
    );
    let shown = ctl.config()?;
    ensure!(shown["edited"] == true, "{shown}");
    let toml = shown["toml"].as_str().context("toml")?;
    ensure!(
        toml.contains("lines2") && toml.contains("weight = 0"),
        "{toml}"
    );

    // Restart: edits and the drain are still there, traffic as before.
    let status = agent.process.stop()?;
    ensure!(status.success(), "lb-agent exited with {status}");
    let agent = net.start_agent(&config, &args)?;
    ctl.ready()?;
    ensure!(ctl.config()? == shown, "the restart lost the runtime edits");
    ensure!(
        ctl.backend(be(1))?["state"] == "draining",
        "the restart lost the drain"
    );
    ensure!(
        ctl.backend(be(0))?["weight"] == 0,
        "the restart lost the weight"
    );
    let got = reached(&net, 23_000, 60)?;
    ensure!(
        got == BTreeSet::from([2]),
        "after the restart new flows reached {got:?}"
    );
    ensure!(
        net.client.enter(|| long.ask())?? == 1,
        "the restart moved a drained flow"
    );

    ctl.ok(Command::VipRemove {
        name: "lines2".into(),
    })?;
    ensure!(
        !ctl.config()?["toml"]
            .as_str()
            .unwrap_or("")
            .contains("lines2"),
        "vip remove left it in the configuration"
    );

    // Undrain: be1 takes new flows again.
    let r = ctl.ok(Command::BackendUndrain {
        group: GROUP.into(),
        address: be(1),
    })?;
    ensure!(r["changed"] == true, "{r}");
    ensure!(
        ctl.backend(be(1))?["state"] == "healthy" || ctl.backend(be(1))?["state"] == "initial",
        "undrained backend: {}",
        ctl.backend(be(1))?
    );
    let got = reached(&net, 24_000, 100)?;
    ensure!(
        got == BTreeSet::from([1, 2]),
        "after undrain new flows reached {got:?}"
    );

    // Deregister be2: it drains (the example's delay is 30 s), new flows avoid it.
    ctl.ok(Command::BackendRemove {
        group: GROUP.into(),
        address: be(2),
    })?;
    let b2 = ctl.backend(be(2))?;
    ensure!(b2["state"] == "draining", "{b2}");
    ctl.refused(
        Command::BackendDrain {
            group: GROUP.into(),
            address: be(2),
        },
        ErrorCode::Conflict,
    )?;
    let got = reached(&net, 25_000, 100)?;
    ensure!(
        got == BTreeSet::from([1]),
        "during deregistration new flows reached {got:?}"
    );

    // Drain be1 again, then apply the file: the edits go (be0 weight 1, be2 registered
    // again), the drain stays.
    ctl.ok(Command::BackendDrain {
        group: GROUP.into(),
        address: be(1),
    })?;
    ctl.ok(Command::Apply {
        path: config.display().to_string(),
        dry_run: false,
    })?;
    let shown = ctl.config()?;
    ensure!(shown["edited"] == false, "{shown}");
    ensure!(
        ctl.backend(be(1))?["state"] == "draining",
        "apply cancelled the drain"
    );
    ensure!(
        ctl.backend(be(2))?["state"] != "draining",
        "apply left be2 deregistered"
    );
    let got = reached(&net, 26_000, 100)?;
    ensure!(
        got == BTreeSet::from([0, 2]),
        "after apply new flows reached {got:?}"
    );
    ensure!(
        net.client.enter(LineConn::open)?.is_err(),
        "the VIP added at run time survived the apply of the file"
    );

    // Every change was logged with who made it.
    let status = agent.process.stop()?;
    ensure!(status.success(), "lb-agent exited with {status}");
    let log: Vec<String> = agent.log.try_iter().collect();
    let changes = log
        .iter()
        .filter(|l| l.contains("admin command done") && l.contains("uid=0"))
        .count();
    ensure!(
        changes >= 5,
        "{changes} changes logged with a uid:\n{}",
        log.join("\n")
    );

    // --reset starts from scratch: no drain, no flows, counters from zero.
    let agent = net.start_agent(&config, &[&args[..], &["--reset"]].concat())?;
    ensure!(
        agent.startup.iter().any(|l| l.contains("--reset: removed")),
        "--reset did not say it removed the previous data plane:\n{}",
        agent.startup.join("\n")
    );
    ensure!(
        agent
            .startup
            .iter()
            .any(|l| l.contains("XDP program attached")),
        "--reset adopted the old data plane"
    );
    ctl.ready()?;
    let b1 = ctl.backend(be(1))?;
    ensure!(
        b1["state"] != "draining" && b1["flows"] == 0,
        "after --reset: {b1}"
    );
    let stats = ctl.ok(Command::Stats)?;
    let tx = stats["verdicts"]["redirect"]["packets"]
        .as_u64()
        .unwrap_or(u64::MAX);
    ensure!(tx < 50, "counters were not reset: {tx} redirected packets");
    let status = agent.process.stop()?;
    ensure!(status.success(), "lb-agent exited with {status}");
    net.down()?;
    Ok(())
}
