//! The admin [`Handler`]: each `lb-agent ctl` command becomes a read of the running state
//! (under a shared lock, so reads run side by side) or a change to it (under the
//! exclusive lock, so no two changes interleave), and its reply.

use std::path::Path;

use serde_json::Value;
use tracing::info;

use super::{
    running::{AgentState, ChangeError},
    views::{self, internal, json},
    Agent,
};
use crate::{
    admin::{
        protocol::{
            ApplyResult, Command, ConfigInfo, DownResult, DrainResult, ErrorBody, ErrorCode,
            StatsInfo, WithdrawResult,
        },
        server::{Handler, Peer},
    },
    announce::RouteState,
    config::{AnnounceSettings, Config, Draft, EditError},
    lifecycle,
    target::TargetKey,
};

impl Handler for Agent {
    fn handle(&self, cmd: Command, _peer: &Peer) -> Result<Value, ErrorBody> {
        if cmd.is_mutating() {
            let mut st = self.write()?;
            self.change(&mut st, cmd)
        } else {
            let st = self.read()?;
            read(&st, cmd)
        }
    }
}

/// A command that only reads (`Command::is_mutating` is false).
fn read(st: &AgentState, cmd: Command) -> Result<Value, ErrorBody> {
    match cmd {
        Command::Status => json(views::status(st)),
        Command::VipList => json(views::vip_infos(st, false)?),
        Command::VipShow { name } => {
            let vips = views::vip_infos(st, true)?;
            let vip = vips.into_iter().find(|v| v.name == name).ok_or_else(|| {
                ErrorBody::new(ErrorCode::NotFound, format!("no VIP named {name:?}"))
            })?;
            json(vip)
        }
        Command::BackendList { group } => json(views::backend_list(st, group.as_deref())?),
        Command::Flow {
            proto,
            src,
            sport,
            dst,
            dport,
        } => json(views::flow_answer(
            st,
            proto.number(),
            src,
            sport,
            dst,
            dport,
        )?),
        Command::Apply {
            path,
            dry_run: true,
        } => {
            let (cfg, report) = st.dry_run_file(Path::new(&path)).map_err(change_error)?;
            apply_result(st, &cfg, &report, true)
        }
        Command::ConfigShow => json(ConfigInfo {
            toml: st.draft.as_ref().map(|d| d.to_toml()).unwrap_or_default(),
            source: st.source.as_ref().map(|s| s.path.display().to_string()),
            edited: st.edited,
        }),
        Command::Stats => json(StatsInfo::from(&st.dp.counters().map_err(internal)?)),
        Command::Metrics { format } => views::metrics_result(st, format),
        Command::Top => views::top_result(st),
        other => Err(internal(format!(
            "{other:?} changes the agent and cannot run as a read"
        ))),
    }
}

