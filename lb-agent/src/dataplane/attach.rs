//! Attaching `lb_xdp` to an interface, directly or through a pinned link that keeps it
//! running after the agent exits (and that a restarted agent swaps its program into
//! atomically), detaching it, and the running program's kernel identity; and for the
//! agent's watchdog, whether the link still runs on the interface (it is severed when the
//! interface is deleted) and attaching afresh when the interface is back.

use std::{
    io,
    os::fd::{AsFd as _, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
};

use aya::programs::{links::FdLink, XdpMode};
use lb_common::programs;
use tracing::{info, warn};

use super::{bpf_obj, pins, xdp_program, Dataplane, DataplaneError, PinLayout};

/// How the program is attached to the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Driver (native) XDP: the program runs in the NIC driver's receive path.
    Native,
    /// Generic (skb) XDP: runs after the kernel built an skb. Slow; for testing only.
    Generic,
}

impl AttachMode {
    pub(crate) fn xdp_mode(self) -> XdpMode {
        match self {
            Self::Native => XdpMode::Driver,
            Self::Generic => XdpMode::Skb,
        }
    }
}

/// The loaded `lb_xdp` program as the kernel knows it (what `bpftool prog show` prints).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ProgramInfo {
    /// Kernel program id: new at every load, so it tells two runs apart.
    pub id: u32,
    /// The kernel's tag, 16 hex digits: a hash of the instructions, so it stays the same
    /// when the same object is loaded again and changes with a different build.
    pub tag: String,
    /// The program's name (at most 15 bytes, as the kernel keeps it).
    pub name: String,
}

impl std::fmt::Display for ProgramInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} id {} tag {}", self.name, self.id, self.tag)
    }
}

/// Where the program is attached: to detach it, to see it severed, to attach it again.
pub(super) struct Attachment {
    iface: String,
    mode: AttachMode,
    /// Where the link is pinned; `None` for an ephemeral attachment.
    pin: Option<PathBuf>,
    /// The link; `None` after attaching again failed (tried again at the next check).
    link: Option<HeldLink>,
}

/// A link this process holds.
struct HeldLink {
    id: aya::programs::xdp::XdpLinkId,
    /// The interface's index when attached.
    ifindex: u32,
    /// The link's kernel id and a descriptor of it of our own (aya keeps its own
    /// private): to see the link severed, and to pin it again.
    link_id: u32,
    handle: OwnedFd,
}

/// Whether the program still runs on its interface, as the kernel says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// The XDP link is on the interface of that name, as attached.
    Attached,
    /// It is not (`reason` says how); `back` is the index of an interface of that name
    /// when there is one again, to attach to afresh.
    Lost { reason: String, back: Option<u32> },
}

/// The attachment as `ctl status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachedLink {
    pub iface: String,
    pub ifindex: u32,
    pub link_id: u32,
    /// Where the link is pinned (`None`: ephemeral).
    pub pin: Option<PathBuf>,
}

