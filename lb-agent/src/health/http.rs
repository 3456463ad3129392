//! HTTP and HTTPS checks: one `GET` over HTTP/1.1 on a connection of our own, closed after
//! the response (`Connection: close`), as NLB's checks are.
//!
//! HTTPS does not verify the target's certificate, as NLB does not: targets are addressed
//! by IP and seldom hold a certificate for it, and the check asks whether the service
//! answers, not who it is. The handshake's signatures are still checked, so the TLS stack
//! is exercised as a client would. No SNI is sent (there is no name, only an address).

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::Duration,
};

use http_body_util::{BodyExt, Empty};
use hyper::{header, Request};
use hyper_util::rt::TokioIo;
use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{ring, CryptoProvider},
    pki_types::{CertificateDer, ServerName, UnixTime},
    ClientConfig, DigitallySignedStruct, SignatureScheme,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

use super::{
    probe::{connect_failure, BODY_LIMIT, USER_AGENT},
    ProbeOutcome, Reason,
};
use crate::config::StatusMatcher;

/// `GET path` from `addr` (over TLS when `tls`); healthy when the status matches and the
/// body (its first [`BODY_LIMIT`] bytes) contains `body_contains`.
pub(super) async fn check(
    addr: SocketAddr,
    tls: bool,
    path: &str,
    matcher: &StatusMatcher,
    body_contains: Option<&str>,
) -> ProbeOutcome {
    let stream = match TcpStream::connect(addr).await {
        Ok(stream) => stream,
        Err(error) => return connect_failure(&error),
    };
    if !tls {
        return exchange(stream, addr, path, matcher, body_contains).await;
    }
    let config = match client_config() {
        Ok(config) => config,
        Err(error) => return internal(format!("cannot set up TLS: {error}")),
    };
    let connector = tokio_rustls::TlsConnector::from(config);
    match connector
        .connect(ServerName::IpAddress(addr.ip().into()), stream)
        .await
    {
        Ok(stream) => exchange(stream, addr, path, matcher, body_contains).await,
        Err(error) => ProbeOutcome::failure(
            Reason::FailedHealthChecks,
            format!("TLS handshake failed: {error}"),
            Duration::ZERO,
        ),
    }
}

fn internal(detail: String) -> ProbeOutcome {
    ProbeOutcome::failure(Reason::InternalError, detail, Duration::ZERO)
}

fn broken(error: &hyper::Error) -> ProbeOutcome {
    // hyper's own message is generic ("connection error"); its cause says what happened
    // ("Connection reset by peer").
    let cause = std::error::Error::source(error).map_or_else(String::new, |c| format!(": {c}"));
    ProbeOutcome::failure(
        Reason::FailedHealthChecks,
        format!("HTTP exchange failed: {error}{cause}"),
        Duration::ZERO,
    )
}

/// The request and response on an established connection.
async fn exchange<IO>(
    io: IO,
    addr: SocketAddr,
    path: &str,
    matcher: &StatusMatcher,
    body_contains: Option<&str>,
) -> ProbeOutcome
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let request = match Request::get(path)
        .header(header::HOST, addr.to_string())
        .header(header::USER_AGENT, USER_AGENT)
        .header(header::CONNECTION, "close")
        .body(Empty::<&'static [u8]>::new())
    {
        Ok(request) => request,
        Err(error) => return internal(format!("bad request for path {path:?}: {error}")),
    };
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(io)).await {
            Ok(parts) => parts,
            Err(error) => return broken(&error),
        };
    let work = async {
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let Some(needle) = body_contains else {
            return Ok((status, None));
        };
        let mut body = response.into_body();
        let mut seen = Vec::new();
        while seen.len() < BODY_LIMIT {
            let Some(frame) = body.frame().await else {
                break;
            };
            if let Some(data) = frame?.data_ref() {
                let room = BODY_LIMIT - seen.len();
                seen.extend_from_slice(&data[..data.len().min(room)]);
            }
        }
        let found = contains(&seen, needle.as_bytes());
        Ok::<_, hyper::Error>((status, Some(found)))
    };
    // The connection future does the socket I/O; it is polled here alongside the request
    // rather than spawned, so that a probe dropped on timeout leaves nothing behind.
    tokio::pin!(work, connection);
    let mut connection_done = false;
    let result = loop {
        tokio::select! {
            result = &mut work => break result,
            result = &mut connection, if !connection_done => {
                connection_done = true;
                if let Err(error) = result {
                    // The request sees the same failure; report it from there.
                    tracing::trace!(%addr, %error, "health-check connection ended");
                }
            }
        }
    };
    match result {
        Err(error) => broken(&error),
        Ok((status, _)) if !matcher.matches(status) => ProbeOutcome::failure(
            Reason::ResponseCodeMismatch,
            format!("HTTP {status} not in {matcher}"),
            Duration::ZERO,
        ),
        Ok((status, Some(false))) => ProbeOutcome::failure(
            Reason::ResponseCodeMismatch,
            format!(
                "HTTP {status} but the body lacks {:?}",
                body_contains.unwrap_or_default()
            ),
            Duration::ZERO,
        ),
        Ok((status, _)) => ProbeOutcome::success(format!("HTTP {status}"), Duration::ZERO),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

/// The TLS client configuration every HTTPS check shares (built once: it is not cheap).
fn client_config() -> Result<Arc<ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(ring::default_provider());
            let config = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|error| error.to_string())?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

