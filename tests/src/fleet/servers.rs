//! The fleet's backend servers: HTTP on port 80 (one response per connection, the body
//! naming the backend) and the line protocol on port 8080 (each line answered with the
//! backend's name, the connection kept open), both on `[::]`, so one listener serves
//! every VIP (v4 and v6, direct routing and tunnel) and the health checks on the
//! backend's own addresses. Replies leave from the address the client connected to
//! (the VIP): direct server return through the router.

use std::{
    net::{Ipv6Addr, SocketAddr, TcpListener},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
};

use crate::{
    agentnet::{accept_loop, serve_http, serve_lines},
    netns::Ns,
};

/// The HTTP port.
pub const HTTP_PORT: u16 = 80;
/// The line-protocol port (long-lived connections).
pub const LINE_PORT: u16 = 8080;

/// One backend's servers, stopped and joined when dropped.
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    /// Starts both servers of backend `be<index>` in `ns`.
    pub fn start(ns: &Ns, index: usize) -> anyhow::Result<Self> {
        let name = format!("be{index}");
        let (http, lines) = ns.enter(|| -> std::io::Result<(TcpListener, TcpListener)> {
            let http = TcpListener::bind(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), HTTP_PORT))?;
            let lines =
                TcpListener::bind(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), LINE_PORT))?;
            http.set_nonblocking(true)?;
            lines.set_nonblocking(true)?;
            Ok((http, lines))
        })??;
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let (st, n) = (stop.clone(), name.clone());
        threads.push(std::thread::spawn(move || {
            accept_loop(&http, &st, |c| serve_http(c, &n, "200 OK"));
        }));
        let st = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut conns = Vec::new();
            accept_loop(&lines, &st, |c| {
                let (n, st) = (name.clone(), st.clone());
                conns.push(std::thread::spawn(move || serve_lines(c, &n, &st)));
            });
            for c in conns {
                // A panicked connection thread already reported itself.
                let _ = c.join();
            }
        }));
        Ok(Self { stop, threads })
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