impl Dataplane {
    /// Attaches to `iface` through a link pinned under `layout`, so that the program keeps
    /// running when this agent exits or is killed. If a previous agent's link is pinned
    /// there, this program replaces the running one in it atomically (`bpf_link_update`):
    /// no packet goes unprocessed. Returns whether an existing link was adopted.
    pub fn attach_pinned(
        &mut self,
        iface: &str,
        mode: AttachMode,
        layout: &PinLayout,
    ) -> Result<bool, DataplaneError> {
        let link_path = layout.link();
        if link_path.exists() {
            let pinned = pins::open_pinned_link(&link_path)?;
            let pinned = FdLink::from(pinned);
            // Which program this replaces, for the log line; the link itself stays.
            let info = pinned.info().ok();
            let replaced = info.as_ref().map(|i| i.program_id());
            let link_id = info.as_ref().map(|i| i.id());
            let id = match self.hold_link(
                pinned,
                &link_path,
                "replacing the program in the pinned link",
            ) {
                Ok(id) => Some(id),
                // The link outlived its interface (deleted, or its namespace went away):
                // nothing is attached any more, so attach afresh below.
                Err(e) if has_errno(&e, nix::errno::Errno::ENOLINK) => {
                    warn!(iface, link = %link_path.display(), "the pinned XDP link was severed from its interface; attaching afresh");
                    std::fs::remove_file(&link_path).map_err(|source| DataplaneError::Fs {
                        what: "removing the severed link's pin",
                        path: link_path.clone(),
                        source,
                    })?;
                    None
                }
                Err(e) => return Err(e),
            };
            if let Some(id) = id {
                info!(iface, link = %link_path.display(), replaced_program_id = replaced, program = %self.describe_program(), "adopted the running data plane: program replaced atomically");
                let link_id = link_id.ok_or_else(|| DataplaneError::Fs {
                    what: "reading the link info of",
                    path: link_path.clone(),
                    source: io::Error::other("the kernel gave no link info"),
                })?;
                let handle = bpf_obj::link_by_id(link_id).map_err(|source| DataplaneError::Fs {
                    what: "opening the adopted link of",
                    path: link_path.clone(),
                    source,
                })?;
                self.attachment = Some(Attachment {
                    iface: iface.to_owned(),
                    mode,
                    pin: Some(link_path),
                    link: Some(HeldLink {
                        id,
                        ifindex: ifindex_of(iface)?,
                        link_id,
                        handle,
                    }),
                });
                return Ok(true);
            }
        }
        let ifindex = ifindex_of(iface)?;
        self.attach_new(iface, ifindex, mode, Some(&link_path), true)?;
        info!(iface, ifindex, ?mode, link = %link_path.display(), program = %self.describe_program(), "XDP program attached and pinned: it keeps running after the agent exits");
        Ok(false)
    }

    /// Attaches the program to interface `ifindex` (named `iface`) through a new link,
    /// pinned at `pin` when given, and holds it. A pin that fails is an error when
    /// `pin_required` (nothing stays attached then); otherwise it is returned, and the
    /// link stays attached, held by this process only.
    fn attach_new(
        &mut self,
        iface: &str,
        ifindex: u32,
        mode: AttachMode,
        pin: Option<&Path>,
        pin_required: bool,
    ) -> Result<Option<DataplaneError>, DataplaneError> {
        if mode == AttachMode::Generic {
            warn!(
                iface,
                "attaching in GENERIC (skb) XDP mode: slow, for testing only"
            );
        }
        let where_ = pin.map_or_else(|| PathBuf::from(iface), Path::to_owned);
        let prog = xdp_program(&mut self.ebpf)?;
        let id = prog
            .attach_to_if_index(ifindex, mode.xdp_mode())
            .map_err(|source| DataplaneError::Program {
                action: "attaching the XDP program",
                source,
            })?;
        // Taken out to learn its id and pin it, then held again (a no-op swap).
        let link = prog
            .take_link(id)
            .map_err(|source| DataplaneError::Program {
                action: "taking the XDP link",
                source,
            })?;
        let fd_link = FdLink::try_from(link).map_err(|e| DataplaneError::Fs {
            what: "the XDP attachment is a netlink attachment (kernel without bpf_link?); cannot hold",
            path: where_.clone(),
            source: io::Error::other(e.to_string()),
        })?;
        let link_id = fd_link
            .info()
            .map_err(|e| DataplaneError::Fs {
                what: "reading the new XDP link's info for",
                path: where_.clone(),
                source: io::Error::other(e.to_string()),
            })?
            .id();
        let handle = bpf_obj::link_by_id(link_id).map_err(|source| DataplaneError::Fs {
            what: "opening the new XDP link for",
            path: where_.clone(),
            source,
        })?;
        let pin_error = pin.and_then(|path| {
            bpf_obj::pin(handle.as_fd(), path)
                .err()
                .map(|source| DataplaneError::Fs {
                    what: "pinning the XDP link at",
                    path: path.to_owned(),
                    source,
                })
        });
        let pin_error = match pin_error {
            // Dropping the link on return detaches it again.
            Some(e) if pin_required => return Err(e),
            e => e,
        };
        // Held by the program too, so that a later `attach_pinned` in this process (an
        // upgrade) finds it; the pin alone keeps it attached after exit.
        let id = self.hold_link(fd_link, &where_, "holding the XDP link")?;
        self.attachment = Some(Attachment {
            iface: iface.to_owned(),
            mode,
            pin: pin.map(Path::to_owned),
            link: Some(HeldLink {
                id,
                ifindex,
                link_id,
                handle,
            }),
        });
        Ok(pin_error)
    }

