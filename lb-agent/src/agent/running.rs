//! The running agent's state and every way it changes: a configuration file (at start,
//! SIGHUP, `ctl apply`), runtime edits (`ctl vip add`, `ctl backend set-weight`, …),
//! drains, health results and the passing of time (deregistration delays, slow start).
//!
//! All of them end in [`AgentState::reconcile`], which asks the lifecycle what should be
//! served now ([`Serving`]) and, when that differs from what is installed, hands it to
//! `Services` (which swaps only the rings that change). A change that fails leaves the running
//! configuration, the lifecycle and the data plane as they were.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    time::Instant,
};

use anyhow::Context as _;
use tracing::{error, info, warn};

use super::state_file::{SavedAgent, SavedSource, StateFile};
use crate::{
    config::{self, Config, Draft, EditError},
    dataplane::Dataplane,
    health::HealthChecker,
    install::{ApplyReport, Services},
    lifecycle::{self, Lifecycle, Serving, TargetState},
    target::TargetKey,
};

/// Where the running configuration came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub path: PathBuf,
    /// The file's text when it was read: the running configuration is "edited" when it
    /// no longer says the same.
    pub text: String,
}

/// Everything the running agent owns.
pub struct AgentState {
    pub dp: Dataplane,
    pub services: Services,
    pub lifecycle: Lifecycle,
    /// The running configuration as written (file plus runtime edits) …
    pub draft: Option<Draft>,
    /// … and validated.
    pub config: Option<Config>,
    /// The file the running configuration was last read from (`--config`, SIGHUP, `ctl
    /// apply`).
    pub source: Option<Source>,
    /// Runtime edits changed the running configuration since it was read from `source`.
    pub edited: bool,
    /// `None` for an ephemeral agent (nothing survives it).
    pub state_file: Option<StateFile>,
    pub iface: String,
    pub xdp_mode: String,
    pub started: Instant,
    /// What is installed: the running configuration and the serving decisions last
    /// applied with it.
    installed: Option<(Config, Serving)>,
    /// Groups failing open at the last reconcile.
    pub failing_open: BTreeSet<String>,
    /// Target states at the last reconcile, to log transitions.
    states: BTreeMap<TargetKey, TargetState>,
    /// The health checker (none in tests without a runtime).
    pub health: Option<HealthChecker>,
    /// Metrics aggregation and outputs (from the first configuration on).
    pub metrics: Option<super::metrics_wiring::MetricsState>,
    /// What this host announces, and the task that writes it to the kernel.
    pub announce: super::announcing::Announcements,
    /// `ctl down` asked for: detach after this grace period.
    pub going_down: Option<std::time::Duration>,
    /// The watchdog over the attachment and the pins.
    pub(super) watch: super::attachment::Watch,
    /// Why the last save of the state file failed, while it is not saved: the lifecycle
    /// tick retries until it is.
    pub unsaved: Option<String>,
}

/// Why a change was refused; the running state is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error(transparent)]
    Edit(#[from] EditError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Lifecycle(#[from] lifecycle::LifecycleError),
    #[error("no configuration is running")]
    NoConfig,
    #[error("{0:#}")]
    Apply(anyhow::Error),
}

impl AgentState {
    pub fn new(
        dp: Dataplane,
        services: Services,
        lifecycle: Lifecycle,
        iface: &str,
        xdp_mode: &str,
        state_file: Option<StateFile>,
    ) -> Self {
        Self {
            dp,
            services,
            lifecycle,
            draft: None,
            config: None,
            source: None,
            edited: false,
            state_file,
            iface: iface.to_owned(),
            xdp_mode: xdp_mode.to_owned(),
            started: Instant::now(),
            installed: None,
            failing_open: BTreeSet::new(),
            states: BTreeMap::new(),
            health: None,
            metrics: None,
            announce: Default::default(),
            going_down: None,
            watch: Default::default(),
            unsaved: None,
        }
    }

    /// Makes `draft` (validated as `cfg`) the running configuration: registration
    /// follows it, then the data plane. Nothing changes if applying fails.
    pub fn install(
        &mut self,
        draft: Draft,
        cfg: Config,
        source: Option<Source>,
        edited: bool,
    ) -> Result<ApplyReport, ChangeError> {
        for w in &cfg.warnings {
            warn!("configuration: {w}");
        }
        warm_neighbours(&cfg);
        let now = lifecycle::now_ms();
        let mut next = self.lifecycle.clone();
        next.sync(&cfg, now);
        let report = self
            .apply_plan(&next, &cfg, now)
            .map_err(ChangeError::Apply)?;
        info!(
            changed = report.changed.len(),
            unchanged = report.unchanged.len(),
            removed = report.removed.len(),
            backends_added = report.backends_added,
            backends_removed = report.backends_removed,
            edited,
            "configuration applied"
        );
        self.lifecycle = next;
        self.draft = Some(draft);
        self.config = Some(cfg);
        if source.is_some() {
            self.source = source;
        }
        self.edited = edited;
        self.sync_health();
        self.sync_metrics();
        self.log_transitions(now);
        self.sync_announcements();
        self.save();
        Ok(report)
    }

