//! A load balancer between real hosts, for end-to-end forwarding tests.
//!
//! ```text
//!   namespace <p>-client        namespace <p>-lb                 namespaces <p>-be{0,1,2}
//!   c0 198.18.10.2/24  ── veth ── l0 198.18.10.1/24  (lb_xdp, native)
//!      2001:2:0:10::2/64            2001:2:0:10::1/64
//!                                 l{1+i} 198.18.1{1+i}.1/24 ── veth ── b{i} 198.18.1{1+i}.2/24
//!                                        2001:2:0:1{1+i}::1/64          2001:2:0:1{1+i}::2/64
//!                                                                      (lb_decap, native)
//! ```
//!
//! The production program runs on `l0` only. VIP packets from the client are sent to a
//! backend by `XDP_REDIRECT` (through the device map) out of `l1`..`l3`, either as they
//! are (`dr`) or tunnelled (`tunnel`; `lb_decap` on the backend's veth strips the outer
//! header, since this kernel has no ipip module). `lb_decap` also gives the backend veth
//! the XDP program a veth needs to receive redirected frames. Backends hold every VIP on
//! `lo` and answer the client directly; their replies are routed by the lb namespace's
//! kernel (no XDP on `l1`..`l3` ingress).
//!
//! Every backend runs a TCP server on `[::]:`[`TCP_PORT`] (each line received is answered
//! with `be<i>\n`) and a UDP server on every VIP's [`UDP_PORT`] (each datagram is answered
//! with `be<i>` from the VIP), so a client learns which backend served it.
//!
//! Backend ids in the data plane: IPv4 backend `i` is id `i`, IPv6 backend `i` is id
//! `3 + i` (see [`backend_id`]). Rings are built by the agent's Maglev builder.

use std::{
    collections::BTreeMap,
    io::{self, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _};
use lb_agent::{
    dataplane::{decap::DecapPlane, AttachMode, Dataplane},
    maglev,
};
use lb_common::{
    decap::DecapEvent,
    service::{addr16, backend_flags},
    Backend, Counter, FlowKey, LbConfig, VipKey, VipMeta,
};
use nix::sys::{
    socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage},
    time::{TimeVal, TimeValLike as _},
};

use crate::{
    netns::{Ns, Topology},
    production_dataplane,
};

pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 2);
pub const LB4: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 1);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0x10, 0, 0, 0, 2);
pub const LB6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0x10, 0, 0, 0, 1);
/// Where VIPs live: the client routes these through the load balancer.
pub const VIP_NET4: &str = "198.18.200.0/24";
pub const VIP_NET6: &str = "2001:2:0:200::/64";
/// Number of backend hosts.
pub const BACKENDS: usize = 3;
/// Ring size: prime and more than 100 × the backend count.
pub const RING_SIZE: u32 = 16381;
/// The backends' TCP service port (every address) and UDP service port (every VIP).
pub const TCP_PORT: u16 = 80;
pub const UDP_PORT: u16 = 53;
/// How long a server thread blocks before it looks at the stop flag.
const SERVER_POLL: Duration = Duration::from_millis(100);

/// Backend `i`'s IPv4 address (on `b<i>`).
pub fn backend_v4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 11 + i as u8, 2)
}

/// Backend `i`'s IPv6 address (on `b<i>`).
pub fn backend_v6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 2, 0, 0x11 + i as u16, 0, 0, 0, 2)
}

/// The load balancer's IPv4 address towards backend `i` (on `l<1+i>`).
pub fn gateway_v4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 11 + i as u8, 1)
}

/// The load balancer's IPv6 address towards backend `i` (on `l<1+i>`).
pub fn gateway_v6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 2, 0, 0x11 + i as u16, 0, 0, 0, 1)
}

/// The data plane's id for backend host `i` in the family `v6` says.
pub fn backend_id(v6: bool, i: usize) -> u32 {
    i as u32 + if v6 { BACKENDS as u32 } else { 0 }
}

/// The backend host index of data-plane backend `id`.
pub fn backend_index(id: u32) -> Option<usize> {
    let i = id as usize;
    (i < 2 * BACKENDS).then_some(i % BACKENDS)
}

