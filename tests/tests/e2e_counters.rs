//! End to end: the production XDP program attached in native mode to the load balancer's
//! veth inside a namespace topology. Real packets from a client namespace must be counted
//! exactly, reach the kernel, and leave the host's own traffic (ARP, ND, a TCP
//! connection to a non-VIP address) working.
//!
//! Topology:  client [c0] <── veth ──> [l0] lb   (program attached to l0)

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use anyhow::{ensure, Context as _};
use lb_agent::dataplane::AttachMode;
use lb_common::{Counter, TrafficClass, Verdict};
use lb_tests::{netns::Topology, production_dataplane};

const LB4: &str = "198.18.1.1";
const CLIENT4: &str = "198.18.1.2";
const LB6: &str = "2001:2:0:1::1";
const CLIENT6: &str = "2001:2:0:1::2";

const UDP4_PACKETS: u64 = 1000;
const UDP6_PACKETS: u64 = 500;
const PAYLOAD: usize = 100;

#[test]
fn counters_match_real_traffic_and_host_traffic_still_works() -> anyhow::Result<()> {
    let mut topo = Topology::new("lbt-count")?;
    let client = topo.add_ns("client")?;
    let lb = topo.add_ns("lb")?;
    topo.veth(&client, "c0", &lb, "l0")?;
    client.addr("c0", &format!("{CLIENT4}/24"))?;
    lb.addr("l0", &format!("{LB4}/24"))?;
    client.addr("c0", &format!("{CLIENT6}/64"))?;
    lb.addr("l0", &format!("{LB6}/64"))?;

    let mut dp = production_dataplane()?;
    lb.enter(|| dp.attach("l0", AttachMode::Native))??;
    let link = lb.run("ip", &["-d", "link", "show", "l0"])?;
    let link = String::from_utf8_lossy(&link.stdout);
    ensure!(
        link.contains("prog/xdp ") && !link.contains("xdpgeneric"),
        "expected a native XDP attachment on l0:\n{link}"
    );
    let before = dp.counters()?;

    // Host traffic first: ARP and ND resolve, a TCP connection to a non-VIP address works.
    client
        .run("ping", &["-c", "2", "-i", "0.2", "-W", "2", LB4])
        .context("IPv4 ping (ARP) through the program")?;
    client
        .run("ping", &["-6", "-c", "2", "-i", "0.2", "-W", "2", LB6])
        .context("IPv6 ping (ND) through the program")?;
    tcp_echo(&topo, &lb, &client)?;

    // Exactly-counted UDP: nothing else in these fresh namespaces sends UDP.
    let got4 = udp_burst(&lb, &client, LB4, 9004, UDP4_PACKETS)?;
    let got6 = udp_burst(&lb, &client, LB6, 9006, UDP6_PACKETS)?;
    ensure!(
        got4 == UDP4_PACKETS,
        "the kernel received {got4} of {UDP4_PACKETS} IPv4 UDP packets"
    );
    ensure!(
        got6 == UDP6_PACKETS,
        "the kernel received {got6} of {UDP6_PACKETS} IPv6 UDP packets"
    );

    let c = dp.counters()?.since(&before);
    let frame4 = (14 + 20 + 8 + PAYLOAD) as u64;
    let frame6 = (14 + 40 + 8 + PAYLOAD) as u64;
    assert_eq!(
        c.traffic(TrafficClass::Ipv4Udp),
        Counter {
            packets: UDP4_PACKETS,
            bytes: UDP4_PACKETS * frame4
        },
        "IPv4 UDP counter summed over CPUs"
    );
    assert_eq!(
        c.traffic(TrafficClass::Ipv6Udp),
        Counter {
            packets: UDP6_PACKETS,
            bytes: UDP6_PACKETS * frame6
        },
        "IPv6 UDP counter summed over CPUs"
    );
    assert!(
        c.traffic(TrafficClass::Arp).packets >= 1,
        "ARP was seen: {c:?}"
    );
    assert!(
        c.traffic(TrafficClass::Ipv4Icmp).packets >= 2,
        "ping requests were seen: {c:?}"
    );
    assert!(
        c.traffic(TrafficClass::Ipv4Tcp).packets >= 3,
        "the TCP handshake was seen: {c:?}"
    );

    // Every frame the program saw left with XDP_PASS and was counted exactly once.
    let seen = Counter::sum(&c.traffic);
    assert_eq!(
        c.verdict(Verdict::Pass),
        seen,
        "pass verdicts equal frames seen"
    );
    for v in [
        Verdict::Aborted,
        Verdict::Drop,
        Verdict::Tx,
        Verdict::Redirect,
    ] {
        assert_eq!(c.verdict(v), Counter::default(), "no {} verdicts", v.name());
    }

    dp.detach()?;
    let link = lb.run("ip", &["-d", "link", "show", "l0"])?;
    ensure!(
        !String::from_utf8_lossy(&link.stdout).contains("prog/xdp"),
        "detach left the program attached"
    );
    Ok(())
}

/// A TCP listener on the load balancer host, a client connecting to it, one echo.
fn tcp_echo(
    _topo: &Topology,
    lb: &lb_tests::netns::Ns,
    client: &lb_tests::netns::Ns,
) -> anyhow::Result<()> {
    let addr: SocketAddr = format!("{LB4}:8080").parse()?;
    let listener = lb.enter(|| TcpListener::bind(addr))??;
    std::thread::scope(|s| -> anyhow::Result<()> {
        let server = s.spawn(move || -> std::io::Result<()> {
            let (mut conn, _) = listener.accept()?;
            let mut buf = [0u8; 5];
            conn.read_exact(&mut buf)?;
            conn.write_all(&buf)
        });
        let reply = client.enter(|| -> std::io::Result<[u8; 5]> {
            let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
            c.set_read_timeout(Some(Duration::from_secs(3)))?;
            c.write_all(b"hello")?;
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf)?;
            Ok(buf)
        })??;
        server
            .join()
            .map_err(|_| anyhow::anyhow!("echo server panicked"))??;
        ensure!(&reply == b"hello", "echo mismatch: {reply:?}");
        Ok(())
    })
}

/// Sends `count` UDP datagrams of `PAYLOAD` bytes from the client to `dst:port` on the
/// load balancer host and returns how many the kernel delivered to a socket there.
fn udp_burst(
    lb: &lb_tests::netns::Ns,
    client: &lb_tests::netns::Ns,
    dst: &str,
    port: u16,
    count: u64,
) -> anyhow::Result<u64> {
    let addr: SocketAddr = SocketAddr::new(dst.parse()?, port);
    let rx = lb.enter(|| -> anyhow::Result<UdpSocket> {
        let s = UdpSocket::bind(addr)?;
        // Large enough to hold the whole burst, so the count measures the path, not the
        // receiver's scheduling. RCVBUFFORCE ignores net.core.rmem_max (we are root).
        nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RcvBufForce, &(8 << 20))?;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        Ok(s)
    })??;
    client.enter(|| -> anyhow::Result<()> {
        let bind: SocketAddr = if addr.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()?;
        let tx = UdpSocket::bind(bind)?;
        let payload = [0x5au8; PAYLOAD];
        for i in 0..count {
            tx.send_to(&payload, addr)?;
            // Pace a little so the sender's qdisc-less veth never overruns a backlog.
            if i % 100 == 99 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        Ok(())
    })??;
    let mut received = 0u64;
    let mut buf = [0u8; 2048];
    while let Ok(n) = rx.recv(&mut buf) {
        ensure!(n == PAYLOAD, "received a {n}-byte datagram");
        received += 1;
        if received == count {
            break;
        }
    }
    Ok(received)
}
