//! Prometheus text exposition format 0.0.4: the page ([`render`]) and a minimal HTTP/1
//! server for it ([`Server`]).
//!
//! The page is rendered from a [`Sample`], not a period: Prometheus computes rates from
//! the cumulative counters itself, at whatever interval it scrapes.

use std::{
    convert::Infallible,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    header, Method, Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::{host_health, Sample};
use crate::config::{MetricsSettings, Protocol};

/// The `Content-Type` of the page.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One metric family as it is being written.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: Vec<(Vec<(&'static str, String)>, u64)>,
}

impl Family {
    fn new(name: &'static str, kind: &'static str, help: &'static str) -> Self {
        Self {
            name,
            kind,
            help,
            samples: Vec::new(),
        }
    }
}

/// The page for `sample`: counters (`_total`) are the cumulative values, gauges the
/// current ones. Every series has `availability_zone` when one is configured.
pub fn render(sample: &Sample, settings: &MetricsSettings) -> String {
    let zone = settings.availability_zone.as_deref();
    let [mut drops, mut routed] = [
        Family::new(
            "lb_dropped_packets_total",
            "counter",
            "Packets for a VIP dropped by the data plane, by reason.",
        ),
        Family::new(
            "lb_unhealthy_routing_flows_total",
            "counter",
            "New flows sent to unhealthy targets because their target group failed open.",
        ),
    ];
    for (reason, count) in &sample.drops {
        drops
            .samples
            .push((labels(zone, vec![("reason", reason.clone())]), *count));
    }
    if let Some(count) = sample.unhealthy_routed_flows {
        routed.samples.push((labels(zone, Vec::new()), count));
    }
    let mut page = String::new();
    for family in vip_families(sample, zone)
        .into_iter()
        .chain(target_families(sample, zone))
        .chain([drops, routed])
        .chain(fleet_families(sample, zone))
    {
        write_family(&mut page, &family);
    }
    page
}

