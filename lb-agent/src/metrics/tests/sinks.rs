//! EMF sinks delivering to local listeners, and the Prometheus endpoint.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream, UdpSocket},
};

use crate::{
    config::EmfOutput,
    metrics::{
        prometheus::Server,
        sink::{Destination, EmfSink},
    },
};

const WAIT: Duration = Duration::from_secs(10);

fn lines(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{{\"doc\":{i}}}")).collect()
}

/// A file path under the temporary directory, removed when dropped.
struct TempPath(PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn file_sink_appends_lines() {
    let path = TempPath(std::env::temp_dir().join(format!(
        "lb-metrics-test-{}-{:?}.log",
        std::process::id(),
        Instant::now()
    )));
    std::fs::write(&path.0, "existing\n").expect("write");
    let sink = EmfSink::start(Destination::File(path.0.clone())).expect("sink");
    sink.send_all(lines(3));
    let want = format!("existing\n{}\n", lines(3).join("\n"));
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(&path.0).unwrap_or_default();
        if text == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "file holds {text:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(sink.dropped(), 0);
}

#[tokio::test]
async fn udp_sink_sends_one_document_per_datagram() {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    let sink = EmfSink::start(Destination::Udp(addr.to_string())).expect("sink");
    sink.send_all(lines(3));
    let mut buf = [0u8; 2048];
    for want in lines(3) {
        let n = tokio::time::timeout(WAIT, socket.recv(&mut buf))
            .await
            .expect("a datagram in time")
            .expect("recv");
        assert_eq!(
            std::str::from_utf8(&buf[..n]),
            Ok(format!("{want}\n").as_str())
        );
    }
    assert_eq!(sink.dropped(), 0);
}

#[tokio::test]
async fn tcp_sink_delivers_lines_and_reconnects() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sink = EmfSink::start(Destination::Tcp(addr.to_string())).expect("sink");
    sink.send_all(lines(2));
    let (stream, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("a connection in time")
        .expect("accept");
    let mut reader = BufReader::new(stream);
    for want in lines(2) {
        let mut line = String::new();
        tokio::time::timeout(WAIT, reader.read_line(&mut line))
            .await
            .expect("a line in time")
            .expect("read");
        assert_eq!(line, format!("{want}\n"));
    }
    // The peer goes away: later lines fail (dropped, counted) until the sink reconnects.
    drop(reader);
    let deadline = Instant::now() + WAIT;
    let stream = loop {
        sink.send("{\"again\":1}".to_owned());
        if let Ok(Ok((stream, _))) =
            tokio::time::timeout(Duration::from_millis(100), listener.accept()).await
        {
            break stream;
        }
        assert!(Instant::now() < deadline, "the sink did not reconnect");
    };
    let mut line = String::new();
    tokio::time::timeout(WAIT, BufReader::new(stream).read_line(&mut line))
        .await
        .expect("a line in time")
        .expect("read");
    assert_eq!(line, "{\"again\":1}\n");
}

#[tokio::test]
async fn tcp_sink_to_nothing_drops_and_counts() {
    // A port with no listener: bind one, note it, close it.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .and_then(|l| l.local_addr())
        .expect("addr");
    let sink = EmfSink::start(Destination::Tcp(addr.to_string())).expect("sink");
    sink.send_all(lines(5));
    let deadline = Instant::now() + WAIT;
    while sink.dropped() < 5 {
        assert!(Instant::now() < deadline, "dropped {}", sink.dropped());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn agent_endpoint_comes_from_the_environment_value() {
    let resolve = |env| Destination::resolve(&EmfOutput::Agent, env);
    assert_eq!(
        resolve(None).ok().flatten(),
        Some(Destination::Tcp("127.0.0.1:25888".to_owned()))
    );
    assert_eq!(
        resolve(Some("udp://10.0.0.5:25888")).ok().flatten(),
        Some(Destination::Udp("10.0.0.5:25888".to_owned()))
    );
    assert_eq!(
        resolve(Some("tcp://[::1]:25888")).ok().flatten(),
        Some(Destination::Tcp("[::1]:25888".to_owned()))
    );
    for bad in ["http://127.0.0.1:25888", "tcp://127.0.0.1", "udp://:1"] {
        let e = resolve(Some(bad)).expect_err(bad).to_string();
        assert!(e.contains("AWS_EMF_AGENT_ENDPOINT"), "{e}");
    }
    assert_eq!(
        Destination::resolve(&EmfOutput::Off, None).ok().flatten(),
        None
    );
    assert_eq!(
        Destination::resolve(&EmfOutput::Udp("h:1".to_owned()), None)
            .ok()
            .flatten(),
        Some(Destination::Udp("h:1".to_owned()))
    );
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .expect("a response in time")
        .expect("read");
    response
}

#[tokio::test]
async fn prometheus_server_serves_metrics_and_404_elsewhere() {
    let page = Arc::new(Mutex::new("# HELP x y\n# TYPE x gauge\nx 1\n".to_owned()));
    let server = Server::start("127.0.0.1:0".parse().expect("addr"), Arc::clone(&page))
        .await
        .expect("server");
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    let r = http_get(addr, "/metrics").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(
        r.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{r}"
    );
    assert!(r.ends_with("x 1\n"), "{r}");
    // The agent replaces the page; the next scrape sees it.
    *page.lock().expect("lock") = "x 2\n".to_owned();
    assert!(http_get(addr, "/metrics").await.ends_with("x 2\n"));
    let r = http_get(addr, "/").await;
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    drop(server);
}

#[test]
fn a_full_queue_drops_and_counts_instead_of_blocking() {
    // A runtime that is never driven: the writer task never runs, so the queue fills.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let sink = EmfSink::start(Destination::Udp("127.0.0.1:9".to_owned())).expect("sink");
    let queue = crate::metrics::sink::QUEUE_LINES;
    sink.send_all(lines(queue));
    assert_eq!(sink.dropped(), 0);
    assert!(!sink.send("one too many".to_owned()));
    sink.send_all(lines(2));
    assert_eq!(sink.dropped(), 3);
}