/// The client's address in the family of `vip`.
pub fn client_addr(vip: IpAddr) -> IpAddr {
    match vip {
        IpAddr::V4(_) => CLIENT4.into(),
        IpAddr::V6(_) => CLIENT6.into(),
    }
}

/// The flow-table key of a client flow `src` → `dst` (the VIP).
pub fn flow_key(src: SocketAddr, dst: SocketAddr, proto: u8) -> FlowKey {
    let (s, family) = addr16(src.ip());
    let (d, _) = addr16(dst.ip());
    FlowKey {
        src: s,
        dst: d,
        sport: src.port().to_be(),
        dport: dst.port().to_be(),
        proto,
        family,
        _pad: [0; 2],
    }
}

/// A VIP of the scenario: one (address, port, protocol) entry of the VIP map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipSpec {
    pub id: u32,
    pub addr: IpAddr,
    pub port: u16,
    pub proto: u8,
    /// One of `lb_common::service::mode`.
    pub mode: u8,
}

impl VipSpec {
    pub fn key(&self) -> VipKey {
        let (addr, family) = addr16(self.addr);
        VipKey {
            addr,
            port: self.port.to_be(),
            proto: self.proto,
            family,
        }
    }

    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr, self.port)
    }

    /// Backends of this VIP are of the VIP's own family (IPIP / IP6IP6 for tunnels).
    pub fn v6(&self) -> bool {
        self.addr.is_ipv6()
    }
}

/// Builds the ring of a VIP whose backends are the three hosts in family `v6`, with
/// `weights[i]` for host `i`, exactly as the agent would (keyed by `maglev::target_key`).
pub fn build_ring(v6: bool, weights: &[u32; BACKENDS], seed: u32) -> anyhow::Result<maglev::Table> {
    let members: Vec<maglev::Backend> = (0..BACKENDS)
        .map(|i| {
            let addr: IpAddr = if v6 {
                backend_v6(i).into()
            } else {
                backend_v4(i).into()
            };
            maglev::Backend::for_target(backend_id(v6, i), addr, weights[i])
        })
        .collect();
    maglev::build(&members, RING_SIZE, seed).context("building a Maglev ring")
}

/// The host index `table` sends `key` to (VIP flags 0: the full 5-tuple is hashed).
pub fn predict(table: &maglev::Table, key: &FlowKey, seed: u32) -> Option<usize> {
    backend_index(table.lookup(lb_common::hash::flow_hash(key, 0, seed)))
}

/// One backend host.
pub struct BackendHost {
    pub index: usize,
    pub ns: Ns,
    pub ifname: String,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    pub decap: DecapPlane,
}

/// The running servers of every backend; stopped and joined on drop.
struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    errors: Arc<Mutex<Vec<String>>>,
    tcp_accepted: Arc<AtomicU64>,
}

impl Servers {
    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                record(&self.errors, "a server thread panicked".to_owned());
            }
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn record(errors: &Mutex<Vec<String>>, e: String) {
    if let Ok(mut v) = errors.lock() {
        v.push(e);
    }
}

/// Client, load balancer and three backend hosts with servers, ready for VIPs.
///
/// Fields drop in order: servers first (their sockets keep namespaces alive), then the
/// XDP attachments, then the namespaces.
pub struct LbNet {
    servers: Servers,
    pub dp: Dataplane,
    pub backends: Vec<BackendHost>,
    pub cfg: LbConfig,
    vips: BTreeMap<u32, (VipSpec, maglev::Table)>,
    pub client: Ns,
    pub lb: Ns,
    pub topo: Topology,
}