impl Agent {
    /// A command that changes the running state (`Command::is_mutating` is true).
    fn change(&self, st: &mut AgentState, cmd: Command) -> Result<Value, ErrorBody> {
        match cmd {
            Command::Apply { path, .. } => {
                let report = st.apply_file(Path::new(&path)).map_err(change_error)?;
                let cfg = st
                    .config
                    .clone()
                    .ok_or_else(|| internal("no configuration after apply"))?;
                apply_result(st, &cfg, &report, false)
            }
            Command::VipAdd(vip) => {
                let what = format!("vip add {}", vip.name);
                edit_result(st, &what, |d| d.add_vip(vip))
            }
            Command::VipRemove { name } => {
                edit_result(st, &format!("vip remove {name}"), |d| d.remove_vip(&name))
            }
            Command::BackendAdd {
                group,
                address,
                weight,
            } => edit_result(
                st,
                &format!("backend add {group} {address} weight {weight}"),
                |d| d.add_target(&group, address, Some(weight)),
            ),
            Command::BackendRemove { group, address } => {
                edit_result(st, &format!("backend remove {group} {address}"), |d| {
                    d.remove_target(&group, address)
                })
            }
            Command::BackendSetWeight {
                group,
                address,
                weight,
            } => edit_result(
                st,
                &format!("backend set-weight {group} {address} {weight}"),
                |d| d.set_weight(&group, address, weight),
            ),
            Command::BackendDrain { group, address } => set_drained(st, &group, address, true),
            Command::BackendUndrain { group, address } => set_drained(st, &group, address, false),
            Command::Withdraw => {
                let before = announced(st);
                let changed =
                    st.set_withdrawn(Some("withdrawn by the operator (ctl withdraw)".to_owned()));
                json(WithdrawResult {
                    changed,
                    withdrawn: true,
                    addresses: if changed { before } else { Vec::new() },
                    at_ms: unix_ms(st.announce.withdrawn_at),
                })
            }
            Command::Announce => {
                let changed = st.set_withdrawn(None);
                json(WithdrawResult {
                    changed,
                    withdrawn: false,
                    addresses: announced(st),
                    at_ms: unix_ms(Some(std::time::SystemTime::now())),
                })
            }
            Command::Down { grace_secs } => {
                let before = announced(st);
                st.set_withdrawn(Some("going down (ctl down)".to_owned()));
                // The grace period is for the router to move flows away: with nothing
                // announced there is nothing to wait for.
                let grace = match (before.is_empty(), grace_secs) {
                    (true, _) => 0,
                    (false, Some(g)) => g,
                    (false, None) => st
                        .config
                        .as_ref()
                        .map_or(AnnounceSettings::default().down_grace, |c| {
                            c.announce.down_grace
                        })
                        .as_secs(),
                };
                info!(
                    withdrawn = before.len(),
                    grace_secs = grace,
                    "ctl down: VIPs withdrawn; the data plane is removed after the grace period and the agent exits"
                );
                st.going_down = Some(std::time::Duration::from_secs(grace));
                self.down.notify_one();
                json(DownResult {
                    down: st.iface.clone(),
                    withdrawn: before,
                    withdrawn_at_ms: unix_ms(st.announce.withdrawn_at),
                    grace_secs: grace,
                })
            }
            other => read(st, other),
        }
    }
}

/// The VIP addresses with a route (announced or standby) right now.
fn announced(st: &AgentState) -> Vec<std::net::IpAddr> {
    st.announce
        .decisions
        .addresses
        .iter()
        .filter(|(_, d)| d.state != RouteState::Withdrawn)
        .map(|(a, _)| *a)
        .collect()
}

