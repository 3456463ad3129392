//! The programs the HTTP benchmark runs besides the load balancer, each from a
//! configuration file of ours in the run's own directory: nginx in every backend, HAProxy
//! and the nftables ruleset in the lb namespace, and lb-agent's configuration. Plus two
//! small HTTP clients: a probe that checks who answers, and nginx's request counter.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{bail, ensure, Context as _, Result};

use crate::{
    agentnet::{backend, backend_index, BACKENDS},
    netns::{wait_until, ChildGuard, Ns},
};

/// The port nginx serves in every backend (on every address: the VIP on `lo` for lb's
/// direct routing, its own address for the others), HAProxy listens on, and the VIP
/// serves. Not 80: agentnet's own test servers hold that one.
pub const PORT: u16 = 8000;
/// The port of the one nginx that `direct` loads (in be0, with as many workers as the
/// three backends' together).
pub const DIRECT_PORT: u16 = 8001;
/// nginx's request counter (`stub_status`) on each backend, read from the lb namespace.
pub const STATUS_PATH: &str = "/lbb-status";
/// nginx workers per backend on [`PORT`]: one per CPU of this machine.
pub const NGINX_WORKERS: u32 = 2;
/// HAProxy threads: one per CPU of this machine.
pub const HAPROXY_THREADS: u32 = 2;
/// The nftables table of the `nft_dnat` system.
pub const NFT_TABLE: &str = "lbb_http";

/// A directory of our own for configuration files and logs, removed on drop.
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn new(prefix: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        // A crashed earlier run with the same pid is the only possible leftover.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }

    /// Writes `text` to `name` in the directory; returns its path.
    pub fn write(&self, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("http bench: removing {}: {e}", self.0.display());
        }
    }
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

/// One nginx instance: which backend it runs in, its port and worker count.
#[derive(Clone, Copy, Debug)]
pub struct Nginx {
    pub backend: usize,
    pub port: u16,
    pub workers: u32,
}

impl Nginx {
    /// Where it listens, as seen from the lb namespace.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(backend(self.backend).into(), self.port)
    }
}

/// nginx's configuration: a few bytes from memory (`return`, no file I/O) naming the
/// backend, keep-alive as shipped (1000 requests per connection, then the client
/// reconnects), no access log, `reuseport` so the kernel spreads connections over the
/// workers evenly. Every path is in `dir`, so nothing of the system's nginx is used.
pub fn nginx_config(n: &Nginx, dir: &Path) -> Result<String> {
    let d = path_str(dir)?;
    let Nginx {
        backend: i,
        port,
        workers,
    } = *n;
    Ok(format!(
        "# lb HTTP benchmark, backend be{i}: generated, removed after the run.
daemon off;
master_process on;
user www-data;
worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    default_type text/plain;
    keepalive_requests 1000;
    keepalive_timeout 60s;
    server {{
        listen {port} reuseport backlog=4096;
        location = {STATUS_PATH} {{
            stub_status;
        }}
        location / {{
            return 200 \"be{i}\\n\";
        }}
    }}
}}
"
    ))
}

/// HAProxy in TCP mode on `listen`, round robin over the backends: a connection goes to
/// the next backend and stays there. One thread per CPU. No health checks, as lb's and
/// nftables' configurations here have none.
pub fn haproxy_config(listen: SocketAddr) -> String {
    let mut s = format!(
        "# lb HTTP benchmark: generated, removed after the run.
global
    maxconn 4000
    nbthread {HAPROXY_THREADS}

defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s

listen http
    bind {listen}
    balance roundrobin
"
    );
    for i in 0..BACKENDS {
        s.push_str(&format!("    server be{i} {}:{PORT}\n", backend(i)));
    }
    s
}