impl LbNet {
    /// Builds the topology under `prefix` (unique per test), attaches `lb_xdp` to `l0`
    /// and `lb_decap` to every `b<i>` (both native), writes the backends into the data
    /// plane, puts every address of `vips` on the backends' `lo`, starts the servers and
    /// warms the neighbour tables. No VIP is configured yet: see [`LbNet::add_vip`].
    pub fn new(prefix: &str, vips: &[IpAddr]) -> anyhow::Result<Self> {
        let mut topo = Topology::new(prefix)?;
        let client = topo.add_ns("client")?;
        let lb = topo.add_ns("lb")?;
        topo.veth(&client, "c0", &lb, "l0")?;
        client.addr("c0", &format!("{CLIENT4}/24"))?;
        client.addr("c0", &format!("{CLIENT6}/64"))?;
        lb.addr("l0", &format!("{LB4}/24"))?;
        lb.addr("l0", &format!("{LB6}/64"))?;
        disable_tx_checksum_offload(&client, "c0")?;
        client.route(&[VIP_NET4, "via", &LB4.to_string()])?;
        client.route(&[VIP_NET6, "via", &LB6.to_string()])?;
        // bpf_fib_lookup answers only for interfaces that forward; the kernel also
        // forwards the backends' replies to the client.
        lb.sysctl("net.ipv4.conf.all.forwarding", "1")?;
        lb.sysctl("net.ipv6.conf.all.forwarding", "1")?;

        let object = lb_agent::object::load_bytes(None)?;
        let mut hosts = Vec::new();
        for i in 0..BACKENDS {
            let ns = topo.add_ns(&format!("be{i}"))?;
            let lif = format!("l{}", i + 1);
            let bif = format!("b{i}");
            topo.veth(&lb, &lif, &ns, &bif)?;
            lb.addr(&lif, &format!("{}/24", gateway_v4(i)))?;
            lb.addr(&lif, &format!("{}/64", gateway_v6(i)))?;
            ns.addr(&bif, &format!("{}/24", backend_v4(i)))?;
            ns.addr(&bif, &format!("{}/64", backend_v6(i)))?;
            // The VIPs are on lo: the backend must not answer ARP for them on b<i>, nor
            // use them as the source of its own ARP requests (LVS-DR practice).
            ns.sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
            ns.sysctl("net.ipv4.conf.all.arp_announce", "2")?;
            for vip in vips {
                let cidr = match vip {
                    IpAddr::V4(a) => format!("{a}/32"),
                    IpAddr::V6(a) => format!("{a}/128"),
                };
                ns.addr("lo", &cidr)?;
            }
            ns.route(&["default", "via", &gateway_v4(i).to_string()])?;
            ns.route(&["default", "via", &gateway_v6(i).to_string()])?;

            let mut decap = DecapPlane::load(&object).context("loading lb_decap")?;
            decap.add_address(backend_v4(i).into())?;
            decap.add_address(backend_v6(i).into())?;
            ns.enter(|| decap.attach(&bif, AttachMode::Native))??;
            ns.ensure_native_xdp(&bif)?;
            hosts.push(BackendHost {
                index: i,
                ns,
                ifname: bif,
                v4: backend_v4(i),
                v6: backend_v6(i),
                decap,
            });
        }

        let mut dp = production_dataplane()?;
        lb.enter(|| dp.attach("l0", AttachMode::Native))??;
        lb.ensure_native_xdp("l0")?;
        for i in 0..BACKENDS {
            // The device map resolves the ifindex in the *caller's* namespace: outside
            // the lb namespace it would name (or miss) some other interface.
            let ifindex = lb.ifindex(&format!("l{}", i + 1))?;
            lb.enter(|| dp.add_tx_port(ifindex))??;
            for v6 in [false, true] {
                let addr: IpAddr = if v6 {
                    backend_v6(i).into()
                } else {
                    backend_v4(i).into()
                };
                let (addr, family) = addr16(addr);
                dp.set_backend(
                    backend_id(v6, i),
                    &Backend {
                        addr,
                        family,
                        flags: backend_flags::IN_USE,
                        _pad: [0; 2],
                    },
                )?;
            }
        }
        let cfg = dp.config()?;

        let servers = start_servers(&hosts, vips)?;

        // Neighbour entries first: without one, bpf_fib_lookup says "no neighbour" and the
        // program passes the packet to the kernel instead of forwarding it.
        for h in &hosts {
            lb.run("ping", &["-c", "1", "-W", "2", &h.v4.to_string()])
                .with_context(|| format!("ping be{} over IPv4 from the lb", h.index))?;
            lb.run("ping", &["-6", "-c", "1", "-W", "2", &h.v6.to_string()])
                .with_context(|| format!("ping be{} over IPv6 from the lb", h.index))?;
        }
        client.run("ping", &["-c", "1", "-W", "2", &LB4.to_string()])?;
        client.run("ping", &["-6", "-c", "1", "-W", "2", &LB6.to_string()])?;

        Ok(Self {
            servers,
            dp,
            backends: hosts,
            cfg,
            vips: BTreeMap::new(),
            client,
            lb,
            topo,
        })
    }

