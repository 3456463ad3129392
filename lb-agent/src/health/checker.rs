//! The scheduler: one tokio task per target (and one more for its agent check), each
//! probing at its interval and feeding its [`TargetHealth`].
//!
//! - A target's probes run one after another, so a slow target delays only itself, and
//!   a probe never overlaps the next one (a missed tick is delayed, not bunched up).
//! - Each target's first probe waits for an offset derived from a hash of its key
//!   ([`spread_offset`]), so 10,000 targets configured at once are probed evenly over
//!   the interval instead of all in its first millisecond.
//! - At most [`MAX_IN_FLIGHT`] probes run at once (fewer when the agent's file descriptor
//!   limit is low, see `agent::fd_limit`), to keep the agent well within its file
//!   descriptors when many targets hang until their timeout.
//! - Shared state is a `std::sync::Mutex` per target (held for microseconds, never across
//!   an await) plus one for the set of targets.
//!
//! Cost (`checker_cost`, an ignored test; release build, this project's 2-core VM):
//! 10,000 TCP targets at 1 s take 8 % of one core in user space, and 42 % in the kernel,
//! which is the TCP handshake and reset of 10,000 connections a second over loopback,
//! both ends of which the kernel runs in the connecting thread. A bare blocking
//! connect-and-reset loop at the same rate costs 55 % of a core with its responder,
//! against 65 % for the checker with its responder: the scheduler adds about 10 %.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, SystemTime},
};

use tokio::{
    sync::{mpsc::UnboundedSender, Semaphore},
    task::JoinHandle,
    time::{Instant, MissedTickBehavior},
};

use super::{
    agent_check::{self, agent_probe, AgentStatus},
    probe, AgentCheckSpec, CheckSpec, HealthState, Reason, TargetHealth, TargetKey,
};

/// Probes (health and agent checks) in flight at most, over all targets.
pub const MAX_IN_FLIGHT: usize = 4096;

/// Something about a target changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthEvent {
    /// Its health state changed.
    State {
        key: TargetKey,
        from: HealthState,
        to: HealthState,
        /// The reason of the new state (`None` for healthy).
        reason: Option<Reason>,
        /// The probe result that caused it.
        detail: String,
    },
    /// The weight percentage it reports changed (see [`TargetHealthView::weight_pct`]).
    Weight { key: TargetKey, pct: Option<u8> },
    /// Its agent asked for something else: `Drain` means weight 0 (no new flows),
    /// `Down` out of service, `Ready` back to what health and weight say.
    AgentSays { key: TargetKey, status: AgentStatus },
}

/// What the agent check last learnt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentView {
    pub status: AgentStatus,
    pub weight_pct: Option<u8>,
    /// Whether the last attempt got an answer.
    pub reachable: bool,
    /// The last answer or failure, in words.
    pub detail: String,
    pub last_check: Option<SystemTime>,
}

/// One target's health, for display and for the agent's decisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetHealthView {
    pub state: HealthState,
    pub reason: Option<Reason>,
    /// The last probe's result in words; empty before the first.
    pub detail: String,
    pub latency: Option<Duration>,
    pub consecutive_successes: u32,
    pub consecutive_failures: u32,
    /// Flaps counted against the next recovery (see [`TargetHealth`]).
    pub flaps: u32,
    pub last_check: Option<SystemTime>,
    /// The percentage of its configured weight the target asks for: the lower of what the
    /// exec check's output and the agent check last said (each can only lower it).
    pub weight_pct: Option<u8>,
    pub agent: Option<AgentView>,
}

impl TargetHealthView {
    /// `last_check` as seconds since the Unix epoch.
    pub fn last_check_unix_secs(&self) -> Option<u64> {
        self.last_check
            .and_then(|at| at.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|since| since.as_secs())
    }
}

/// Runs the checks of a set of targets; see the module docs. Dropping it stops them all.
pub struct HealthChecker {
    events: UnboundedSender<HealthEvent>,
    permits: Arc<Semaphore>,
    targets: Mutex<HashMap<TargetKey, Checked>>,
}

impl HealthChecker {
    pub fn new(events: UnboundedSender<HealthEvent>) -> Self {
        Self::with_max_in_flight(events, MAX_IN_FLIGHT)
    }

    /// At most `max_in_flight` probes at once (fewer than [`MAX_IN_FLIGHT`] where the
    /// agent's file descriptor limit calls for it).
    pub fn with_max_in_flight(events: UnboundedSender<HealthEvent>, max_in_flight: usize) -> Self {
        Self {
            events,
            permits: Arc::new(Semaphore::new(max_in_flight.max(1))),
            targets: Mutex::new(HashMap::new()),
        }
    }