/// Accepts any certificate, but still checks the handshake signatures with it.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;
    use crate::health::{probe, CheckKind, CheckSpec, TargetKey};

    fn local() -> TargetKey {
        TargetKey::new("web", "127.0.0.1".parse().expect("an address"))
    }

    fn http_spec(port: u16, body_contains: Option<&str>, tls: bool) -> CheckSpec {
        let path = "/health".to_owned();
        let matcher = StatusMatcher::parse("200-399").expect("a matcher");
        let body_contains = body_contains.map(str::to_owned);
        let kind = if tls {
            CheckKind::Https {
                path,
                matcher,
                body_contains,
            }
        } else {
            CheckKind::Http {
                path,
                matcher,
                body_contains,
            }
        };
        CheckSpec {
            kind,
            port,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            healthy_threshold: 2,
            unhealthy_threshold: 2,
        }
    }

    /// Reads a request head from `stream` and returns it.
    async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&head).into_owned()
    }

    /// Answers every connection with `status` and `body`; sends each request head seen.
    async fn http_server(
        status: u16,
        body: &'static str,
    ) -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let (heads, seen) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let head = read_head(&mut stream).await;
                let response = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(response.as_bytes()).await.expect("write");
                heads.send(head).expect("test alive");
            }
        });
        (port, seen)
    }

    #[tokio::test]
    async fn http_200_is_healthy_and_the_request_is_well_formed() {
        let (port, mut heads) = http_server(200, "ok").await;
        let outcome = probe(&local(), &http_spec(port, None, false)).await;
        assert!(outcome.healthy, "{outcome:?}");
        assert_eq!(outcome.detail, "HTTP 200");
        let head = heads.recv().await.expect("a request").to_lowercase();
        assert!(head.starts_with("get /health http/1.1\r\n"), "{head}");
        assert!(
            head.contains(&format!("host: 127.0.0.1:{port}\r\n")),
            "{head}"
        );
        assert!(head.contains("user-agent: lb-health-check/"), "{head}");
        assert!(head.contains("connection: close\r\n"), "{head}");
    }

    #[tokio::test]
    async fn http_500_is_a_response_code_mismatch() {
        let (port, _heads) = http_server(500, "oops").await;
        let outcome = probe(&local(), &http_spec(port, None, false)).await;
        assert_eq!(outcome.reason, Some(Reason::ResponseCodeMismatch));
        assert_eq!(outcome.detail, "HTTP 500 not in 200-399");
    }

    #[tokio::test]
    async fn http_body_must_contain_the_text() {
        let (port, _heads) = http_server(200, "status: READY").await;
        let present = probe(&local(), &http_spec(port, Some("READY"), false)).await;
        assert!(present.healthy, "{present:?}");
        let missing = probe(&local(), &http_spec(port, Some("LIVE"), false)).await;
        assert_eq!(missing.reason, Some(Reason::ResponseCodeMismatch));
        assert_eq!(missing.detail, "HTTP 200 but the body lacks \"LIVE\"");
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let keep = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                open.push(stream);
            }
        });
        let spec = http_spec(port, None, false);
        let started = Instant::now();
        let outcome = probe(&local(), &spec).await;
        assert!(started.elapsed() < spec.timeout + Duration::from_millis(200));
        assert_eq!(outcome.reason, Some(Reason::Timeout));
        assert_eq!(outcome.detail, "timed out after 500ms");
        keep.abort();
    }

    #[tokio::test]
    async fn https_accepts_a_self_signed_certificate() {
        let certified =
            rcgen::generate_simple_self_signed(vec!["target.invalid".to_owned()]).expect("cert");
        let cert = certified.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::try_from(certified.key_pair.serialize_der())
            .expect("a key");
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(vec![cert], key)
                .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let Ok(mut stream) = acceptor.accept(stream).await else {
                    continue;
                };
                read_head(&mut stream).await;
                let response = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure";
                stream.write_all(response.as_bytes()).await.expect("write");
                stream.shutdown().await.expect("close_notify");
            }
        });
        let outcome = probe(&local(), &http_spec(port, Some("secure"), true)).await;
        assert!(outcome.healthy, "{outcome:?}");
        // A plain-HTTP check of a TLS port fails rather than hanging or passing.
        let plain = probe(&local(), &http_spec(port, None, false)).await;
        assert!(!plain.healthy);
    }

    #[test]
    fn substring_search() {
        assert!(contains(b"abc", b""));
        assert!(contains(b"xxabcxx", b"abc"));
        assert!(!contains(b"ab", b"abc"));
    }
}