    /// Reads the configuration file at `path` and makes it the running configuration;
    /// runtime edits not in the file are discarded (and said so).
    pub fn apply_file(&mut self, path: &std::path::Path) -> Result<ApplyReport, ChangeError> {
        let text = std::fs::read_to_string(path).map_err(|source| config::ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let draft = Draft::parse(&text).map_err(|e| with_path(e, path))?;
        let cfg = draft.validate().map_err(|e| with_path(e, path))?;
        if self.edited {
            warn!(
                path = %path.display(),
                "the file replaces the running configuration: runtime edits not in it are discarded"
            );
        }
        self.install(
            draft,
            cfg,
            Some(Source {
                path: path.to_owned(),
                text,
            }),
            false,
        )
    }

    /// What applying the file at `path` would change, changing nothing.
    pub fn dry_run_file(
        &self,
        path: &std::path::Path,
    ) -> Result<(Config, ApplyReport), ChangeError> {
        let cfg = config::load(path)?;
        let now = lifecycle::now_ms();
        let mut next = self.lifecycle.clone();
        next.sync(&cfg, now);
        let plan = next.plan(&cfg, now);
        let report = self
            .services
            .dry_run(&cfg, &plan.serving)
            .map_err(|e| ChangeError::Apply(e.into()))?;
        Ok((cfg, report))
    }

    /// SIGHUP: re-read the configuration file; an invalid one changes nothing.
    pub fn reload(&mut self) {
        let Some(path) = self.source.as_ref().map(|s| s.path.clone()) else {
            warn!("SIGHUP ignored: no configuration file (start with --config or use `ctl apply`)");
            return;
        };
        info!(path = %path.display(), "SIGHUP: reloading the configuration");
        match self.apply_file(&path) {
            Ok(_) => {}
            Err(ChangeError::Config(e)) => {
                error!("configuration rejected, the running one stays in place: {e}")
            }
            Err(e) => error!("applying the reloaded configuration failed: {e}"),
        }
    }

    /// A runtime edit of the running configuration (validated like a file).
    pub fn edit(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Draft) -> Result<Config, EditError>,
    ) -> Result<ApplyReport, ChangeError> {
        let mut draft = self.draft.clone().unwrap_or_default();
        let cfg = f(&mut draft)?;
        info!(edit = what, "runtime edit");
        self.install(draft, cfg, None, true)
    }

    /// Operator drain or undrain of one target.
    pub fn set_drained(&mut self, key: &TargetKey, drained: bool) -> Result<bool, ChangeError> {
        let cfg = self.config.clone().ok_or(ChangeError::NoConfig)?;
        let now = lifecycle::now_ms();
        let mut next = self.lifecycle.clone();
        let changed = if drained {
            next.drain(key, now)?
        } else {
            next.undrain(key)?
        };
        if changed {
            self.apply_plan(&next, &cfg, now)
                .map_err(ChangeError::Apply)?;
            self.lifecycle = next;
            info!(
                target = %key,
                "{}",
                if drained {
                    "drained by the operator: no new flows; established flows continue for the deregistration delay"
                } else {
                    "undrained by the operator: takes new flows again as its health allows"
                }
            );
            self.log_transitions(now);
            self.sync_announcements();
            self.save();
        }
        Ok(changed)
    }

    /// Re-plans for the current time (deregistration delays ending, slow-start steps,
    /// unhealthy draining intervals) and applies what changed. Called every second and
    /// after health changes.
    pub fn reconcile(&mut self) -> anyhow::Result<Option<ApplyReport>> {
        let Some(cfg) = self.config.clone() else {
            return Ok(None);
        };
        let now = lifecycle::now_ms();
        let mut next = self.lifecycle.clone();
        let gone = next.expire(now);
        let plan = next.plan(&cfg, now);
        let unchanged = self
            .installed
            .as_ref()
            .is_some_and(|(c, s)| *c == cfg && *s == plan.serving);
        let report = if unchanged {
            None
        } else {
            Some(self.apply_plan(&next, &cfg, now)?)
        };
        for key in &gone {
            info!(target = %key, "deregistration complete: the target is removed");
        }
        let saved = !gone.is_empty() || report.is_some() || next.state() != self.lifecycle.state();
        self.lifecycle = next;
        self.log_transitions(now);
        self.sync_announcements();
        // A save that failed (a full disk) is retried here, every second, until it works.
        if saved || self.unsaved.is_some() {
            self.save();
        }
        Ok(report)
    }

