//! Client traffic through a VIP, for the fault tests, the fleet, the demos and the bench:
//! single HTTP requests, long-lived line-protocol connections that each check every
//! reply comes from the backend they started on, and a prober that opens a new
//! connection at a steady pace. Everything returns its figures as data; sockets are made
//! in the client's namespace. Replies name their backend `be<i>` (both topologies'
//! servers answer so).

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Context as _;

pub use crate::agentnet::{backend_index, http_get_from as http_get, LineConn, BACKENDS};
use crate::netns::Ns;

/// A connection's record.
#[derive(Clone, Debug)]
pub struct ConnRecord {
    /// The client's source port (with the client address and the VIP, the flow).
    pub sport: u16,
    /// The backend of its first reply.
    pub backend: usize,
    pub replies: u64,
    /// When and how it broke (reset, closed, timed out, or answered by another backend).
    pub broken: Option<(Instant, String)>,
    /// Gaps between consecutive replies longer than twice the request interval: when
    /// each ended, and how long it was.
    pub gaps: Vec<(Instant, Duration)>,
    last_reply: Instant,
}

/// What a [`LongLived`] workload saw, over the whole run or since a moment.
#[derive(Clone, Debug, Default)]
pub struct LongLivedReport {
    pub connections: usize,
    /// Connections that broke in the period.
    pub broken: Vec<String>,
    /// Connections never broken (over the whole run).
    pub intact: usize,
    /// Replies received, over the whole run.
    pub replies: u64,
    /// The longest gap between two replies of one connection in the period (gaps of at
    /// most twice the request interval are not recorded: zero means none was longer).
    pub longest_gap: Duration,
    /// Connections that saw such a gap in the period.
    pub connections_with_gap: usize,
}

impl LongLivedReport {
    /// Adds `other`'s figures (another workload over the same period) to these.
    pub fn merge(&mut self, other: &LongLivedReport) {
        self.connections += other.connections;
        self.broken.extend(other.broken.iter().cloned());
        self.intact += other.intact;
        self.replies += other.replies;
        self.longest_gap = self.longest_gap.max(other.longest_gap);
        self.connections_with_gap += other.connections_with_gap;
    }

    /// Connections that did not break in the period, in percent.
    pub fn survived_pct(&self) -> f64 {
        if self.connections == 0 {
            return 0.0;
        }
        100.0 * (self.connections - self.broken.len()) as f64 / self.connections as f64
    }
}

/// `n` long-lived connections to one address, each sending a line every `interval` from
/// its own thread and checking that the same backend answers every time. A connection
/// that breaks stops (its record says why); the others go on until [`LongLived::stop`].
pub struct LongLived {
    records: Arc<Vec<Mutex<ConnRecord>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pub started: Instant,
}

/// How long a request may go unanswered before its connection counts as broken: longer
/// than any failover (TCP retransmits at 0.2, 0.6, 1.4, 3 s …), short enough to end.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