    /// Makes `targets` the checked set: new ones start `initial`, gone ones stop, ones
    /// whose specs are unchanged keep their state, and ones whose specs changed start over
    /// from `initial` (without an event: the caller knows). Must be called within a tokio
    /// runtime (it spawns the checks).
    pub fn set_targets(&self, targets: Vec<(TargetKey, CheckSpec, Option<AgentCheckSpec>)>) {
        let mut checked = lock(&self.targets);
        let mut next = HashMap::with_capacity(targets.len());
        for (key, spec, agent) in targets {
            let kept = checked
                .remove(&key)
                .filter(|old| old.spec == spec && old.agent == agent);
            let entry = kept.unwrap_or_else(|| self.start(&key, spec, agent));
            next.insert(key, entry);
        }
        // What is left in `checked` is gone: dropping it stops its tasks.
        *checked = next;
    }

    /// Every checked target's health, in key order.
    pub fn snapshot(&self) -> Vec<(TargetKey, TargetHealthView)> {
        let mut views: Vec<_> = lock(&self.targets)
            .iter()
            .map(|(key, checked)| (key.clone(), lock(&checked.status).view()))
            .collect();
        views.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        views
    }

    fn start(&self, key: &TargetKey, spec: CheckSpec, agent: Option<AgentCheckSpec>) -> Checked {
        let status = Arc::new(Mutex::new(Status {
            health: TargetHealth::new(
                spec.healthy_threshold,
                spec.unhealthy_threshold,
                spec.interval,
            ),
            last_check: None,
            exec_weight: None,
            agent: agent.map(|_| AgentView {
                status: AgentStatus::Ready,
                weight_pct: None,
                reachable: false,
                detail: String::new(),
                last_check: None,
            }),
        }));
        let context = Context {
            key: key.clone(),
            status: status.clone(),
            events: self.events.clone(),
            permits: self.permits.clone(),
        };
        let mut tasks = vec![tokio::spawn(check_loop(context.clone(), spec.clone()))];
        if let Some(agent) = agent {
            tasks.push(tokio::spawn(agent_loop(context, agent)));
        }
        Checked {
            spec,
            agent,
            status,
            tasks,
        }
    }
}