    /// Installs what `lifecycle` says `cfg` should serve at `now`; on success records it
    /// as installed.
    fn apply_plan(
        &mut self,
        lifecycle: &Lifecycle,
        cfg: &Config,
        now: u64,
    ) -> anyhow::Result<ApplyReport> {
        let plan = lifecycle.plan(cfg, now);
        let report = self
            .services
            .apply(cfg, &plan.serving, &mut self.dp)
            .context("applying the configuration")?;
        for g in plan.failing_open.difference(&self.failing_open) {
            warn!(
                group = g,
                "no healthy target: failing open, every target takes new flows"
            );
        }
        for g in self.failing_open.difference(&plan.failing_open) {
            info!(group = g, "healthy targets again: no longer failing open");
        }
        self.failing_open = plan.failing_open;
        self.installed = Some((cfg.clone(), plan.serving));
        // Only a changed or removed ring changes it (a new seed changes every ring).
        if !report.changed.is_empty() || !report.removed.is_empty() {
            self.announce.fingerprint = self.services.fleet_fingerprint(cfg.agent.hash_seed);
        }
        Ok(report)
    }

    /// Logs every target whose state changed since the last call.
    fn log_transitions(&mut self, now: u64) {
        let mut states = BTreeMap::new();
        for (key, _) in self.lifecycle.targets() {
            if let Some(v) = self.lifecycle.view(key, now, &self.failing_open) {
                match self.states.get(key) {
                    Some(old) if *old == v.state => {}
                    old => info!(
                        target = %key,
                        from = old.map_or("-", |s| s.as_str()),
                        to = v.state.as_str(),
                        reason = v.reason.as_deref().unwrap_or("-"),
                        detail = v.detail,
                        "target state"
                    ),
                }
                states.insert(key.clone(), v.state);
            }
        }
        self.states = states;
    }

    /// The ring weight installed for `key` (in thousandths of a weight unit): what new
    /// flows see right now, which may trail the lifecycle's view by up to a second.
    pub fn installed_weight(&self, key: &TargetKey) -> Option<u32> {
        let (_, serving) = self.installed.as_ref()?;
        serving
            .target(&key.group, key.address)
            .map(|t| t.serving.ring_share())
    }

    /// Whether the installed data plane keeps `key`'s established flows (its backend
    /// slot in use): what packets see right now, which may trail the lifecycle's view by
    /// up to a second.
    pub fn installed_keeps_flows(&self, key: &TargetKey) -> Option<bool> {
        let (_, serving) = self.installed.as_ref()?;
        serving
            .target(&key.group, key.address)
            .map(|t| t.serving.keeps_flows)
    }

    /// What an operator reads of target `key` at `now`: the lifecycle's view as the
    /// installed data plane serves it ([`lifecycle::TargetView::as_installed`]).
    pub fn target_view(&self, key: &TargetKey, now: u64) -> Option<lifecycle::TargetView> {
        self.lifecycle
            .view(key, now, &self.failing_open)
            .map(|v| v.as_installed(self.installed_keeps_flows(key)))
    }

    /// What the next agent needs.
    pub fn saved(&self) -> SavedAgent {
        SavedAgent {
            services: self.services.state(),
            lifecycle: self.lifecycle.state(),
            running_config: self.draft.as_ref().map(Draft::to_toml),
            source: self.source.as_ref().map(|s| SavedSource {
                path: s.path.clone(),
                text: s.text.clone(),
            }),
            edited: self.edited,
            withdrawn: self.announce.host.withdrawn.clone(),
        }
    }

    /// Saves [`AgentState::saved`]. A failure is logged once and remembered in
    /// `unsaved` (the data plane is already right; only a restart before the retry
    /// succeeds would lose what is not saved), and replies to changes say so.
    pub fn save(&mut self) {
        let Some(file) = &self.state_file else {
            return;
        };
        match file.save(&self.saved()) {
            Ok(()) => {
                if let Some(why) = self.unsaved.take() {
                    info!(path = %file.path.display(), "the agent state is saved again (it was not: {why})");
                }
            }
            Err(e) => {
                let why = format!("{e:#}");
                if self.unsaved.as_deref() != Some(why.as_str()) {
                    error!(
                        path = %file.path.display(),
                        "the agent state is not persisted ({why}): the previous state file stays intact and a restarted agent would not know the latest changes; retrying every second"
                    );
                }
                self.unsaved = Some(why);
            }
        }
    }
}

/// `e` naming the file `path` it came from, when it does not already.
pub fn with_path(e: config::ConfigError, path: &std::path::Path) -> config::ConfigError {
    match e {
        config::ConfigError::Syntax {
            path: None,
            line,
            column,
            message,
        } => config::ConfigError::Syntax {
            path: Some(path.to_owned()),
            line,
            column,
            message,
        },
        config::ConfigError::Invalid {
            path: None,
            problems,
        } => config::ConfigError::Invalid {
            path: Some(path.to_owned()),
            problems,
        },
        other => other,
    }
}

/// Asks the kernel to resolve every target's neighbour entry now (an empty datagram to
/// the discard port), so the first packets of real flows find it; until then the data
/// plane passes them to the kernel (`fib_no_neighbour`).
fn warm_neighbours(cfg: &Config) {
    for target in cfg.target_groups.iter().flat_map(|g| &g.targets) {
        let bind = if target.address.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let sent = std::net::UdpSocket::bind(bind)
            .and_then(|s| s.send_to(&[], std::net::SocketAddr::new(target.address, 9)));
        if let Err(e) = sent {
            warn!(target = %target.address, "could not prompt neighbour resolution: {e}");
        }
    }
}