    /// Configures a VIP: its ring (host `i` with `weights[i]`), its VIP-map entry and the
    /// fragment entry of its address and protocol (fragments dropped: flags 0).
    pub fn add_vip(&mut self, spec: VipSpec, weights: &[u32; BACKENDS]) -> anyhow::Result<()> {
        let table = build_ring(spec.v6(), weights, self.cfg.hash_seed)?;
        self.dp.install_ring(spec.id, table.slots())?;
        let meta = VipMeta {
            vip_id: spec.id,
            flags: 0,
            mode: spec.mode,
            _pad: 0,
            gue_port: 0,
            ring_size: RING_SIZE,
        };
        let key = spec.key();
        self.dp.set_vip(&key, &meta)?;
        self.dp.set_vip(&key.fragment_key(), &meta)?;
        self.vips.insert(spec.id, (spec, table));
        Ok(())
    }

    /// Rebuilds VIP `vip_id`'s ring with new weights and swaps it in (what the agent does
    /// when weights change).
    pub fn set_weights(&mut self, vip_id: u32, weights: &[u32; BACKENDS]) -> anyhow::Result<()> {
        let (spec, _) = *self
            .vips
            .get(&vip_id)
            .with_context(|| format!("no VIP {vip_id}"))?;
        let table = build_ring(spec.v6(), weights, self.cfg.hash_seed)?;
        self.dp.install_ring(vip_id, table.slots())?;
        self.vips.insert(vip_id, (spec, table));
        Ok(())
    }

    /// The ring currently installed for `vip_id`.
    pub fn ring(&self, vip_id: u32) -> Option<&maglev::Table> {
        self.vips.get(&vip_id).map(|(_, t)| t)
    }

    /// The host index the installed ring sends `key` to on `vip_id`.
    pub fn expected(&self, vip_id: u32, key: &FlowKey) -> Option<usize> {
        predict(self.ring(vip_id)?, key, self.cfg.hash_seed)
    }

    /// The data plane's counters once they have stopped changing (two reads 50 ms apart
    /// agree; at most 2 s). Read while packets are in flight, a snapshot can catch a
    /// packet between two of its counters (say `forwarded` already counted, its verdict
    /// not yet); the last packets of closed connections are still on their way when the
    /// clients are done.
    pub fn settled_counters(&self) -> anyhow::Result<lb_agent::dataplane::Counters> {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut last = self.dp.counters()?;
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let now = self.dp.counters()?;
            if now == last || Instant::now() >= deadline {
                return Ok(now);
            }
            last = now;
        }
    }

    /// `lb_decap`'s counters on every backend host, indexed by host then [`DecapEvent`].
    pub fn decap_counters(&self) -> anyhow::Result<Vec<[Counter; DecapEvent::COUNT as usize]>> {
        self.backends
            .iter()
            .map(|h| h.decap.counters().map_err(Into::into))
            .collect()
    }

    /// Connections the TCP servers accepted so far (all hosts).
    pub fn tcp_accepted(&self) -> u64 {
        self.servers.tcp_accepted.load(Ordering::Relaxed)
    }

    /// Stops the servers and returns what went wrong in them (nothing, normally).
    pub fn stop_servers(&mut self) -> Vec<String> {
        self.servers.shutdown();
        self.servers
            .errors
            .lock()
            .map(|v| v.clone())
            .unwrap_or_else(|_| vec!["server error list poisoned".to_owned()])
    }
}

/// `struct ethtool_value` of `<linux/ethtool.h>`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}
/// `ETHTOOL_STXCSUM`: set transmit checksum offload on or off.
const ETHTOOL_STXCSUM: u32 = 0x17;

