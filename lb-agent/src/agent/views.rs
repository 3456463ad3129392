//! Read-only views of the running agent for the admin replies: status, VIPs with their
//! rings, backends with their lifecycle state, which backend a flow goes to, and the
//! metrics `ctl metrics` and `ctl top` show. Nothing here changes the agent.

use std::{collections::HashMap, net::IpAddr};

use lb_common::{
    service::{addr16, vip_flags},
    FlowKey,
};
use serde_json::Value;

use super::{handler::unix_ms, metrics_wiring, running::AgentState};
use crate::{
    admin::protocol::{
        AnnounceInfo, BackendInfo, DatumResult, EmfResult, ErrorBody, ErrorCode, FlowAnswer,
        MetricsFormat, PromResult, RouteInfo, StatusInfo, TopInfo, TopTarget, TopVip, VipAnnounce,
        VipInfo, PROTOCOL_VERSION,
    },
    lifecycle::{self, RING_WEIGHT_SCALE},
    target::TargetKey,
};

pub(super) fn internal(e: impl std::fmt::Display) -> ErrorBody {
    ErrorBody::new(ErrorCode::Internal, e.to_string())
}

pub(super) fn json(v: impl serde::Serialize) -> Result<Value, ErrorBody> {
    serde_json::to_value(v).map_err(internal)
}

/// `status`: the agent, its program and configuration, and its targets per state.
pub(super) fn status(st: &AgentState) -> StatusInfo {
    StatusInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        protocol: PROTOCOL_VERSION,
        pid: std::process::id(),
        uptime_secs: st.started.elapsed().as_secs(),
        iface: Some(st.iface.clone()),
        xdp_mode: Some(st.xdp_mode.clone()),
        config: st.source.as_ref().map(|s| s.path.display().to_string()),
        vips: st.config.as_ref().map_or(0, |c| c.vips.len()),
        backends: st
            .config
            .as_ref()
            .map_or(0, |c| c.target_groups.iter().map(|g| g.targets.len()).sum()),
        program: st.dp.program_info().ok(),
        attachment: super::attachment::info(st),
        config_edited: st.edited,
        targets: {
            let now = lifecycle::now_ms();
            // Every state, zeros included: a script or an alert reads `unhealthy`
            // without first asking whether it is there.
            let mut counts: std::collections::BTreeMap<String, usize> =
                (lifecycle::TargetState::ALL.iter())
                    .map(|s| (s.as_str().to_owned(), 0))
                    .collect();
            for (key, _) in st.lifecycle.targets() {
                if let Some(v) = st.target_view(key, now) {
                    *counts.entry(v.state.as_str().to_owned()).or_insert(0) += 1;
                }
            }
            counts
        },
        failing_open: st.failing_open.iter().cloned().collect(),
        fingerprint: format!("{:016x}", st.announce.fingerprint),
        route_tag: st.announce.route_tag(st.config.as_ref()),
        announce: announce_info(st),
    }
}

/// `status`'s `announce`: the table, the operator's withdrawal and every VIP address.
fn announce_info(st: &AgentState) -> AnnounceInfo {
    let a = &st.announce;
    let applied = a
        .announcer
        .as_ref()
        .map(|t| t.applied())
        .unwrap_or_default();
    let wanted = a.wanted(st.config.as_ref());
    let metrics = wanted.routes;
    AnnounceInfo {
        table: wanted.table,
        withdrawn_by_operator: a.host.withdrawn.is_some(),
        withdrawn_reason: a.host.withdrawn.clone(),
        withdrawn_at_ms: a.withdrawn_at.map(|t| unix_ms(Some(t))),
        in_sync_at_ms: applied.at.map(|t| unix_ms(Some(t))),
        error: applied.error,
        routes: a
            .decisions
            .addresses
            .iter()
            .map(|(address, d)| RouteInfo {
                address: Some(*address),
                state: d.state.as_str().to_owned(),
                metric: metrics.get(address).copied(),
                vips: d.vips.clone(),
                reason: d.reason.clone(),
            })
            .collect(),
    }
}

