//! The fleet's backend servers: HTTP on port 80 (one response per connection, the body
//! naming the backend) and the line protocol on port 8080 (each line answered with the
//! backend's name, the connection kept open), both on `[::]`, so one listener serves
//! every VIP (v4 and v6, direct routing and tunnel) and the health checks on the
//! backend's own addresses. Replies leave from the address the client connected to
//! (the VIP): direct server return through the router.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::netns::Ns;

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
            accept_loop(&http, &st, |c| serve_http(c, &n));
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

fn accept_loop(l: &TcpListener, stop: &AtomicBool, mut serve: impl FnMut(TcpStream)) {
    while !stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((conn, _)) => serve(conn),
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

fn serve_http(conn: TcpStream, name: &str) {
    let served = (|| -> std::io::Result<()> {
        conn.set_nonblocking(false)?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut writer = conn.try_clone()?;
        let mut reader = BufReader::new(conn);
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" {
                break;
            }
        }
        let body = format!("{name}\n");
        write!(
            writer,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    })();
    match served {
        // TCP health checks connect and close or reset without a request.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => eprintln!("{name}: HTTP request failed: {e}"),
        Ok(()) => {}
    }
}

fn serve_lines(conn: TcpStream, name: &str, stop: &AtomicBool) {
    let served = (|| -> std::io::Result<()> {
        conn.set_nonblocking(false)?;
        // Wakes up to look at the stop flag.
        conn.set_read_timeout(Some(Duration::from_millis(200)))?;
        let mut writer = conn.try_clone()?;
        let mut reader = BufReader::new(conn);
        let mut line = String::new();
        while !stop.load(Ordering::Relaxed) {
            match reader.read_line(&mut line) {
                Ok(0) => return Ok(()),
                // A whole line: answer it. (A partial one stays in `line` until the rest
                // arrives after a timeout.)
                Ok(_) if line.ends_with('\n') => {
                    line.clear();
                    writeln!(writer, "{name}")?;
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })();
    match served {
        // Health checks on port 8080 connect and close; a client the test gave up on
        // resets. Neither is the server's failure.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => eprintln!("{name}: line connection failed: {e}"),
        Ok(()) => {}
    }
}