/// Unix milliseconds of `t` (0 for none).
pub(super) fn unix_ms(t: Option<std::time::SystemTime>) -> u64 {
    t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A refused change as an error reply: what was wrong, in the operator's terms.
fn change_error(e: ChangeError) -> ErrorBody {
    let code = match &e {
        ChangeError::Edit(EditError::NotFound(_))
        | ChangeError::Lifecycle(lifecycle::LifecycleError::NotFound(_))
        | ChangeError::NoConfig => ErrorCode::NotFound,
        ChangeError::Edit(EditError::Exists(_))
        | ChangeError::Lifecycle(lifecycle::LifecycleError::Deregistering(_)) => {
            ErrorCode::Conflict
        }
        ChangeError::Edit(EditError::Invalid(_)) | ChangeError::Config(_) => {
            ErrorCode::InvalidConfig
        }
        ChangeError::Apply(_) => ErrorCode::Internal,
    };
    ErrorBody::new(code, e.to_string())
}

/// Applies a runtime edit and answers like `apply`: per VIP, what moved.
fn edit_result(
    st: &mut AgentState,
    what: &str,
    f: impl FnOnce(&mut Draft) -> Result<Config, EditError>,
) -> Result<Value, ErrorBody> {
    let report = st.edit(what, f).map_err(change_error)?;
    let cfg = st
        .config
        .clone()
        .ok_or_else(|| internal("no configuration after an edit"))?;
    apply_result(st, &cfg, &report, false)
}

/// The reply to an apply or an edit: per VIP what moved, the configuration's warnings and
/// the live flows the change touches.
fn apply_result(
    st: &AgentState,
    cfg: &Config,
    report: &crate::install::ApplyReport,
    dry_run: bool,
) -> Result<Value, ErrorBody> {
    let mut result = ApplyResult::from_report(report, dry_run);
    result.warnings = cfg.warnings.clone();
    if let Some(why) = st.unsaved.as_ref().filter(|_| !dry_run) {
        result.warnings.push(format!(
            "the change is applied but not yet persisted ({why}): a restarted agent would not know it until a retry (every second) succeeds"
        ));
    }
    flows_touched(st, cfg, &mut result)?;
    json(result)
}

/// Fills in, per VIP, the live flows a change touches: entries on backends the new
/// configuration no longer has (they re-hash); flows on surviving backends stay put.
fn flows_touched(st: &AgentState, cfg: &Config, result: &mut ApplyResult) -> Result<(), ErrorBody> {
    let flows = st.dp.flow_counts().map_err(internal)?;
    for v in &mut result.vips {
        if let Some((vip_id, _)) = st.services.vip(&v.name) {
            let kept: Vec<u32> = cfg
                .vip(&v.name)
                .and_then(|vip| cfg.group_of(vip))
                .map(|g| {
                    g.targets
                        .iter()
                        .filter_map(|t| st.services.backend_id(&g.name, t.address))
                        .collect()
                })
                .unwrap_or_default();
            let touched = flows
                .iter()
                .filter(|((vid, bid), _)| *vid == vip_id && !kept.contains(bid))
                .map(|(_, n)| *n)
                .sum();
            v.flows_touched = Some(touched);
        }
    }
    Ok(())
}

/// An operator drain or undrain, answered with the target as `backend_list` shows it.
fn set_drained(
    st: &mut AgentState,
    group: &str,
    address: std::net::IpAddr,
    drained: bool,
) -> Result<Value, ErrorBody> {
    let key = TargetKey::new(group, address);
    let changed = st.set_drained(&key, drained).map_err(change_error)?;
    let flows = st.dp.flow_counts().map_err(internal)?;
    let info = views::backend_infos(st, &flows)
        .into_iter()
        .find(|b| b.group == key.group && b.address == Some(key.address))
        .ok_or_else(|| ErrorBody::new(ErrorCode::NotFound, format!("no target {key}")))?;
    json(DrainResult {
        changed,
        backend: info,
    })
}

#[cfg(test)]
mod tests {
    use std::{sync::mpsc, time::Duration};

    use super::*;
    use crate::{
        dataplane::{Dataplane, LoadOptions},
        install::Services,
        lifecycle::Lifecycle,
        object,
    };

    fn peer() -> Peer {
        Peer {
            pid: 1,
            uid: 0,
            gid: 0,
            groups: Vec::new(),
        }
    }

    /// What docs/admin-protocol.md promises: read-only commands run while another read
    /// holds the state; a change waits until no read does.
    #[test]
    #[cfg_attr(
        not(feature = "privileged-tests"),
        ignore = "needs root: `cargo xtask test` runs it"
    )]
    fn reads_share_the_state_and_changes_wait_for_them() {
        let bytes = object::load_bytes(None).expect("an embedded eBPF object");
        let dp = Dataplane::load_with(&bytes, &LoadOptions { flow_entries: 1024 })
            .expect("loading the data plane needs root (run through `cargo xtask test`)");
        let st = AgentState::new(dp, Services::new(), Lifecycle::new(), "lo", "native", None);
        let agent = std::sync::Arc::new(Agent::new(st));
        let held = agent.read().expect("read lock");

        let (tx, rx) = mpsc::channel();
        let reader = agent.clone();
        let read_tx = tx.clone();
        std::thread::spawn(move || {
            let r = reader.handle(Command::Status, &peer());
            let _ = read_tx.send(("status", r.is_ok()));
        });
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)),
            Ok(("status", true)),
            "a read-only command waited for another read"
        );

        let writer = agent.clone();
        std::thread::spawn(move || {
            let r = writer.handle(
                Command::BackendDrain {
                    group: "web".into(),
                    address: "198.18.11.2".parse().expect("address"),
                },
                &peer(),
            );
            // No configuration is running: the drain is refused, after taking the lock.
            let _ = tx.send(("drain", r.is_err()));
        });
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(300)),
            Err(mpsc::RecvTimeoutError::Timeout),
            "a change ran while a read held the state"
        );
        drop(held);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)),
            Ok(("drain", true)),
            "the change did not run once the read ended"
        );
    }
}