/// `backend list [group]`: the targets of one group or of all.
pub(super) fn backend_list(
    st: &AgentState,
    group: Option<&str>,
) -> Result<Vec<BackendInfo>, ErrorBody> {
    let flows = st.dp.flow_counts().map_err(internal)?;
    let list: Vec<BackendInfo> = backend_infos(st, &flows)
        .into_iter()
        .filter(|b| group.is_none_or(|g| g == b.group))
        .collect();
    if let Some(g) = group {
        if list.is_empty() && st.config.as_ref().and_then(|c| c.target_group(g)).is_none() {
            return Err(ErrorBody::new(
                ErrorCode::NotFound,
                format!("no target group named {g:?}"),
            ));
        }
    }
    Ok(list)
}

pub(super) fn vip_infos(st: &AgentState, with_backends: bool) -> Result<Vec<VipInfo>, ErrorBody> {
    let Some(cfg) = &st.config else {
        return Ok(Vec::new());
    };
    let flows = if with_backends {
        st.dp.flow_counts().map_err(internal)?
    } else {
        HashMap::new()
    };
    let backends = backend_infos(st, &flows);
    Ok(cfg
        .vips
        .iter()
        .map(|v| {
            let ring = st.services.vip(&v.name);
            let counts = ring.map(|(_, t)| t.counts()).unwrap_or_default();
            VipInfo {
                name: v.name.clone(),
                address: Some(v.address),
                port: v.port,
                proto: v.protocol.as_str().into(),
                mode: v.mode.as_str().into(),
                target_group: v.target_group.clone(),
                vip_id: ring.map_or(0, |(id, _)| id),
                backends: Some(
                    counts
                        .keys()
                        .filter(|id| **id != crate::maglev::NO_BACKEND)
                        .count(),
                ),
                ring_size: ring.map_or(v.ring_size, |(_, t)| t.size()),
                fingerprint: ring
                    .map_or_else(String::new, |(_, t)| format!("{:016x}", t.fingerprint())),
                announce: st
                    .announce
                    .decisions
                    .vip(&v.name)
                    .map(|d| VipAnnounce {
                        policy: d.policy.as_str().to_owned(),
                        state: d.state.as_str().to_owned(),
                        reason: d.reason.clone(),
                    })
                    .unwrap_or_default(),
                backend_list: if with_backends {
                    backends
                        .iter()
                        .filter(|b| b.group == v.target_group)
                        .map(|b| {
                            let vip_id = ring.map_or(u32::MAX, |(id, _)| id);
                            BackendInfo {
                                slots: b
                                    .backend_id
                                    .map(|id| counts.get(&id).copied().unwrap_or(0) as u64),
                                flows: b
                                    .backend_id
                                    .map(|id| flows.get(&(vip_id, id)).copied().unwrap_or(0)),
                                ..b.clone()
                            }
                        })
                        .collect()
                } else {
                    Vec::new()
                },
            }
        })
        .collect())
}