/// The offset of a target's first probe within `interval`: a hash of its key, so that it
/// is the same on every start (and in tests) and spreads any set of keys evenly.
pub fn spread_offset(key: &TargetKey, interval: Duration) -> Duration {
    // FNV-1a over the key, then SplitMix64's finaliser: FNV alone maps sequential
    // addresses to sequential-ish values, the finaliser scatters them.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |byte: u8| {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    };
    key.group.bytes().for_each(&mut eat);
    eat(0xff);
    match key.address {
        std::net::IpAddr::V4(v4) => v4.octets().into_iter().for_each(&mut eat),
        std::net::IpAddr::V6(v6) => v6.octets().into_iter().for_each(&mut eat),
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^= hash >> 31;
    let nanos = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(hash % nanos)
}

/// A checked target: its specs, shared status, and tasks (stopped when dropped).
struct Checked {
    spec: CheckSpec,
    agent: Option<AgentCheckSpec>,
    status: Arc<Mutex<Status>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Checked {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

struct Status {
    health: TargetHealth,
    last_check: Option<SystemTime>,
    exec_weight: Option<u8>,
    agent: Option<AgentView>,
}

impl Status {
    fn weight_pct(&self) -> Option<u8> {
        let agent = self.agent.as_ref().and_then(|agent| agent.weight_pct);
        match (self.exec_weight, agent) {
            (Some(exec), Some(agent)) => Some(exec.min(agent)),
            (exec, agent) => exec.or(agent),
        }
    }

    fn view(&self) -> TargetHealthView {
        let last = self.health.last().map(|(outcome, _)| outcome);
        TargetHealthView {
            state: self.health.state(),
            reason: self.health.reason(),
            detail: last.map(|o| o.detail.clone()).unwrap_or_default(),
            latency: last.map(|o| o.latency),
            consecutive_successes: self.health.consecutive_successes(),
            consecutive_failures: self.health.consecutive_failures(),
            flaps: self.health.flaps(),
            last_check: self.last_check,
            weight_pct: self.weight_pct(),
            agent: self.agent.clone(),
        }
    }
}

/// What a target's tasks share.
#[derive(Clone)]
struct Context {
    key: TargetKey,
    status: Arc<Mutex<Status>>,
    events: UnboundedSender<HealthEvent>,
    permits: Arc<Semaphore>,
}

impl Context {
    /// Sends the events; false when nobody listens any more (the checks can stop).
    fn send(&self, events: Vec<HealthEvent>) -> bool {
        events
            .into_iter()
            .all(|event| self.events.send(event).is_ok())
    }
}

/// A tick stream for `interval`, first ticking after the key's spread offset.
fn ticks(key: &TargetKey, interval: Duration) -> tokio::time::Interval {
    // tokio's interval panics on zero; a zero interval is a configuration the agent
    // rejects, but the scheduler should not be the one to crash on it.
    let interval = interval.max(Duration::from_millis(1));
    let mut ticks =
        tokio::time::interval_at(Instant::now() + spread_offset(key, interval), interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticks
}

async fn check_loop(context: Context, spec: CheckSpec) {
    let mut ticks = ticks(&context.key, spec.interval);
    loop {
        ticks.tick().await;
        let Ok(permit) = context.permits.acquire().await else {
            return;
        };
        let outcome = probe(&context.key, &spec).await;
        drop(permit);
        let mut events = Vec::new();
        {
            let mut status = lock(&context.status);
            let weight_before = status.weight_pct();
            status.last_check = Some(SystemTime::now());
            // A passing exec check that prints no weight asks for its full weight; a
            // failing one leaves the last weight alone (its health says enough).
            if outcome.healthy {
                status.exec_weight = outcome.weight_pct;
            }
            if let Some(transition) = status.health.observe(&outcome, std::time::Instant::now()) {
                events.push(HealthEvent::State {
                    key: context.key.clone(),
                    from: transition.from,
                    to: transition.to,
                    reason: transition.reason,
                    detail: transition.detail,
                });
            }
            let weight_after = status.weight_pct();
            if weight_after != weight_before {
                events.push(HealthEvent::Weight {
                    key: context.key.clone(),
                    pct: weight_after,
                });
            }
        }
        if !context.send(events) {
            return;
        }
    }
}

async fn agent_loop(context: Context, spec: AgentCheckSpec) {
    let mut ticks = ticks(&context.key, spec.interval);
    loop {
        ticks.tick().await;
        let Ok(permit) = context.permits.acquire().await else {
            return;
        };
        let reply = agent_probe(&context.key, &spec).await;
        drop(permit);
        let mut events = Vec::new();
        {
            let mut status = lock(&context.status);
            let weight_before = status.weight_pct();
            let Some(agent) = status.agent.as_mut() else {
                return;
            };
            agent.last_check = Some(SystemTime::now());
            match reply {
                Ok(reply) => {
                    agent.reachable = true;
                    agent.detail = describe(&reply);
                    if agent_check::apply(&mut agent.status, &mut agent.weight_pct, &reply) {
                        events.push(HealthEvent::AgentSays {
                            key: context.key.clone(),
                            status: agent.status,
                        });
                    }
                }
                Err(error) => {
                    if agent.reachable {
                        tracing::warn!(
                            target = %context.key, %error,
                            "agent check failed; its last answer stands ({})",
                            agent.detail
                        );
                    }
                    agent.reachable = false;
                    agent.detail = error.to_string();
                }
            }
            let weight_after = status.weight_pct();
            if weight_after != weight_before {
                events.push(HealthEvent::Weight {
                    key: context.key.clone(),
                    pct: weight_after,
                });
            }
        }
        if !context.send(events) {
            return;
        }
    }
}

fn describe(reply: &agent_check::AgentReply) -> String {
    let words: Vec<String> = reply
        .weight_pct
        .map(|pct| format!("{pct}%"))
        .into_iter()
        .chain(reply.status.map(|status| status.as_str().to_owned()))
        .collect();
    words.join(" ")
}

/// A poisoned lock only means another task panicked mid-update of plain data; the data
/// is still the best there is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use tokio::{
        io::AsyncWriteExt,
        net::TcpListener,
        sync::mpsc::{unbounded_channel, UnboundedReceiver},
    };

    use super::*;
    use crate::health::CheckKind;

    const WAIT: Duration = Duration::from_secs(3);

    fn key(group: &str) -> TargetKey {
        TargetKey::new(group, IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    fn tcp(port: u16, interval_ms: u64) -> CheckSpec {
        CheckSpec {
            kind: CheckKind::Tcp,
            port,
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(interval_ms),
            healthy_threshold: 1,
            unhealthy_threshold: 1,
        }
    }

    async fn listener() -> (TcpListener, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        (listener, port)
    }

    fn view(checker: &HealthChecker, key: &TargetKey) -> Option<TargetHealthView> {
        checker
            .snapshot()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, view)| view)
    }

    async fn next(events: &mut UnboundedReceiver<HealthEvent>) -> HealthEvent {
        tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("an event in time")
            .expect("the checker is alive")
    }

    /// Waits for the next state change of `key`, skipping other events.
    async fn next_state(
        events: &mut UnboundedReceiver<HealthEvent>,
        key: &TargetKey,
    ) -> (HealthState, HealthState, Option<Reason>) {
        loop {
            if let HealthEvent::State {
                key: k,
                from,
                to,
                reason,
                ..
            } = next(events).await
            {
                if &k == key {
                    return (from, to, reason);
                }
            }
        }
    }

    #[tokio::test]
    async fn set_targets_keeps_removes_and_restarts() {
        let (_listener, port) = listener().await;
        let (sender, mut events) = unbounded_channel();
        let checker = HealthChecker::new(sender);
        let (a, b, c) = (key("a"), key("b"), key("c"));
        checker.set_targets(vec![
            (a.clone(), tcp(port, 50), None),
            (b.clone(), tcp(port, 50), None),
        ]);
        next_state(&mut events, &a).await;
        assert_eq!(
            view(&checker, &a).map(|v| v.state),
            Some(HealthState::Healthy)
        );

        // a unchanged, b gone, c new.
        checker.set_targets(vec![
            (a.clone(), tcp(port, 50), None),
            (c.clone(), tcp(port, 50), None),
        ]);
        let a_view = view(&checker, &a).expect("a is still checked");
        assert_eq!(a_view.state, HealthState::Healthy);
        assert!(a_view.last_check_unix_secs().is_some());
        assert_eq!(view(&checker, &b), None);
        assert_eq!(
            view(&checker, &c).map(|v| v.state),
            Some(HealthState::Initial)
        );

        // a's spec changes: it starts over.
        let mut changed = tcp(port, 50);
        changed.healthy_threshold = 2;
        checker.set_targets(vec![
            (a.clone(), changed, None),
            (c.clone(), tcp(port, 50), None),
        ]);
        let a_view = view(&checker, &a).expect("a is still checked");
        assert_eq!(a_view.state, HealthState::Initial);
        assert_eq!(a_view.reason, Some(Reason::InitialHealthChecking));
        assert_eq!(a_view.consecutive_successes, 0);
        assert_eq!(checker.snapshot().len(), 2);
    }

    #[tokio::test]
    async fn a_stopped_then_restarted_server_goes_unhealthy_then_healthy() {
        let (listener, port) = listener().await;
        let (sender, mut events) = unbounded_channel();
        let checker = HealthChecker::new(sender);
        let web = key("web");
        checker.set_targets(vec![(web.clone(), tcp(port, 50), None)]);
        assert_eq!(
            next_state(&mut events, &web).await,
            (HealthState::Initial, HealthState::Healthy, None)
        );
        drop(listener);
        assert_eq!(
            next_state(&mut events, &web).await,
            (
                HealthState::Healthy,
                HealthState::Unhealthy,
                Some(Reason::FailedHealthChecks)
            )
        );
        let _listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("rebind");
        assert_eq!(
            next_state(&mut events, &web).await,
            (HealthState::Unhealthy, HealthState::Healthy, None)
        );
        let view = view(&checker, &web).expect("checked");
        assert_eq!(view.detail, "connected");
    }

    #[tokio::test]
    async fn the_agent_check_reports_weight_and_drain() {
        let (service, port) = listener().await;
        let (agent, agent_port) = listener().await;
        tokio::spawn(async move {
            let mut answers = ["50%\n", "drain\n"].into_iter().cycle();
            while let Ok((mut stream, _)) = agent.accept().await {
                let answer = answers.next().unwrap_or_default();
                stream.write_all(answer.as_bytes()).await.expect("write");
            }
        });
        let (sender, mut events) = unbounded_channel();
        let checker = HealthChecker::new(sender);
        let web = key("web");
        let agent_spec = AgentCheckSpec {
            port: agent_port,
            interval: Duration::from_millis(50),
            timeout: Duration::from_millis(50),
        };
        checker.set_targets(vec![(web.clone(), tcp(port, 50), Some(agent_spec))]);
        let mut saw_weight = false;
        let mut saw_drain = false;
        while !(saw_weight && saw_drain) {
            match next(&mut events).await {
                HealthEvent::Weight { pct, .. } => {
                    assert_eq!(pct, Some(50));
                    saw_weight = true;
                }
                HealthEvent::AgentSays { status, .. } => {
                    assert_eq!(status, AgentStatus::Drain);
                    saw_drain = true;
                }
                HealthEvent::State { .. } => {}
            }
        }
        let agent_view = view(&checker, &web)
            .and_then(|v| v.agent)
            .expect("an agent view");
        assert!(agent_view.reachable);
        assert_eq!(agent_view.weight_pct, Some(50));
        drop(service);
    }

    #[test]
    fn first_probes_spread_evenly_over_the_interval() {
        let interval = Duration::from_secs(1);
        let mut buckets = [0u32; 10];
        for i in 0..10_000u32 {
            let address = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            let offset = spread_offset(&TargetKey::new("web", address), interval);
            assert!(offset < interval);
            let bucket = (offset.as_nanos() * 10 / interval.as_nanos()) as usize;
            buckets[bucket] += 1;
        }
        let max = buckets.iter().copied().max().unwrap_or_default();
        assert!(max * 10 < 1_000 * 13, "{buckets:?}");
        // Deterministic: the same key, the same offset.
        assert_eq!(
            spread_offset(&key("a"), interval),
            spread_offset(&key("a"), interval)
        );
        assert_eq!(spread_offset(&key("a"), Duration::ZERO), Duration::ZERO);
    }

    /// The checker's cost (figures in the module docs): 10,000 TCP targets at a 1 s
    /// interval against a local responder, measured over 5 s. The responder runs on a thread of its own whose CPU
    /// time is subtracted; the kernel's loopback work for both ends of each handshake
    /// mostly runs in the connecting thread, so it stays in the checker's figure. Run with
    /// `cargo test --release -p lb-agent checker_cost -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement, not a test: takes 7 s and prints CPU use"]
    async fn checker_cost() {
        use std::sync::atomic::{AtomicU64, Ordering};

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        // The responder's own CPU time (user, system) in microseconds, after each accept.
        let responder_cpu = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let published = responder_cpu.clone();
        std::thread::spawn(move || {
            while let Ok((stream, _)) = listener.accept() {
                drop(stream);
                let (user, system) = cpu_time(libc::RUSAGE_THREAD);
                published
                    .0
                    .store(user.as_micros() as u64, Ordering::Relaxed);
                published
                    .1
                    .store(system.as_micros() as u64, Ordering::Relaxed);
            }
        });
        let responder = || {
            (
                Duration::from_micros(responder_cpu.0.load(Ordering::Relaxed)),
                Duration::from_micros(responder_cpu.1.load(Ordering::Relaxed)),
            )
        };
        let (sender, mut events) = unbounded_channel();
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        let checker = HealthChecker::new(sender);
        let targets = (0..10_000)
            .map(|i| (key(&format!("g{i}")), tcp(port, 1000), None))
            .collect();
        checker.set_targets(targets);
        // One interval to settle (every target probed once), then measure.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (process_before, responder_before) = (cpu_time(libc::RUSAGE_SELF), responder());
        let wall = std::time::Instant::now();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (process_after, responder_after) = (cpu_time(libc::RUSAGE_SELF), responder());
        let wall = wall.elapsed().as_secs_f64();
        let user = (process_after.0 - process_before.0)
            .saturating_sub(responder_after.0 - responder_before.0);
        let system = (process_after.1 - process_before.1)
            .saturating_sub(responder_after.1 - responder_before.1);
        let pct = |cpu: Duration| cpu.as_secs_f64() / wall * 100.0;
        let healthy = checker
            .snapshot()
            .iter()
            .filter(|(_, v)| v.state == HealthState::Healthy)
            .count();
        println!(
            "10000 TCP targets at 1s, checker alone: {:.1}% of one core ({:.1}% user, \
             {:.1}% system); responder {:.1}%; {healthy} healthy",
            pct(user + system),
            pct(user),
            pct(system),
            pct((responder_after.0 + responder_after.1)
                .saturating_sub(responder_before.0 + responder_before.1)),
        );
        assert_eq!(healthy, 10_000);
    }

    /// User and system CPU time of this process or thread.
    fn cpu_time(who: libc::c_int) -> (Duration, Duration) {
        // SAFETY: getrusage writes a plain struct we own; `who` is RUSAGE_SELF or
        // RUSAGE_THREAD, both valid on Linux.
        let usage = unsafe {
            let mut usage = std::mem::zeroed::<libc::rusage>();
            libc::getrusage(who, &mut usage);
            usage
        };
        let time = |tv: libc::timeval| {
            Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64)
        };
        (time(usage.ru_utime), time(usage.ru_stime))
    }
}
