//! Attaching `lb_xdp` to an interface, directly or through a pinned link that keeps it
//! running after the agent exits (and that a restarted agent swaps its program into
//! atomically), detaching it, and the running program's kernel identity.

use std::{io, path::Path};

use aya::programs::{links::FdLink, XdpMode};
use lb_common::programs;
use tracing::{info, warn};

use super::{pins, xdp_program, Dataplane, DataplaneError, PinLayout};

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

/// Where the program is attached, for `detach`.
pub(super) struct Attachment {
    iface: String,
    link: aya::programs::xdp::XdpLinkId,
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
            let replaced = pinned.info().map(|i| i.program_id()).ok();
            let id = match self.hold_pinned_link(
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
                self.attachment = Some(Attachment {
                    iface: iface.to_owned(),
                    link: id,
                });
                return Ok(true);
            }
        }
        let ifindex = nix::net::if_::if_nametoindex(iface)
            .map_err(|_| DataplaneError::NoSuchInterface(iface.to_owned()))?;
        if mode == AttachMode::Generic {
            warn!(
                iface,
                "attaching in GENERIC (skb) XDP mode: slow, for testing only"
            );
        }
        let prog = xdp_program(&mut self.ebpf)?;
        let id = prog
            .attach_to_if_index(ifindex, mode.xdp_mode())
            .map_err(|source| DataplaneError::Program {
                action: "attaching the XDP program",
                source,
            })?;
        let link = prog
            .take_link(id)
            .map_err(|source| DataplaneError::Program {
                action: "taking the XDP link",
                source,
            })?;
        let fd_link = FdLink::try_from(link).map_err(|e| DataplaneError::Fs {
            what:
                "the XDP attachment is a netlink attachment (kernel without bpf_link?); cannot pin",
            path: link_path.clone(),
            source: io::Error::other(e.to_string()),
        })?;
        let pinned = fd_link
            .pin(&link_path)
            .map_err(|source| DataplaneError::Pin {
                path: link_path.clone(),
                source,
            })?;
        // Keep a handle to the link so a later `attach_pinned` in this process (an
        // upgrade) can find it; the pin alone keeps it attached after exit.
        let id =
            self.hold_pinned_link(FdLink::from(pinned), &link_path, "holding the pinned link")?;
        info!(iface, ifindex, ?mode, link = %link_path.display(), program = %self.describe_program(), "XDP program attached and pinned: it keeps running after the agent exits");
        self.attachment = Some(Attachment {
            iface: iface.to_owned(),
            link: id,
        });
        Ok(false)
    }

    /// Makes `pinned` this program's link: `bpf_link_update` swaps this program in
    /// atomically (a no-op swap when it is already the link's program).
    fn hold_pinned_link(
        &mut self,
        pinned: FdLink,
        path: &Path,
        action: &'static str,
    ) -> Result<aya::programs::xdp::XdpLinkId, DataplaneError> {
        let link =
            aya::programs::xdp::XdpLink::try_from(pinned).map_err(|e| DataplaneError::Fs {
                what: "the pinned link is not an XDP link",
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
        let ifindex = nix::net::if_::if_nametoindex(iface)
            .map_err(|_| DataplaneError::NoSuchInterface(iface.to_owned()))?;
        if mode == AttachMode::Generic {
            warn!(
                iface,
                "attaching in GENERIC (skb) XDP mode: slow, for testing only"
            );
        }
        let link = xdp_program(&mut self.ebpf)?
            .attach_to_if_index(ifindex, mode.xdp_mode())
            .map_err(|source| DataplaneError::Program {
                action: "attaching the XDP program",
                source,
            })?;
        info!(iface, ifindex, ?mode, "XDP program attached");
        self.attachment = Some(Attachment {
            iface: iface.to_owned(),
            link,
        });
        Ok(())
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
        xdp_program(&mut self.ebpf)?
            .detach(att.link)
            .map_err(|source| DataplaneError::Program {
                action: "detaching the XDP program",
                source,
            })?;
        info!(iface = att.iface, "XDP program detached");
        Ok(())
    }
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