/// Every target the lifecycle knows (registered ones in configuration order, then those
/// still draining after deregistration), with its state.
pub(super) fn backend_infos(st: &AgentState, flows: &HashMap<(u32, u32), u64>) -> Vec<BackendInfo> {
    let Some(cfg) = &st.config else {
        return Vec::new();
    };
    let now = lifecycle::now_ms();
    let mut keys: Vec<TargetKey> = cfg
        .target_groups
        .iter()
        .flat_map(|g| g.targets.iter().map(|t| TargetKey::new(&g.name, t.address)))
        .collect();
    keys.extend(
        st.lifecycle
            .targets()
            .filter(|(_, l)| !l.registered)
            .map(|(k, _)| k.clone()),
    );
    keys.into_iter()
        .map(|key| {
            let id = st.services.backend_id(&key.group, key.address);
            let life = st.lifecycle.get(&key);
            let view = st.target_view(&key, now);
            let keeps = st.installed_keeps_flows(&key);
            BackendInfo {
                group: key.group.clone(),
                address: Some(key.address),
                weight: life.map_or(0, |l| l.configured_weight),
                state: view.as_ref().map_or("unused", |v| v.state.as_str()).into(),
                reason: view.as_ref().and_then(|v| v.reason.clone()),
                detail: view.as_ref().map(|v| v.detail.clone()).unwrap_or_default(),
                // What the installed rings use (the view may be a tick ahead).
                effective_weight: st
                    .installed_weight(&key)
                    .or(view.as_ref().map(|v| v.ring_weight))
                    .map_or(0.0, |w| f64::from(w) / f64::from(RING_WEIGHT_SCALE)),
                remaining_secs: view
                    .as_ref()
                    .and_then(|v| v.remaining_ms)
                    .map(|ms| ms.div_ceil(1000)),
                fail_open: view.as_ref().is_some_and(|v| v.fail_open),
                backend_id: id,
                // Entries of a target whose flows are not kept are dead: the data plane
                // re-hashes them at their next packet (UDP entries linger until then).
                flows: id.map(|id| {
                    if keeps == Some(false) {
                        return 0;
                    }
                    flows
                        .iter()
                        .filter(|((_, b), _)| *b == id)
                        .map(|(_, n)| *n)
                        .sum()
                }),
                slots: None,
            }
        })
        .collect()
}

/// Which backend a flow goes to: the flow table's entry if it has a current one, else the
/// ring's pick for the flow hash, exactly as the data plane decides.
pub(super) fn flow_answer(
    st: &AgentState,
    proto: u8,
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
) -> Result<FlowAnswer, ErrorBody> {
    let cfg = st
        .config
        .as_ref()
        .ok_or_else(|| ErrorBody::new(ErrorCode::NotFound, "no configuration applied"))?;
    let vip = cfg
        .vips
        .iter()
        .find(|v| v.address == dst && v.protocol.number() == proto && v.port == dport)
        .or_else(|| {
            cfg.vips
                .iter()
                .find(|v| v.address == dst && v.protocol.number() == proto && v.port == 0)
        })
        .ok_or_else(|| {
            ErrorBody::new(
                ErrorCode::NotFound,
                format!("{dst} port {dport} is not a VIP: the flow is passed to the kernel"),
            )
        })?;
    let (vip_id, table) = st.services.vip(&vip.name).ok_or_else(|| {
        ErrorBody::new(
            ErrorCode::NotFound,
            format!("VIP {:?} has no ring yet", vip.name),
        )
    })?;
    let (src16, family) = addr16(src);
    let (dst16, _) = addr16(dst);
    let key = FlowKey {
        src: src16,
        dst: dst16,
        sport: sport.to_be(),
        dport: dport.to_be(),
        proto,
        family,
        _pad: [0; 2],
    };
    let group = cfg.group_of(vip);
    let name_of = |id: u32| {
        group.and_then(|g| {
            g.targets
                .iter()
                .find(|t| st.services.backend_id(&g.name, t.address) == Some(id))
                .map(|t| t.address)
        })
    };
    let frag_route = vip.flags() & vip_flags::FRAG_ROUTE != 0;
    if !frag_route {
        if let Some(entry) = st.dp.flow(&key).map_err(internal)? {
            if entry.vip_id == vip_id {
                return Ok(FlowAnswer {
                    vip: Some(vip.name.clone()),
                    backend: name_of(entry.backend_id),
                    backend_id: Some(entry.backend_id),
                    group: Some(vip.target_group.clone()),
                    source: "flow table".into(),
                    ring_slot: None,
                });
            }
        }
    }
    let seed = cfg.agent.hash_seed;
    let hash = lb_common::hash::flow_hash(&key, vip.flags(), seed);
    let slot = hash % table.size();
    let id = table.slots()[slot as usize];
    Ok(FlowAnswer {
        vip: Some(vip.name.clone()),
        backend: name_of(id),
        backend_id: (id != crate::maglev::NO_BACKEND).then_some(id),
        group: Some(vip.target_group.clone()),
        source: "ring".into(),
        ring_slot: Some(slot),
    })
}