impl LongLived {
    /// Opens the connections from `client` (one at a time; each must answer once) and
    /// starts them.
    pub fn start(
        client: &Ns,
        to: SocketAddr,
        n: usize,
        interval: Duration,
    ) -> anyhow::Result<Self> {
        let conns = client.enter(|| -> anyhow::Result<Vec<(LineConn, ConnRecord)>> {
            let mut conns = Vec::with_capacity(n);
            for k in 0..n {
                let mut c = LineConn::connect(to, Duration::from_secs(3))
                    .with_context(|| format!("opening long-lived connection {k} to {to}"))?;
                let backend = c.ask().with_context(|| format!("first request of {k}"))?;
                c.set_timeout(REQUEST_TIMEOUT)?;
                let sport = c.local_port()?;
                let record = ConnRecord {
                    sport,
                    backend,
                    replies: 1,
                    broken: None,
                    gaps: Vec::new(),
                    last_reply: Instant::now(),
                };
                conns.push((c, record));
            }
            Ok(conns)
        })??;
        let records: Arc<Vec<Mutex<ConnRecord>>> =
            Arc::new(conns.iter().map(|(_, r)| Mutex::new(r.clone())).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::with_capacity(n);
        for (k, (mut conn, _)) in conns.into_iter().enumerate() {
            let (records, stop) = (records.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                // Spread the first requests over one interval instead of all at once.
                std::thread::sleep(interval.mul_f64(k as f64 / n.max(1) as f64));
                if let Some(record) = records.get(k) {
                    keep_asking(&mut conn, record, &stop, interval);
                }
            }));
        }
        Ok(Self {
            records,
            stop,
            threads,
            started: Instant::now(),
        })
    }

    /// Each connection's (source port, first backend), in opening order.
    pub fn flows(&self) -> Vec<(u16, usize)> {
        self.records
            .iter()
            .filter_map(|r| r.lock().ok().map(|r| (r.sport, r.backend)))
            .collect()
    }

    /// A copy of every connection's record.
    pub fn records(&self) -> Vec<ConnRecord> {
        self.records
            .iter()
            .filter_map(|r| r.lock().ok().map(|r| r.clone()))
            .collect()
    }

    /// The figures so far, counting breaks and gaps that ended at or after `since`.
    pub fn report_since(&self, since: Instant) -> LongLivedReport {
        let records = self.records();
        let mut report = LongLivedReport {
            connections: records.len(),
            ..LongLivedReport::default()
        };
        for r in &records {
            report.replies += r.replies;
            match &r.broken {
                None => report.intact += 1,
                Some((at, why)) if *at >= since => report
                    .broken
                    .push(format!("sport {} (be{}): {why}", r.sport, r.backend)),
                Some(_) => {}
            }
            let longest = r
                .gaps
                .iter()
                .filter(|(end, _)| *end >= since)
                .map(|(_, gap)| *gap)
                .max();
            if let Some(g) = longest {
                report.connections_with_gap += 1;
                report.longest_gap = report.longest_gap.max(g);
            }
        }
        report
    }

    /// The figures of the whole run so far.
    pub fn report(&self) -> LongLivedReport {
        self.report_since(self.started)
    }

    /// Stops every connection and returns the figures of the whole run.
    pub fn stop(mut self) -> LongLivedReport {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.report()
    }
}

/// One connection's loop: a request every `interval` until `stop`, each reply checked
/// against the first backend and recorded; returns when the connection breaks.
fn keep_asking(
    conn: &mut LineConn,
    record: &Mutex<ConnRecord>,
    stop: &AtomicBool,
    interval: Duration,
) {
    while !stop.load(Ordering::Relaxed) {
        let answer = conn.ask();
        let Ok(mut r) = record.lock() else { return };
        let now = Instant::now();
        match answer {
            Ok(b) if b == r.backend => {
                let gap = now - r.last_reply;
                if gap > interval * 2 {
                    r.gaps.push((now, gap));
                }
                r.last_reply = now;
                r.replies += 1;
            }
            Ok(b) => {
                r.broken = Some((now, format!("moved from be{} to be{b}", r.backend)));
                return;
            }
            Err(e) => {
                r.broken = Some((now, format!("{e:#}")));
                return;
            }
        }
        drop(r);
        std::thread::sleep(interval);
    }
}

impl Drop for LongLived {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What a [`Prober`] saw.
#[derive(Clone, Debug, Default)]
pub struct ProbeReport {
    pub attempts: u64,
    /// Requests per backend.
    pub backends: [u64; BACKENDS],
    /// Each failed request: when (since the prober started) and why.
    pub failed: Vec<String>,
}

/// New connections at a steady pace (one HTTP GET every `every`), from the client's
/// namespace, until stopped.
pub struct Prober {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<ProbeReport>>,
    thread: Option<JoinHandle<()>>,
}

impl Prober {
    pub fn start(client: &Ns, to: SocketAddr, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(ProbeReport::default()));
        let (st, rep, ns) = (stop.clone(), report.clone(), client.clone());
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let run = ns.enter(|| {
                while !st.load(Ordering::Relaxed) {
                    let result = http_get(to, Duration::from_secs(3));
                    if let Ok(mut r) = rep.lock() {
                        r.attempts += 1;
                        match result {
                            Ok(b) => {
                                if let Some(n) = r.backends.get_mut(b) {
                                    *n += 1;
                                }
                            }
                            Err(e) => r.failed.push(format!(
                                "at {:.2} s: {e:#}",
                                started.elapsed().as_secs_f64()
                            )),
                        }
                    }
                    std::thread::sleep(every);
                }
            });
            if let (Err(e), Ok(mut r)) = (run, rep.lock()) {
                r.failed
                    .push(format!("entering the client namespace: {e:#}"));
            }
        });
        Self {
            stop,
            report,
            thread: Some(thread),
        }
    }

    /// Stops and returns the figures.
    pub fn stop(mut self) -> ProbeReport {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.report
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|_| ProbeReport {
                failed: vec!["prober report poisoned".into()],
                ..ProbeReport::default()
            })
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
