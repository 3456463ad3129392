//! A warning for a silent black hole: a frame `lb_xdp` sends back out (`XDP_TX`) or
//! redirects into a veth reaches the other end only if the veth's peer runs an XDP
//! program. Otherwise the kernel drops it without a trace, after lb counted it as
//! forwarded, while health checks (sent by the kernel the normal way) stay green.
//!
//! At start the agent reads every link of its namespace through rtnetlink and, for each
//! veth it may send into (the ingress, and every interface redirects may use), warns
//! when the peer is in the same namespace and runs no XDP program. A peer in another
//! namespace cannot be seen from here: that is said once, at info level.

use std::collections::HashMap;

use futures_util::TryStreamExt as _;
use rtnetlink::packet_route::link::{
    InfoKind, LinkAttribute, LinkInfo, LinkMessage, LinkXdp, XdpAttached,
};
use tracing::{info, warn};

/// What the check needs of one link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub veth: bool,
    /// The veth's peer, by index (in this namespace unless `peer_elsewhere`).
    pub peer: Option<u32>,
    pub peer_elsewhere: bool,
    /// An XDP program is attached.
    pub xdp: bool,
}

/// What the check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// lb may send into `iface`, whose peer `peer` (here) runs no XDP program.
    PeerWithoutXdp { iface: String, peer: String },
    /// lb may send into `iface`, whose peer is in another namespace.
    PeerElsewhere { iface: String },
}

impl Link {
    fn from_message(msg: &LinkMessage) -> Self {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            veth: false,
            peer: None,
            peer_elsewhere: false,
            xdp: false,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name.clone_from(n),
                LinkAttribute::Link(p) => link.peer = Some(*p),
                LinkAttribute::LinkNetNsId(_) => link.peer_elsewhere = true,
                LinkAttribute::LinkInfo(infos) => {
                    link.veth = infos
                        .iter()
                        .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth)));
                }
                LinkAttribute::Xdp(xdp) => {
                    link.xdp = xdp.iter().any(|x| {
                        matches!(x, LinkXdp::Attached(a) if *a != XdpAttached::None)
                            || matches!(x, LinkXdp::ProgId(id) if *id != 0)
                    });
                }
                _ => {}
            }
        }
        link
    }
}

/// The findings for `links`, of which lb may send into those indexed `sends_into`.
pub fn findings(links: &[Link], sends_into: &[u32]) -> Vec<Finding> {
    let by_index: HashMap<u32, &Link> = links.iter().map(|l| (l.index, l)).collect();
    let mut out = Vec::new();
    for index in sends_into {
        let Some(link) = by_index.get(index).filter(|l| l.veth) else {
            continue;
        };
        if link.peer_elsewhere {
            out.push(Finding::PeerElsewhere {
                iface: link.name.clone(),
            });
            continue;
        }
        match link.peer.and_then(|p| by_index.get(&p)) {
            Some(peer) if !peer.xdp => out.push(Finding::PeerWithoutXdp {
                iface: link.name.clone(),
                peer: peer.name.clone(),
            }),
            _ => {}
        }
    }
    out
}

/// Every link of this network namespace.
pub async fn links() -> anyhow::Result<Vec<Link>> {
    let (connection, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(connection);
    let mut stream = handle.link().get().execute();
    let mut links = Vec::new();
    while let Some(msg) = stream.try_next().await? {
        links.push(Link::from_message(&msg));
    }
    Ok(links)
}

/// Runs the check in the background and logs what it finds.
pub fn spawn(sends_into: Vec<u32>) {
    tokio::spawn(async move {
        let links = match links().await {
            Ok(l) => l,
            Err(e) => {
                warn!("listing the links to check veth peers: {e:#}");
                return;
            }
        };
        let mut elsewhere = Vec::new();
        for f in findings(&links, &sends_into) {
            match f {
                Finding::PeerWithoutXdp { iface, peer } => warn!(
                    iface,
                    peer,
                    "frames lb forwards into this veth are dropped by the kernel: its peer runs no XDP program (docs/dataplane.md, limits)"
                ),
                Finding::PeerElsewhere { iface } => elsewhere.push(iface),
            }
        }
        if !elsewhere.is_empty() {
            info!(
                veths = elsewhere.join(","),
                "these veths' peers are in other namespaces: frames lb forwards into them arrive only if the peer runs an XDP program (docs/dataplane.md, limits)"
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, peer: Option<u32>, xdp: bool) -> Link {
        Link {
            index,
            name: name.into(),
            veth: peer.is_some(),
            peer,
            peer_elsewhere: false,
            xdp,
        }
    }

    #[test]
    fn a_veth_peer_without_xdp_is_found_and_one_with_xdp_is_not() {
        let links = [
            link(2, "l0", Some(3), true),
            link(3, "c0", Some(2), false),
            link(4, "l1", Some(5), false),
            link(5, "b0", Some(4), true),
            link(6, "eth0", None, false),
            Link {
                peer_elsewhere: true,
                ..link(7, "l2", Some(9), false)
            },
        ];
        assert_eq!(
            findings(&links, &[2, 4, 6, 7]),
            [
                Finding::PeerWithoutXdp {
                    iface: "l0".into(),
                    peer: "c0".into()
                },
                Finding::PeerElsewhere { iface: "l2".into() },
            ]
        );
    }

    /// A real veth pair in a fresh network namespace, read back through rtnetlink.
    #[test]
    #[cfg_attr(
        not(feature = "privileged-tests"),
        ignore = "needs root (a network namespace); run by `cargo xtask test`"
    )]
    fn finds_a_real_veth_whose_peer_has_no_xdp() {
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
            let made = std::process::Command::new("ip")
                .args(["link", "add", "va", "type", "veth", "peer", "name", "vb"])
                .status()
                .expect("ip link add");
            assert!(made.success());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let links = rt.block_on(links()).expect("links");
            let va = links.iter().find(|l| l.name == "va").expect("va");
            assert!(va.veth && !va.peer_elsewhere && !va.xdp);
            assert_eq!(
                findings(&links, &[va.index]),
                [Finding::PeerWithoutXdp {
                    iface: "va".into(),
                    peer: "vb".into()
                }]
            );
        })
        .join()
        .expect("test thread");
    }
}
