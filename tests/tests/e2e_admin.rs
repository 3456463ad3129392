//! The admin socket against real traffic: for 100 random flows, `ctl flow` (answered from
//! the same ring and flow table the data plane uses) names the backend that actually
//! answered; `ctl apply --dry-run` changes nothing; `ctl down` removes the data plane.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use anyhow::{ensure, Context as _};
use lb_agent::admin::{
    client::call,
    protocol::{Command, FlowAnswer, Proto},
};
use lb_tests::agentnet::{backend, example_config, udp_query, AgentNet, CLIENT, VIP};

#[test]
fn flow_answers_match_real_traffic() -> anyhow::Result<()> {
    let net = AgentNet::new("lbt-admin")?;
    let socket = PathBuf::from(format!("/run/lb/test-{}/admin.sock", std::process::id()));
    let sock = socket.to_str().context("socket path")?;
    let _agent = net.start_agent(
        &example_config(),
        &["--stats-interval", "0", "--admin-socket", sock],
    )?;
    let timeout = Duration::from_secs(5);

    // Deterministic "random" source ports (an LCG), distinct, above the ephemeral floor.
    let mut x: u32 = 0x6c62_0003;
    let mut ports = Vec::new();
    while ports.len() < 100 {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let p = 20_000 + (x >> 16) as u16 % 40_000;
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    let reached = net.client.enter(|| -> anyhow::Result<Vec<usize>> {
        ports.iter().map(|p| udp_query(*p)).collect()
    })??;
    let mut mismatches = Vec::new();
    for (port, got) in ports.iter().zip(&reached) {
        let answer: FlowAnswer = serde_json::from_value(call(
            &socket,
            Command::Flow {
                proto: Proto::Udp,
                src: IpAddr::V4(CLIENT),
                sport: *port,
                dst: IpAddr::V4(VIP),
                dport: 53,
            },
            timeout,
        )?)?;
        if answer.backend != Some(IpAddr::V4(backend(*got))) {
            mismatches.push(format!(
                "sport {port}: traffic reached {}, ctl flow says {:?} ({})",
                backend(*got),
                answer.backend,
                answer.source
            ));
        }
        ensure!(
            answer.source == "flow table",
            "a flow that just ran should be in the flow table: {answer:?}"
        );
    }
    assert!(
        mismatches.is_empty(),
        "{} of 100 flows disagree:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );

    // A dry run changes nothing: the same flows still answer the same.
    let changed = std::env::temp_dir().join(format!("lbt-admin-{}.toml", std::process::id()));
    std::fs::write(
        &changed,
        std::fs::read_to_string(example_config())?.replace("198.18.13.2", "198.18.14.2"),
    )?;
    let dry = call(
        &socket,
        Command::Apply {
            path: changed.display().to_string(),
            dry_run: true,
        },
        timeout,
    )?;
    ensure!(dry["dry_run"] == true, "not a dry run: {dry}");
    let again = net.client.enter(|| -> anyhow::Result<Vec<usize>> {
        ports.iter().take(20).map(|p| udp_query(*p)).collect()
    })??;
    ensure!(
        again[..] == reached[..20],
        "a dry run changed where flows go"
    );
    std::fs::remove_file(&changed)?;

    call(
        &socket,
        Command::Down {
            grace_secs: Some(1),
        },
        timeout,
    )?;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while net.attached()? {
        ensure!(
            std::time::Instant::now() < deadline,
            "ctl down left the program attached"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