/// Turns transmit checksum offload off on `ifname` in `ns` (`ethtool -K <if> tx off`,
/// without needing ethtool).
///
/// A veth with offload on hands locally made TCP/UDP packets over with only the
/// pseudo-header sum in the checksum field (`CHECKSUM_PARTIAL`), trusting the receiving
/// skb to carry that state along. XDP sees only bytes: once the load balancer redirects
/// such a frame, the backend builds a fresh skb and finds a wrong checksum (the kernel
/// counts `TcpInCsumErrors` and drops it). A client on a real wire always sends complete
/// checksums, which is what this setting gives the test's client. Turning it off also
/// turns off TSO, so no super-MTU segments reach the XDP program either.
pub fn disable_tx_checksum_offload(ns: &Ns, ifname: &str) -> anyhow::Result<()> {
    ensure!(
        ifname.len() < libc::IFNAMSIZ,
        "interface name {ifname:?} is too long"
    );
    ns.enter(|| -> anyhow::Result<()> {
        let sock = socket::socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        let mut value = EthtoolValue {
            cmd: ETHTOOL_STXCSUM,
            data: 0,
        };
        // SAFETY: `ifreq` is plain C data (byte arrays, integers, a pointer in a union):
        // all-zero is a valid value, and leaves the name NUL-terminated.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, &src) in ifr.ifr_name.iter_mut().zip(ifname.as_bytes()) {
            *dst = src as libc::c_char;
        }
        ifr.ifr_ifru.ifru_data = (&raw mut value).cast();
        // SAFETY: SIOCETHTOOL reads `ifr` and the `ethtool_value` it points to; both
        // outlive the call, and the kernel writes nothing back for a set command.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) };
        if rc != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("ETHTOOL_STXCSUM off on {ifname}"));
        }
        Ok(())
    })?
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Starts a TCP server ([::]:TCP_PORT, dual stack) and a UDP server per VIP on every host.
/// Sockets are made inside the host's namespace; the threads serving them run anywhere.
fn start_servers(hosts: &[BackendHost], vips: &[IpAddr]) -> anyhow::Result<Servers> {
    let mut servers = Servers {
        stop: Arc::new(AtomicBool::new(false)),
        threads: Vec::new(),
        errors: Arc::new(Mutex::new(Vec::new())),
        tcp_accepted: Arc::new(AtomicU64::new(0)),
    };
    for h in hosts {
        let name = format!("be{}", h.index);
        let listener = h.ns.enter(|| -> anyhow::Result<TcpListener> {
            let l = TcpListener::bind((Ipv6Addr::UNSPECIFIED, TCP_PORT))?;
            // accept() honours SO_RCVTIMEO: it wakes up to look at the stop flag.
            socket::setsockopt(
                &l,
                sockopt::ReceiveTimeout,
                &TimeVal::milliseconds(SERVER_POLL.as_millis() as i64),
            )?;
            Ok(l)
        })??;
        let (stop, errors, accepted) = (
            servers.stop.clone(),
            servers.errors.clone(),
            servers.tcp_accepted.clone(),
        );
        let reply = format!("{name}\n").into_bytes();
        servers.threads.push(
            std::thread::Builder::new()
                .name(format!("{name}-tcp"))
                .spawn(move || tcp_server(listener, reply, stop, errors, accepted))?,
        );
        for &vip in vips {
            let sock =
                h.ns.enter(|| UdpSocket::bind(SocketAddr::new(vip, UDP_PORT)))??;
            sock.set_read_timeout(Some(SERVER_POLL))?;
            let (stop, errors) = (servers.stop.clone(), servers.errors.clone());
            let reply = name.clone().into_bytes();
            servers.threads.push(
                std::thread::Builder::new()
                    .name(format!("{name}-udp"))
                    .spawn(move || udp_server(sock, reply, stop, errors))?,
            );
        }
    }
    Ok(servers)
}

fn tcp_server(
    listener: TcpListener,
    reply: Vec<u8>,
    stop: Arc<AtomicBool>,
    errors: Arc<Mutex<Vec<String>>>,
    accepted: Arc<AtomicU64>,
) {
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((conn, _)) => {
                accepted.fetch_add(1, Ordering::Relaxed);
                let (stop, errors, reply) = (stop.clone(), errors.clone(), reply.clone());
                match std::thread::Builder::new().spawn(move || serve_tcp(conn, &reply, &stop)) {
                    Ok(t) => conns.push(t),
                    Err(e) => record(&errors, format!("spawning a connection thread: {e}")),
                }
                conns.retain(|t| !t.is_finished());
            }
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                record(&errors, format!("accept: {e}"));
                break;
            }
        }
    }
    for t in conns {
        if t.join().is_err() {
            record(&errors, "a connection thread panicked".to_owned());
        }
    }
}