/// `l` with the availability zone, when one is configured.
fn labels(zone: Option<&str>, mut l: Vec<(&'static str, String)>) -> Vec<(&'static str, String)> {
    if let Some(z) = zone {
        l.push(("availability_zone", z.to_owned()));
    }
    l
}

/// The per-VIP (load balancer) families, in page order.
fn vip_families(sample: &Sample, zone: Option<&str>) -> [Family; 7] {
    let [mut packets, mut bytes, mut new_flows, mut resets, mut active, mut healthy, mut unhealthy] = [
        Family::new(
            "lb_processed_packets_total",
            "counter",
            "Packets of a VIP (load balancer) forwarded since the data plane was loaded.",
        ),
        Family::new(
            "lb_processed_bytes_total",
            "counter",
            "Bytes of a VIP (load balancer) forwarded since the data plane was loaded.",
        ),
        Family::new(
            "lb_new_flows_total",
            "counter",
            "New flows (TCP connections, UDP flows) of a VIP.",
        ),
        Family::new(
            "lb_tcp_client_resets_total",
            "counter",
            "TCP RST packets from clients to a TCP VIP.",
        ),
        Family::new(
            "lb_active_flows",
            "gauge",
            "Flow-table entries of a VIP now.",
        ),
        Family::new(
            "lb_healthy_hosts",
            "gauge",
            "Healthy targets of the target group serving a VIP.",
        ),
        Family::new(
            "lb_unhealthy_hosts",
            "gauge",
            "Unhealthy targets (initial, unhealthy, unhealthy.draining) of the target group serving a VIP.",
        ),
    ];
    for vip in &sample.vips {
        let lb = || labels(zone, vec![("load_balancer", vip.name.clone())]);
        packets.samples.push((lb(), vip.counter.packets));
        bytes.samples.push((lb(), vip.counter.bytes));
        new_flows.samples.push((lb(), vip.counter.new_flows));
        if vip.proto == Protocol::Tcp {
            resets.samples.push((lb(), vip.counter.resets));
        }
        active.samples.push((lb(), vip.active_flows));
        let group = || {
            labels(
                zone,
                vec![
                    ("load_balancer", vip.name.clone()),
                    ("target_group", vip.target_group.clone()),
                ],
            )
        };
        let of_group = sample
            .targets
            .iter()
            .filter(|t| t.group == vip.target_group);
        let (mut h, mut u) = (0, 0);
        for t in of_group {
            match host_health(&t.state) {
                Some(true) => h += 1,
                Some(false) => u += 1,
                None => {}
            }
        }
        healthy.samples.push((group(), h));
        unhealthy.samples.push((group(), u));
    }
    [
        packets, bytes, new_flows, resets, active, healthy, unhealthy,
    ]
}

/// The per-target families, in page order.
fn target_families(sample: &Sample, zone: Option<&str>) -> [Family; 4] {
    let [mut t_packets, mut t_bytes, mut t_new, mut t_active] = [
        Family::new(
            "lb_target_processed_packets_total",
            "counter",
            "Packets forwarded to a target.",
        ),
        Family::new(
            "lb_target_processed_bytes_total",
            "counter",
            "Bytes forwarded to a target.",
        ),
        Family::new(
            "lb_target_new_flows_total",
            "counter",
            "New flows sent to a target.",
        ),
        Family::new(
            "lb_target_active_flows",
            "gauge",
            "Flow-table entries pointing at a target now.",
        ),
    ];
    for t in &sample.targets {
        let l = || {
            labels(
                zone,
                vec![
                    ("target_group", t.group.clone()),
                    ("target", t.address.to_string()),
                ],
            )
        };
        t_packets.samples.push((l(), t.counter.packets));
        t_bytes.samples.push((l(), t.counter.bytes));
        t_new.samples.push((l(), t.counter.new_flows));
        t_active.samples.push((l(), t.active_flows));
    }
    [t_packets, t_bytes, t_new, t_active]
}

/// The fleet families: the info metric a fleet's monitoring compares across hosts, and
/// each VIP's route state.
fn fleet_families(sample: &Sample, zone: Option<&str>) -> [Family; 2] {
    let mut info = Family::new(
        "lb_fleet_info",
        "gauge",
        "Always 1; the labels identify what decides where new flows go (fleet fingerprint) \
         and the metric of this host's VIP routes. Every host behind one ECMP group must \
         show the same fingerprint.",
    );
    let mut routes = Family::new(
        "lb_vip_announce_state",
        "gauge",
        "What this host announces for the VIP: 0 withdrawn, 1 standby (used only when no \
         host announces it normally), 2 announced.",
    );
    if let Some(f) = &sample.fleet {
        info.samples.push((
            labels(
                zone,
                vec![
                    ("fingerprint", f.fingerprint.clone()),
                    ("route_tag", f.route_tag.to_string()),
                ],
            ),
            1,
        ));
        for (vip, state) in &f.vips {
            let value = match *state {
                "announced" => 2,
                "standby" => 1,
                _ => 0,
            };
            routes
                .samples
                .push((labels(zone, vec![("load_balancer", vip.clone())]), value));
        }
    }
    [info, routes]
}

/// Appends `family` to `page` (nothing for a family without samples).
fn write_family(page: &mut String, family: &Family) {
    if family.samples.is_empty() {
        return;
    }
    page.push_str(&format!(
        "# HELP {} {}\n# TYPE {} {}\n",
        family.name,
        escape_help(family.help),
        family.name,
        family.kind
    ));
    for (labels, value) in &family.samples {
        page.push_str(family.name);
        if !labels.is_empty() {
            page.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    page.push(',');
                }
                page.push_str(&format!("{k}=\"{}\"", escape_label(v)));
            }
            page.push('}');
        }
        page.push_str(&format!(" {value}\n"));
    }
}

/// A label value as the text format quotes it: `\`, `"` and newline escaped.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text escapes `\` and newline.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// The page the server answers with; the agent replaces its contents every second.
pub type Page = Arc<Mutex<String>>;

/// An HTTP connection that has not finished within this long is closed (a client that
/// never sends its request must not hold a task for ever).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// The `/metrics` endpoint: `GET` (or `HEAD`) `/metrics` answers with the page, any other
/// path 404, another method on `/metrics` 405. Stops when dropped.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Binds `addr` (port 0: an ephemeral port, see [`Server::local_addr`]) and serves
    /// `page` on the current tokio runtime.
    pub async fn start(addr: SocketAddr, page: Page) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let task = tokio::spawn(accept_loop(listener, page));
        Ok(Self { local_addr, task })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, page: Page) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(error = %e, "metrics: prometheus endpoint cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let page = Arc::clone(&page);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let page = Arc::clone(&page);
                async move { Ok::<_, Infallible>(respond(&req, &page)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "metrics: prometheus connection failed"),
                Err(_) => tracing::debug!("metrics: prometheus connection timed out"),
            }
        });
    }
}

fn respond(req: &Request<Incoming>, page: &Page) -> Response<Full<Bytes>> {
    let (status, content_type, body) = if req.uri().path() != "/metrics" {
        (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics\n".to_owned(),
        )
    } else if req.method() == Method::GET || req.method() == Method::HEAD {
        let text = page.lock().unwrap_or_else(|e| e.into_inner()).clone();
        (StatusCode::OK, CONTENT_TYPE, text)
    } else {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use GET\n".to_owned(),
        )
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}