    /// Makes `link` this program's link: `bpf_link_update` swaps this program in
    /// atomically (a no-op swap when it is already the link's program).
    fn hold_link(
        &mut self,
        link: FdLink,
        path: &Path,
        action: &'static str,
    ) -> Result<aya::programs::xdp::XdpLinkId, DataplaneError> {
        let link = aya::programs::xdp::XdpLink::try_from(link).map_err(|e| DataplaneError::Fs {
            what: "the link is not an XDP link",
            path: path.to_owned(),
            source: io::Error::other(e.to_string()),
        })?;
        xdp_program(&mut self.ebpf)?
            .attach_to_link(link)
            .map_err(|source| DataplaneError::Program { action, source })
    }

    /// Attaches the program to `iface`. Refuses if persisted state for that interface
    /// exists, so two agents never fight over one interface.
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<(), DataplaneError> {
        let layout = PinLayout::for_interface(iface);
        if layout.dir().exists() {
            return Err(DataplaneError::AlreadyPinned {
                iface: iface.to_owned(),
                path: layout.dir().to_owned(),
            });
        }
        let ifindex = ifindex_of(iface)?;
        self.attach_new(iface, ifindex, mode, None, false)?;
        info!(iface, ifindex, ?mode, "XDP program attached");
        Ok(())
    }

    /// Whether the program still runs on its interface: the link's own view (its
    /// interface index, 0 once the interface is gone) against the interface that has
    /// the name now.
    pub fn link_state(&self) -> Result<LinkState, DataplaneError> {
        let att = self
            .attachment
            .as_ref()
            .ok_or(DataplaneError::NotAttached)?;
        let now = nix::net::if_::if_nametoindex(att.iface.as_str()).ok();
        let Some(held) = &att.link else {
            return Ok(LinkState::Lost {
                reason: format!("not attached to {}: attaching again failed", att.iface),
                back: now,
            });
        };
        let linked = match bpf_obj::describe(held.handle.as_fd()) {
            Ok(bpf_obj::Object::Link { ifindex, .. }) => ifindex,
            // Cannot be for a link's descriptor; the name's index decides then.
            Ok(_) => None,
            Err(source) => {
                return Err(DataplaneError::Fs {
                    what: "reading the fdinfo of the XDP link on",
                    path: PathBuf::from(&att.iface),
                    source,
                })
            }
        };
        let iface = &att.iface;
        Ok(match (linked, now) {
            (Some(0), None) => LinkState::Lost {
                reason: format!("interface {iface} is gone: its XDP link was severed"),
                back: None,
            },
            (Some(0), back) => LinkState::Lost {
                reason: format!("the XDP link was severed from {iface}"),
                back,
            },
            (_, None) => LinkState::Lost {
                reason: format!("there is no interface named {iface} any more"),
                back: None,
            },
            (Some(on), Some(now)) if on != now => LinkState::Lost {
                reason: format!(
                    "the XDP link is on interface index {on}, {iface} is now index {now}"
                ),
                back: Some(now),
            },
            // A kernel whose fdinfo shows no ifindex: the name's index must not change.
            (None, Some(now)) if now != held.ifindex => LinkState::Lost {
                reason: format!("{iface} is now interface index {now}, not {}", held.ifindex),
                back: Some(now),
            },
            _ => LinkState::Attached,
        })
    }

