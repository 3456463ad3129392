//! The watchdog over the data plane's kernel objects, run every second from the event
//! loop's lifecycle tick:
//!
//! - the attachment: deleting the ingress interface severs the XDP link (the program no
//!   longer runs anywhere) and nothing else would tell. The agent logs it, withdraws every
//!   VIP (a host that does not forward must not be announced), and once an interface of
//!   that name exists again attaches afresh: a new link, pinned at the same path, with
//!   the same maps, so the flow table carries on and established flows keep their
//!   backends. It logs how long the program was gone and announces again;
//! - the pins ([`crate::dataplane::Dataplane::restore_pins`]): a missing pin is pinned
//!   again from the agent's own descriptors, one holding another object is replaced,
//!   bpffs is mounted again if it was unmounted. When that fails the agent says so at
//!   every check and in `ctl status`: the data plane runs, but a restart would lose it.

use std::time::{Instant, SystemTime};

use tracing::{error, info, warn};

use super::{handler::unix_ms, running::AgentState};
use crate::{
    admin::protocol::AttachmentInfo,
    dataplane::{self, DataplaneError, Found, LinkState},
};

/// What the watchdog knows between checks.
#[derive(Default)]
pub struct Watch {
    /// Since when and why the program does not run on the interface.
    lost: Option<Lost>,
    /// Times the program was attached afresh since the agent started.
    reattached: u64,
    /// The last failure to check or attach again, logged once until it changes.
    last_error: Option<String>,
    /// Why the pins cannot be put right, until they can.
    pin_error: Option<String>,
}

struct Lost {
    since: Instant,
    at: SystemTime,
    reason: String,
}

impl AgentState {
    /// One check of the attachment, then of the pins.
    pub fn watch_data_plane(&mut self) {
        self.watch_attachment();
        self.watch_pins();
    }

    fn watch_attachment(&mut self) {
        let state = match self.dp.link_state() {
            Ok(s) => s,
            // Not attached yet (or detached on purpose): nothing to watch.
            Err(DataplaneError::NotAttached) => return,
            Err(e) => {
                self.watch_error(format!("checking the XDP attachment: {e}"));
                return;
            }
        };
        let LinkState::Lost { reason, back } = state else {
            return;
        };
        if self.watch.lost.is_none() {
            warn!(
                iface = self.iface,
                reason, "the XDP program no longer runs on the interface: every VIP is withdrawn until it is attached again"
            );
            self.watch.lost = Some(Lost {
                since: Instant::now(),
                at: SystemTime::now(),
                reason,
            });
            self.set_attached(false);
        }
        if back.is_some() {
            self.reattach();
        }
    }

    /// Attaches afresh to the interface that has the name again.
    fn reattach(&mut self) {
        let pin_error = match self.dp.reattach() {
            Ok(e) => e,
            Err(e) => {
                self.watch_error(format!(
                    "attaching to {} again failed (tried every second): {e}",
                    self.iface
                ));
                return;
            }
        };
        let gone = self.watch.lost.take().map(|l| l.since.elapsed());
        self.watch.reattached += 1;
        self.watch.last_error = None;
        // A new interface: forwarding on it (the FIB lookups need it) and redirects to it.
        if let Err(e) = dataplane::enable_forwarding(&self.iface) {
            warn!(iface = self.iface, "enabling forwarding again: {e}");
        }
        let link = self.dp.attached_link();
        if let Some(l) = &link {
            if let Err(e) = self.dp.add_tx_port(l.ifindex) {
                warn!(
                    iface = self.iface,
                    "allowing redirects to the new interface: {e}"
                );
            }
        }
        info!(
            iface = self.iface,
            ifindex = link.as_ref().map(|l| l.ifindex),
            link_id = link.as_ref().map(|l| l.link_id),
            gone_ms = gone.map(|g| g.as_millis()),
            "XDP program re-attached to the interface: the maps and the flow table carry on, VIPs are announced again as their policies say"
        );
        if let Some(e) = pin_error {
            warn!(
                iface = self.iface,
                "the new XDP link is not pinned yet (the pin watchdog retries): {e}"
            );
        }
        self.set_attached(true);
    }

    /// Puts the pins right (see the module); also called before the agent exits, so
    /// that what it leaves running is pinned.
    pub fn watch_pins(&mut self) {
        match self.dp.restore_pins() {
            Ok(check) => {
                if check.remounted {
                    warn!(
                        path = dataplane::BPFFS,
                        "bpffs was not mounted: mounted it again (empty); the pins follow"
                    );
                }
                for r in check.repaired {
                    let pin = r.path.display().to_string();
                    match r.found {
                        Found::Missing => warn!(
                            pin,
                            "a pin of the data plane was missing: pinned again from the agent's own descriptor"
                        ),
                        Found::Other(found) => error!(
                            pin,
                            found,
                            "a pin of the data plane held another object: replaced with the agent's own (this directory is lb's)"
                        ),
                    }
                }
                if self.watch.pin_error.take().is_some() {
                    info!("the data plane's pins are right again: a restart adopts it");
                }
            }
            Err(e) => {
                // Every check, as long as it lasts: this host is one restart away from
                // losing its data plane.
                error!(
                    "the data plane's pins cannot be put right: it runs, but a restart would lose it (every flow): {e}"
                );
                self.watch.pin_error = Some(e.to_string());
            }
        }
    }

    /// Logs `message` unless it was the last one.
    fn watch_error(&mut self, message: String) {
        if self.watch.last_error.as_ref() != Some(&message) {
            error!(iface = self.iface, "{message}");
            self.watch.last_error = Some(message);
        }
    }
}

/// `status`'s `attachment`.
pub(super) fn info(st: &AgentState) -> AttachmentInfo {
    let w = &st.watch;
    let link = st.dp.attached_link().filter(|_| w.lost.is_none());
    AttachmentInfo {
        state: if link.is_some() {
            "attached"
        } else {
            "detached"
        }
        .to_owned(),
        ifindex: link.as_ref().map_or(0, |l| l.ifindex),
        link_id: link.as_ref().map_or(0, |l| l.link_id),
        reattached: w.reattached,
        reason: w.lost.as_ref().map(|l| l.reason.clone()),
        since_ms: w.lost.as_ref().map(|l| unix_ms(Some(l.at))),
        pin_dir: st.dp.pin_dir().map(|d| d.display().to_string()),
        pin_error: w.pin_error.clone(),
    }
}