/// What kube-proxy's nftables mode does for a TCP service with three endpoints: DNAT in
/// prerouting to a random endpoint, chosen at a connection's first packet and kept by
/// conntrack. No masquerade: the backends route through the lb namespace, so conntrack
/// sees the replies and turns their source back into the VIP.
pub fn nft_rules(vip: Ipv4Addr) -> String {
    let targets: Vec<String> = (0..BACKENDS)
        .map(|i| format!("{i} : {}", backend(i)))
        .collect();
    format!(
        "table ip {NFT_TABLE} {{
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr {vip} tcp dport {PORT} dnat to numgen random mod {BACKENDS} map {{ {} }}
    }}
}}
",
        targets.join(", ")
    )
}

/// lb-agent's configuration: one TCP VIP on port [`PORT`], direct routing (the normal
/// mode: the backends hold the VIP on `lo`), the three nginx backends, health checks off
/// (every target is usable at once; checks cost nothing measurable but would add a wait
/// for their thresholds at every start).
pub fn agent_config(vip: Ipv4Addr) -> String {
    let mut s = format!(
        "# lb HTTP benchmark: generated, removed after the run.
[agent]
flow_table_entries = 65536

[[vip]]
name = \"http\"
address = \"{vip}\"
port = {PORT}
protocol = \"tcp\"
mode = \"dr\"
ring_size = 16381
target_group = \"nginx\"

[[target_group]]
name = \"nginx\"
"
    );
    for i in 0..BACKENDS {
        s.push_str(&format!(
            "\n[[target_group.target]]\naddress = \"{}\"\n",
            backend(i)
        ));
    }
    s.push_str("\n[target_group.health_check]\nenabled = false\n");
    s
}

/// Starts `n` in its backend's namespace `ns` with its files in `dir`, and waits until
/// it accepts connections (from `lb`) on the backend's own address.
pub fn start_nginx(n: &Nginx, ns: &Ns, lb: &Ns, dir: &Path) -> Result<ChildGuard> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_config(n, dir)?)
        .with_context(|| format!("writing {}", conf.display()))?;
    let (conf, prefix) = (path_str(&conf)?, path_str(dir)?);
    let error_log = format!("{prefix}/error.log");
    let mut cmd = ns.command("nginx", &["-p", prefix, "-e", &error_log, "-c", conf]);
    cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
    let mut child = ChildGuard::new(
        cmd.spawn()
            .context("starting nginx (is nginx-light installed?)")?,
        format!("nginx in {} on :{}", ns.name, n.port),
    );
    wait_listening(lb, n.addr(), &mut child, || {
        std::fs::read_to_string(&error_log).unwrap_or_default()
    })?;
    Ok(child)
}

/// Starts HAProxy in `ns` on `listen` and waits until it accepts connections.
pub fn start_haproxy(ns: &Ns, listen: SocketAddr, dir: &RunDir) -> Result<ChildGuard> {
    let conf = dir.write("haproxy.cfg", &haproxy_config(listen))?;
    // -db: stay in the foreground, so the guard's SIGTERM stops it.
    let mut cmd = ns.command("haproxy", &["-db", "-f", path_str(&conf)?]);
    cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
    let mut child = ChildGuard::new(
        cmd.spawn().context("starting haproxy")?,
        format!("haproxy in {}", ns.name),
    );
    wait_listening(ns, listen, &mut child, String::new)?;
    Ok(child)
}

/// Waits up to 5 s until `addr` accepts a connection made from `from`; fails early if
/// `child` exits, with `log()` in the message.
fn wait_listening(
    from: &Ns,
    addr: SocketAddr,
    child: &mut ChildGuard,
    log: impl Fn() -> String,
) -> Result<()> {
    let mut exited = None;
    let up = wait_until(Duration::from_secs(5), || {
        if let Ok(Some(status)) = child.try_wait() {
            exited = Some(status);
            return true;
        }
        from.enter(|| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok())
            .unwrap_or(false)
    });
    if let Some(status) = exited {
        bail!("exited ({status}) before listening on {addr}: {}", log());
    }
    ensure!(up, "not listening on {addr} after 5 s: {}", log());
    Ok(())
}