    /// Attaches afresh to the interface that has the attachment's name now (after
    /// [`LinkState::Lost`] with `back`): the old link is let go (its pin too), a new one
    /// made and pinned at the same path. The maps are untouched, so the flow table
    /// carries on. A pin that fails is returned, not an error: the program runs, held
    /// by this process, until the pin watchdog can pin it.
    pub fn reattach(&mut self) -> Result<Option<DataplaneError>, DataplaneError> {
        let att = self
            .attachment
            .as_mut()
            .ok_or(DataplaneError::NotAttached)?;
        let (iface, mode, pin) = (att.iface.clone(), att.mode, att.pin.clone());
        if let Some(old) = att.link.take() {
            drop(old.handle);
            // Closing the program's descriptor of the severed link is all that is left
            // of it.
            if let Err(e) = xdp_program(&mut self.ebpf)?.detach(old.id) {
                warn!(iface, "letting go of the old XDP link: {e}");
            }
        }
        if let Some(path) = &pin {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => warn!(iface, link = %path.display(), "removing the old link's pin: {e}"),
            }
        }
        let ifindex = ifindex_of(&iface)?;
        self.attach_new(&iface, ifindex, mode, pin.as_deref(), false)
    }

    /// The held link, its kernel id and where it is pinned, for the pin watchdog.
    pub(super) fn held_link_pin(&self) -> Option<(PathBuf, u32, BorrowedFd<'_>)> {
        let a = self.attachment.as_ref()?;
        let held = a.link.as_ref()?;
        Some((a.pin.clone()?, held.link_id, held.handle.as_fd()))
    }

    /// The attachment, for status.
    pub fn attached_link(&self) -> Option<AttachedLink> {
        let a = self.attachment.as_ref()?;
        let held = a.link.as_ref()?;
        Some(AttachedLink {
            iface: a.iface.clone(),
            ifindex: held.ifindex,
            link_id: held.link_id,
            pin: a.pin.clone(),
        })
    }

    /// The loaded `lb_xdp` program's kernel id, tag and name (once attached, the program
    /// running on the interface).
    pub fn program_info(&self) -> Result<ProgramInfo, DataplaneError> {
        let info = self
            .ebpf
            .program(programs::LB_XDP)
            .ok_or(DataplaneError::MissingProgram(programs::LB_XDP))?
            .info()
            .map_err(|source| DataplaneError::Program {
                action: "reading the XDP program's kernel info",
                source,
            })?;
        Ok(ProgramInfo {
            id: info.id(),
            // The kernel's 8 tag bytes, as `bpftool` and `ip link` print them.
            tag: format!("{:016x}", info.tag()),
            name: info.name_as_str().unwrap_or_default().to_owned(),
        })
    }

    /// [`Dataplane::program_info`] for a log line, or why it is unknown.
    fn describe_program(&self) -> String {
        self.program_info()
            .map_or_else(|e| format!("unknown ({e})"), |p| p.to_string())
    }

    /// Detaches the program (the attachment also ends when the `Dataplane` is dropped).
    pub fn detach(&mut self) -> Result<(), DataplaneError> {
        let att = self.attachment.take().ok_or(DataplaneError::NotAttached)?;
        let held = att.link.ok_or(DataplaneError::NotAttached)?;
        xdp_program(&mut self.ebpf)?
            .detach(held.id)
            .map_err(|source| DataplaneError::Program {
                action: "detaching the XDP program",
                source,
            })?;
        info!(iface = att.iface, "XDP program detached");
        Ok(())
    }
}

/// The index of interface `iface`.
fn ifindex_of(iface: &str) -> Result<u32, DataplaneError> {
    nix::net::if_::if_nametoindex(iface)
        .map_err(|_| DataplaneError::NoSuchInterface(iface.to_owned()))
}

/// Whether `e` was caused, somewhere down its chain, by the system error `errno`.
fn has_errno(e: &(dyn std::error::Error + 'static), errno: nix::errno::Errno) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if io.raw_os_error() == Some(errno as i32) {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_is_found_down_the_chain() {
        let e = DataplaneError::Fs {
            what: "x",
            path: "/x".into(),
            source: io::Error::from_raw_os_error(nix::errno::Errno::ENOLINK as i32),
        };
        assert!(has_errno(&e, nix::errno::Errno::ENOLINK));
        assert!(!has_errno(&e, nix::errno::Errno::ENOENT));
    }
}
