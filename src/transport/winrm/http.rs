//! One keep-alive HTTP/1.1 connection to a WinRM listener, plain or TLS.
//!
//! NTLM authenticates a TCP connection, not a request, and message sealing
//! keys live with it, so a pooled client that may switch sockets under us
//! would break both. hyper's low-level `client::conn::http1` gives exactly one
//! connection that we own; when it dies, the session makes a new one and
//! authenticates again.
//!
//! TLS is rustls. Certificates are checked against the system roots or the
//! inventory's CA file; a failure names the certificate's subject and issuer,
//! which is what an administrator needs to fix it.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;

use crate::transport::WinrmSettings;

/// An answer: status, headers we care about, whole body.
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub www_authenticate: Vec<String>,
    pub body: Bytes,
}

/// Why a request failed below HTTP.
#[derive(Debug)]
pub enum HttpError {
    /// Could not connect (TCP or TLS); the text says why.
    Connect(String),
    /// The connection broke or the answer did not come in time.
    Broken(String),
}

pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host_header: String,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Connection {
    /// Connects to `addr`, with TLS when `tls` is given, within `timeout`.
    pub async fn open(
        addr: &str,
        port: u16,
        tls: Option<&Arc<rustls::ClientConfig>>,
        timeout: Duration,
    ) -> Result<Connection, HttpError> {
        let place = if addr.contains(':') {
            format!("[{addr}]:{port}")
        } else {
            format!("{addr}:{port}")
        };
        let connect = async {
            let tcp = match addr.parse::<std::net::IpAddr>() {
                Ok(ip) => TcpStream::connect(SocketAddr::new(ip, port)).await,
                Err(_) => TcpStream::connect((addr, port)).await,
            }
            .map_err(|e| HttpError::Connect(describe_io(&place, &e)))?;
            let _ = tcp.set_nodelay(true);
            let host_header = place.clone();
            match tls {
                None => Self::handshake(TokioIo::new(tcp), host_header).await,
                Some(config) => {
                    let name = ServerName::try_from(addr.to_string()).map_err(|_| {
                        HttpError::Connect(format!("{addr:?} is not a valid host name for TLS"))
                    })?;
                    let stream = tokio_rustls::TlsConnector::from(config.clone())
                        .connect(name, tcp)
                        .await
                        .map_err(|e| {
                            HttpError::Connect(format!(
                                "TLS handshake with {place} failed: {}",
                                describe_tls(&e)
                            ))
                        })?;
                    Self::handshake(TokioIo::new(stream), host_header).await
                }
            }
        };
        match tokio::time::timeout(timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::Connect(format!(
                "connecting to {place} timed out after {}s (host down, or a firewall drops WinRM traffic)",
                timeout.as_secs_f32()
            ))),
        }
    }

    async fn handshake<T>(io: TokioIo<T>, host_header: String) -> Result<Connection, HttpError>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| HttpError::Connect(format!("HTTP handshake failed: {e}")))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Connection {
            sender,
            host_header,
            driver,
        })
    }

    /// Whether the far side closed the connection (or it broke).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// POSTs `body` to `/wsman` and reads the whole answer within `timeout`.
    pub async fn post(
        &mut self,
        body: Vec<u8>,
        content_type: &str,
        authorization: Option<&str>,
        timeout: Duration,
    ) -> Result<Reply, HttpError> {
        let mut request = hyper::Request::post("/wsman")
            .header(hyper::header::HOST, &self.host_header)
            .header(hyper::header::USER_AGENT, "orchestrate WinRM client")
            .header(hyper::header::CONTENT_LENGTH, body.len())
            .header(hyper::header::CONTENT_TYPE, content_type);
        if let Some(value) = authorization {
            request = request.header(hyper::header::AUTHORIZATION, value);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| HttpError::Broken(format!("cannot build the request: {e}")))?;
        let exchange = async {
            self.sender
                .ready()
                .await
                .map_err(|e| HttpError::Broken(e.to_string()))?;
            let response = self
                .sender
                .send_request(request)
                .await
                .map_err(|e| HttpError::Broken(e.to_string()))?;
            let status = response.status().as_u16();
            let header = |name| {
                response
                    .headers()
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok().map(str::to_string))
                    .collect::<Vec<_>>()
            };
            let content_type = header(hyper::header::CONTENT_TYPE).join(", ");
            let www_authenticate = header(hyper::header::WWW_AUTHENTICATE);
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| HttpError::Broken(e.to_string()))?
                .to_bytes();
            Ok(Reply {
                status,
                content_type,
                www_authenticate,
                body,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(HttpError::Broken(format!(
                    "no answer within {}s",
                    timeout.as_secs()
                )))
            })
    }
}

fn describe_io(place: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => format!(
            "connection to {place} refused: is the WinRM listener running on that port (winrm quickconfig) and the firewall open?"
        ),
        _ => format!("cannot connect to {place}: {e}"),
    }
}

/// A TLS failure in words: ours (with the certificate's names) when the
/// certificate did not verify, rustls' otherwise.
fn describe_tls(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(why)))) => {
            why.to_string()
        }
        Some(other) => other.to_string(),
        None => e.to_string(),
    }
}

/// The TLS settings for one host, from its WinRM settings.
pub fn tls_config(settings: &WinrmSettings) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = if settings.insecure_skip_verify {
        Arc::new(NoVerification(provider))
    } else {
        let roots = match &settings.ca_file {
            Some(path) => {
                let mut roots = RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
                for cert in certs {
                    let cert = cert.map_err(|e| format!("the CA file {}: {e}", path.display()))?;
                    roots.add(cert).map_err(|e| {
                        format!(
                            "the CA file {} holds a bad certificate: {e}",
                            path.display()
                        )
                    })?;
                }
                if roots.is_empty() {
                    return Err(format!(
                        "the CA file {} holds no PEM certificate",
                        path.display()
                    ));
                }
                Arc::new(roots)
            }
            None => system_roots(),
        };
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| format!("TLS setup: {e}"))?;
        Arc::new(NamingVerifier(inner))
    };
    Ok(Arc::new(
        builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    ))
}

fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            Arc::new(roots)
        })
        .clone()
}

/// The subject and issuer of a DER certificate, for error messages.
fn names(cert: &CertificateDer<'_>) -> String {
    match x509_parser::parse_x509_certificate(cert.as_ref()) {
        Ok((_, parsed)) => format!(
            "subject \"{}\", issuer \"{}\"",
            parsed.subject(),
            parsed.issuer()
        ),
        Err(_) => "a certificate that cannot be parsed".into(),
    }
}

#[derive(Debug)]
struct CertFailure(String);

impl std::fmt::Display for CertFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CertFailure {}

/// The standard WebPKI check, whose failures name the certificate.
#[derive(Debug)]
struct NamingVerifier(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for NamingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|e| {
                let why = match &e {
                    rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
                        "it is not signed by a trusted CA (name the CA in winrm.ca_file)".into()
                    }
                    other => other.to_string(),
                };
                rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                    CertFailure(format!(
                        "the certificate does not verify: {why}; {}",
                        names(end_entity)
                    )),
                ))))
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `insecure_skip_verify`: any certificate is accepted (the handshake's
/// signatures are still checked, so the peer holds the certificate's key).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
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