/// One `GET path` on a new connection to `addr`, from the calling thread's namespace:
/// the status line and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(String, String)> {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("connecting to {addr}"))?;
    c.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: lb-bench\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    c.read_to_string(&mut response)
        .with_context(|| format!("reading the response from {addr}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("malformed response from {addr}: {response:?}"))?;
    let status = head.lines().next().unwrap_or_default().to_owned();
    Ok((status, body.to_owned()))
}

/// `n` requests on new connections from `client` to `addr`: how many each backend
/// answered. Fails at the first request that does not get a 200 naming a backend.
pub fn probe(client: &Ns, addr: SocketAddr, n: usize) -> Result<[u64; BACKENDS]> {
    client.enter(|| -> Result<[u64; BACKENDS]> {
        let mut answered = [0; BACKENDS];
        for k in 0..n {
            let (status, body) =
                http_get(addr, "/").with_context(|| format!("probe {} of {n}", k + 1))?;
            ensure!(
                status.starts_with("HTTP/1.1 200"),
                "probe {} of {n} to {addr}: {status}",
                k + 1
            );
            let i = backend_index(&body)
                .with_context(|| format!("probe to {addr}: unexpected body {body:?}"))?;
            answered[i] += 1;
        }
        Ok(answered)
    })?
}

/// Requests the nginx instances `of` have served so far (`stub_status`), read from
/// `lb`, added up per backend. Each reading counts itself once.
pub fn served(lb: &Ns, of: &[Nginx]) -> Result<[u64; BACKENDS]> {
    lb.enter(|| -> Result<[u64; BACKENDS]> {
        let mut counts = [0; BACKENDS];
        for n in of {
            let (status, body) = http_get(n.addr(), STATUS_PATH)?;
            ensure!(
                status.starts_with("HTTP/1.1 200"),
                "nginx status of {}: {status}",
                n.addr()
            );
            counts[n.backend] += parse_stub_status(&body)
                .with_context(|| format!("nginx status of {}: {body:?}", n.addr()))?;
        }
        Ok(counts)
    })?
}

/// The `requests` figure of nginx's `stub_status` page:
/// ```text
/// Active connections: 1
/// server accepts handled requests
///  10 10 1234
/// Reading: 0 Writing: 1 Waiting: 0
/// ```
fn parse_stub_status(body: &str) -> Option<u64> {
    let mut lines = body.lines();
    lines.find(|l| l.trim() == "server accepts handled requests")?;
    lines.next()?.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stub_status() {
        let body = "Active connections: 1 \nserver accepts handled requests\n 10 10 1234 \nReading: 0 Writing: 1 Waiting: 0 \n";
        assert_eq!(parse_stub_status(body), Some(1234));
        assert_eq!(parse_stub_status("Active connections: 1\n"), None);
    }

    #[test]
    fn configurations_name_every_backend() -> Result<()> {
        let vip = Ipv4Addr::new(198, 18, 200, 1);
        let nft = nft_rules(vip);
        assert!(nft.contains(
            "numgen random mod 3 map { 0 : 198.18.11.2, 1 : 198.18.12.2, 2 : 198.18.13.2 }"
        ));
        let ha = haproxy_config(SocketAddr::new(Ipv4Addr::new(198, 18, 10, 1).into(), PORT));
        assert!(ha.contains("bind 198.18.10.1:8000") && ha.contains("server be2 198.18.13.2:8000"));
        let agent = agent_config(vip);
        assert_eq!(agent.matches("[[target_group.target]]").count(), BACKENDS);
        assert!(agent.contains("mode = \"dr\"") && agent.contains("port = 8000"));
        let n = Nginx {
            backend: 1,
            port: PORT,
            workers: 2,
        };
        let nginx = nginx_config(&n, Path::new("/tmp/x"))?;
        assert!(
            nginx.contains("return 200 \"be1\\n\";") && nginx.contains("pid /tmp/x/nginx.pid;")
        );
        Ok(())
    }
}