/// Answers every line with `reply` until the client closes or the servers stop.
fn serve_tcp(mut conn: TcpStream, reply: &[u8], stop: &AtomicBool) {
    if conn.set_read_timeout(Some(SERVER_POLL)).is_err() {
        return;
    }
    let mut buf = [0u8; 1024];
    while !stop.load(Ordering::SeqCst) {
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                for _ in buf[..n].iter().filter(|&&b| b == b'\n') {
                    if conn.write_all(reply).is_err() {
                        return;
                    }
                }
            }
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            // A reset by the client is its business, not a server failure.
            Err(_) => return,
        }
    }
}

fn udp_server(
    sock: UdpSocket,
    reply: Vec<u8>,
    stop: Arc<AtomicBool>,
    errors: Arc<Mutex<Vec<String>>>,
) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::SeqCst) {
        match sock.recv_from(&mut buf) {
            Ok((_, from)) => {
                if let Err(e) = sock.send_to(&reply, from) {
                    record(&errors, format!("UDP reply to {from}: {e}"));
                }
            }
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                record(&errors, format!("UDP receive: {e}"));
                return;
            }
        }
    }
}

/// `be<i>` (optionally followed by a newline) → `i`.
pub fn parse_reply(reply: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(reply).ok()?.trim_end_matches('\n');
    let i: usize = text.strip_prefix("be")?.parse().ok()?;
    (i < BACKENDS).then_some(i)
}

/// A TCP connection from the fixed address and port `src` to `dst`, `SO_REUSEADDR` set;
/// `timeout` bounds the handshake and every later read and write. Call it on a thread
/// inside the client's namespace.
pub fn tcp_connect_from(
    src: SocketAddr,
    dst: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let family = if src.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    let stream = TcpStream::from(fd);
    // A blocking connect() gives up after SO_SNDTIMEO (with EINPROGRESS).
    stream.set_write_timeout(Some(timeout))?;
    stream.set_read_timeout(Some(timeout))?;
    socket::bind(stream.as_raw_fd(), &SockaddrStorage::from(src))?;
    match socket::connect(stream.as_raw_fd(), &SockaddrStorage::from(dst)) {
        Ok(()) => Ok(stream),
        Err(nix::errno::Errno::EINPROGRESS) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connect {src} -> {dst} timed out after {timeout:?}"),
        )),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Sends one line on `conn` and returns the host index of the answer.
pub fn ask_tcp(conn: &mut TcpStream) -> io::Result<usize> {
    conn.write_all(b"?\n")?;
    let mut reply = Vec::with_capacity(8);
    let mut buf = [0u8; 16];
    while !reply.contains(&b'\n') {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        reply.extend_from_slice(&buf[..n]);
        if reply.len() > 64 {
            break;
        }
    }
    parse_reply(&reply).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected reply {:?}", String::from_utf8_lossy(&reply)),
        )
    })
}

/// A UDP socket bound to `src` and connected to `dst` (so only `dst` may answer).
/// Call it on a thread inside the client's namespace.
pub fn udp_flow(src: SocketAddr, dst: SocketAddr) -> io::Result<UdpSocket> {
    let s = UdpSocket::bind(src)?;
    s.connect(dst)?;
    Ok(s)
}

/// Sends one datagram on a connected socket and returns the host index of the answer,
/// waiting at most `timeout`.
pub fn ask_udp(sock: &UdpSocket, timeout: Duration) -> io::Result<usize> {
    sock.send(b"?")?;
    recv_udp_reply(sock, timeout)
}

fn recv_udp_reply(sock: &UdpSocket, timeout: Duration) -> io::Result<usize> {
    sock.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
    let mut buf = [0u8; 64];
    let n = sock.recv(&mut buf)?;
    parse_reply(&buf[..n]).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected reply {:?}", String::from_utf8_lossy(&buf[..n])),
        )
    })
}

/// Outcome of [`udp_flows`].
#[derive(Debug, Default)]
pub struct UdpFlows {
    /// Per source port (in the order given): the host that answered, or the error.
    pub answers: Vec<Result<usize, String>>,
    /// Flows that needed their one retry (the first datagram or its answer was lost).
    pub retried: usize,
}