/// `metrics`: the last completed period in `format`, or the current Prometheus page.
pub(super) fn metrics_result(st: &AgentState, format: MetricsFormat) -> Result<Value, ErrorBody> {
    use crate::metrics::{datum, emf, json as period_json, prometheus};
    let Some(m) = &st.metrics else {
        return Err(ErrorBody::new(
            ErrorCode::NotFound,
            "no configuration, no metrics",
        ));
    };
    if format == MetricsFormat::Prom {
        let text = match &m.last_sample {
            Some(sample) => prometheus::render(sample, &m.settings),
            None => String::new(),
        };
        return json(PromResult { text });
    }
    let Some(period) = &m.last_period else {
        return Err(ErrorBody::new(
            ErrorCode::NotFound,
            format!(
                "no metrics period has completed yet (periods are {} s; the agent has run {} s)",
                m.settings.period.as_secs(),
                st.started.elapsed().as_secs()
            ),
        ));
    };
    match format {
        MetricsFormat::Emf => json(EmfResult {
            lines: emf::render(period, &m.settings),
        }),
        MetricsFormat::Datum => json(DatumResult {
            requests: datum::render(period, &m.settings),
        }),
        MetricsFormat::Json | MetricsFormat::Prom => Ok(period_json::render(period, &m.settings)),
    }
}

/// `top`: rates between the last two one-second samples.
pub(super) fn top_result(st: &AgentState) -> Result<Value, ErrorBody> {
    let Some(m) = &st.metrics else {
        return Err(ErrorBody::new(
            ErrorCode::NotFound,
            "no configuration, nothing to show",
        ));
    };
    let (Some(now), Some(before)) = (&m.last_sample, &m.prev_sample) else {
        return Err(ErrorBody::new(
            ErrorCode::NotFound,
            "no rates yet: the agent samples once a second, try again in a moment",
        ));
    };
    let secs = now
        .at
        .duration_since(before.at)
        .map_or(1.0, |d| d.as_secs_f64());
    let vips: Vec<TopVip> = now
        .vips
        .iter()
        .map(|v| {
            let r = before
                .vips
                .iter()
                .find(|b| b.name == v.name)
                .map_or([0.0; 3], |b| {
                    metrics_wiring::rate(&v.counter, &b.counter, secs)
                });
            let group: Vec<_> = now
                .targets
                .iter()
                .filter(|t| t.group == v.target_group)
                .collect();
            let healthy = group.iter().filter(|t| t.state == "healthy").count();
            TopVip {
                name: v.name.clone(),
                proto: v.proto.as_str().into(),
                packets_per_sec: r[0],
                bytes_per_sec: r[1],
                new_flows_per_sec: r[2],
                active_flows: v.active_flows,
                healthy: format!("{healthy}/{}", group.len()),
            }
        })
        .collect();
    let targets: Vec<TopTarget> = now
        .targets
        .iter()
        .map(|t| {
            let r = before
                .targets
                .iter()
                .find(|b| b.group == t.group && b.address == t.address)
                .map_or([0.0; 3], |b| {
                    metrics_wiring::rate(&t.counter, &b.counter, secs)
                });
            TopTarget {
                group: t.group.clone(),
                address: Some(t.address),
                state: t.state.clone(),
                packets_per_sec: r[0],
                bytes_per_sec: r[1],
                new_flows_per_sec: r[2],
                active_flows: t.active_flows,
                fail_open: t.fail_open,
            }
        })
        .collect();
    json(TopInfo {
        interval_secs: secs,
        vips,
        targets,
    })
}