/// One request/answer UDP flow from each `src_ip:port` in `ports` to `dst`, in batches
/// of `batch` flows in flight. The flows of a batch that have no answer after `timeout`
/// are retried once, together (on the same sockets: same 5-tuples), so a batch takes at
/// most 2 × `timeout`. Flows not started before `deadline` fail.
/// Call it on a thread inside the client's namespace.
pub fn udp_flows(
    src_ip: IpAddr,
    ports: &[u16],
    dst: SocketAddr,
    batch: usize,
    timeout: Duration,
    deadline: Instant,
) -> UdpFlows {
    let mut out = UdpFlows::default();
    for chunk in ports.chunks(batch.max(1)) {
        if Instant::now() >= deadline {
            out.answers.extend(
                chunk
                    .iter()
                    .map(|_| Err("phase deadline passed".to_owned())),
            );
            continue;
        }
        let socks: Vec<io::Result<UdpSocket>> = chunk
            .iter()
            .map(|&p| {
                let s = udp_flow(SocketAddr::new(src_ip, p), dst)?;
                s.send(b"?")?;
                Ok(s)
            })
            .collect();
        let from = |n: usize| SocketAddr::new(src_ip, chunk[n]);
        let mut answers: Vec<Result<usize, String>> = Vec::with_capacity(socks.len());
        let mut lost = Vec::new();
        let until = Instant::now() + timeout;
        for (n, s) in socks.iter().enumerate() {
            answers.push(match s {
                Err(e) => Err(format!("from {}: {e}", from(n))),
                Ok(s) => match recv_udp_reply(s, until.saturating_duration_since(Instant::now())) {
                    Ok(i) => Ok(i),
                    Err(e) => {
                        if is_timeout(&e) {
                            lost.push(n);
                        }
                        Err(format!("from {}: {e}", from(n)))
                    }
                },
            });
        }
        out.retried += lost.len();
        let mut waiting = Vec::with_capacity(lost.len());
        for n in lost {
            if let Ok(s) = &socks[n] {
                match s.send(b"?") {
                    Ok(_) => waiting.push((n, s)),
                    Err(e) => answers[n] = Err(format!("from {}: retry: {e}", from(n))),
                }
            }
        }
        let until = Instant::now() + timeout;
        for (n, s) in waiting {
            answers[n] = recv_udp_reply(s, until.saturating_duration_since(Instant::now()))
                .map_err(|e| {
                    if is_timeout(&e) {
                        format!("from {}: no answer, also after a retry", from(n))
                    } else {
                        format!("from {}: {e}", from(n))
                    }
                });
        }
        out.answers.extend(answers);
    }
    out
}

/// Shares (fractions of the answered flows) per host index.
pub fn shares(answers: &[Result<usize, String>]) -> [f64; BACKENDS] {
    let mut counts = [0usize; BACKENDS];
    for &i in answers.iter().flatten() {
        counts[i] += 1;
    }
    let total = counts.iter().sum::<usize>().max(1) as f64;
    counts.map(|c| c as f64 / total)
}

/// The host every element of `answers` names, if they all name the same one.
pub fn all_same(answers: &[usize]) -> Option<usize> {
    let first = *answers.first()?;
    answers.iter().all(|&a| a == first).then_some(first)
}

/// Records `what()` in `failures` unless `cond` holds: checks that report every failure
/// at the end instead of stopping at the first.
pub fn check(failures: &mut Vec<String>, cond: bool, what: impl FnOnce() -> String) {
    if !cond {
        failures.push(what());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_ids() {
        assert_eq!(backend_v4(0).to_string(), "198.18.11.2");
        assert_eq!(backend_v6(2).to_string(), "2001:2:0:13::2");
        assert_eq!(gateway_v6(1).to_string(), "2001:2:0:12::1");
        assert_eq!(backend_index(backend_id(true, 2)), Some(2));
        assert_eq!(backend_index(backend_id(false, 1)), Some(1));
        assert_eq!(backend_index(lb_common::NO_BACKEND), None);
        assert_eq!(parse_reply(b"be2\n"), Some(2));
        assert_eq!(parse_reply(b"be3"), None);
        assert_eq!(parse_reply(b"xx"), None);
        assert_eq!(all_same(&[1, 1, 1]), Some(1));
        assert_eq!(all_same(&[1, 2]), None);
        assert_eq!(all_same(&[]), None);
    }
}
