//! The `winrm` transport: Windows endpoints over WS-Management (MS-WSMV).
//!
//! A session holds one keep-alive connection (NTLM binds to it) and one
//! remote cmd shell, created when the session opens and reused for every
//! step; both are re-made when the endpoint dropped them (an idle timeout, a
//! reboot). A step is a Command in that shell: PowerShell goes as
//! `powershell -EncodedCommand`, or, past the 8191-character command-line
//! limit, as an uploaded `.ps1` file; stdin goes by Send; output comes by
//! Receive, polled again whenever the service answers with its
//! operation-timeout fault. Timeouts are enforced here by giving each Receive
//! an OperationTimeout that ends no later than the step's deadline, never by
//! abandoning a request halfway (sealed answers must be read in order), and a
//! timed-out command is terminated (Signal) and its shell deleted.
//!
//! Everything mutable sits behind one async mutex, so a reboot can replace the
//! connection and shell under a `&self` session.
//!
//! The wire pieces live in submodules: [`wsman`] (envelopes and answers),
//! [`ntlm`] (handshake and sealing), [`http`] (connection and TLS) and
//! [`clixml`] (PowerShell's error stream).

pub mod clixml;
pub mod http;
pub mod ntlm;
mod ops;
pub mod wsman;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::sync::Mutex;

use super::{
    Command, Connector, Execution, OutputSink, Script, Secret, Session, Target, TransportError,
    UploadSource, WinrmAuth, wrapper,
};
use http::{Connection, HttpError};
use ntlm::NtlmContext;
use wsman::Fault;

/// OperationTimeout of a Receive when the step has no (nearer) deadline.
const RECEIVE_WAIT: Duration = Duration::from_secs(20);
/// How long any other request may take to be answered.
const REQUEST_WAIT: Duration = Duration::from_secs(60);

/// Opens [`WinrmSession`]s.
#[derive(Debug, Default, Clone)]
pub struct WinrmConnector {
    unsealed_http: bool,
}

impl WinrmConnector {
    pub fn new() -> Self {
        WinrmConnector::default()
    }

    /// Tests only: NTLM over plain HTTP without message encryption, which a
    /// default Windows endpoint refuses (and so must the test endpoint).
    pub fn with_unsealed_http_for_tests(mut self, unsealed: bool) -> Self {
        self.unsealed_http = unsealed;
        self
    }
}

/// Where and how to reach one host; fixed for the session's life.
struct Endpoint {
    host: String,
    address: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    auth: WinrmAuth,
    user: String,
    password: Secret,
    seal: bool,
    url: String,
    connect_timeout: Duration,
    reboot_command: Option<String>,
    temp_prefix: String,
}

/// An authenticated connection.
struct Link {
    http: Connection,
    /// The NTLM context when bodies are sealed (NTLM over plain HTTP).
    seal: Option<NtlmContext>,
    /// The Basic `Authorization` value, sent with every request.
    basic: Option<Secret>,
    /// A request is on the wire. Still set when the next call comes, it
    /// means a caller was cancelled halfway (its future dropped): the answer
    /// was never read, so the connection (and its sealing state) is unusable.
    in_flight: bool,
}

#[derive(Default)]
struct State {
    link: Option<Link>,
    shell: Option<String>,
}

pub struct WinrmSession {
    ep: Arc<Endpoint>,
    state: Mutex<State>,
    /// False for the stand-in that deletes a dropped session's shell, so
    /// that dropping the stand-in (say, with the runtime) spawns nothing.
    clean_up_on_drop: bool,
}

/// How a WS-Management request failed.
enum CallError {
    /// The service answered with a SOAP fault.
    Fault(Fault),
    /// The connection broke or an answer never came: the outcome is unknown.
    Broken(String),
    /// Anything else, already in the operator's words.
    Transport(TransportError),
}

#[async_trait]
impl Connector for WinrmConnector {
    async fn connect(&self, target: &Target) -> Result<Box<dyn Session>, TransportError> {
        let ep = self.endpoint(target)?;
        let session = WinrmSession {
            ep: Arc::new(ep),
            state: Mutex::new(State::default()),
            clean_up_on_drop: true,
        };
        {
            let mut st = session.state.lock().await;
            session.shell(&mut st).await?;
        }
        Ok(Box::new(session))
    }
}

impl WinrmConnector {
    fn endpoint(&self, target: &Target) -> Result<Endpoint, TransportError> {
        let settings = &target.winrm;
        let host = target.name.clone();
        let fail = |msg: String| TransportError::Unreachable(format!("host {host}: {msg}"));
        if settings.auth == WinrmAuth::Basic && !settings.tls {
            return Err(fail(
                "WinRM Basic authentication over plain HTTP would send the password in clear; \
                 use HTTPS (winrm.tls: true, port 5986) or NTLM"
                    .into(),
            ));
        }
        let user = target.user.clone().ok_or_else(|| {
            fail(
                "no user for WinRM: set `user` in the inventory (DOMAIN\\user or user@domain)"
                    .into(),
            )
        })?;
        let password = settings.password.clone().ok_or_else(|| {
            fail("no WinRM password: set winrm.password_secret in the inventory".into())
        })?;
        let tls = if settings.tls {
            if settings.insecure_skip_verify {
                tracing::warn!(
                    host = %host,
                    "WinRM certificate verification is off (insecure_skip_verify): anyone on the path can read the password and commands"
                );
            }
            Some(http::tls_config(settings).map_err(fail)?)
        } else {
            None
        };
        let port = target.port.unwrap_or(settings.port);
        let scheme = if settings.tls { "https" } else { "http" };
        let bracketed = if target.address.contains(':') {
            format!("[{}]", target.address)
        } else {
            target.address.clone()
        };
        let temp_prefix = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        Ok(Endpoint {
            url: format!("{scheme}://{bracketed}:{port}/wsman"),
            address: target.address.clone(),
            port,
            tls,
            auth: settings.auth,
            seal: !settings.tls && settings.auth == WinrmAuth::Ntlm && !self.unsealed_http,
            user,
            password,
            connect_timeout: target.connect_timeout,
            reboot_command: target.reboot_command.clone(),
            temp_prefix,
            host,
        })
    }
}

impl WinrmSession {
    fn unreachable(&self, msg: impl std::fmt::Display) -> TransportError {
        TransportError::Unreachable(format!("host {}: {msg}", self.ep.host))
    }

    fn auth_name(&self) -> &'static str {
        match self.ep.auth {
            WinrmAuth::Basic => "Basic",
            WinrmAuth::Ntlm => "NTLM",
        }
    }

    fn auth_failed(&self) -> TransportError {
        self.unreachable(format!(
            "WinRM refused the login of {:?} with {} (HTTP 401): wrong user name or password, \
             or {} authentication is not enabled on the endpoint \
             (winrm get winrm/config/service/auth)",
            self.ep.user,
            self.auth_name(),
            self.auth_name()
        ))
    }

    /// Connects and authenticates.
    async fn open_link(&self) -> Result<Link, TransportError> {
        let ep = &self.ep;
        let mut http = Connection::open(&ep.address, ep.port, ep.tls.as_ref(), ep.connect_timeout)
            .await
            .map_err(|e| match e {
                HttpError::Connect(m) | HttpError::Broken(m) => self.unreachable(m),
            })?;
        if ep.auth == WinrmAuth::Basic {
            let token = B64.encode(format!("{}:{}", ep.user, ep.password.expose()));
            return Ok(Link {
                http,
                seal: None,
                basic: Some(Secret::new(format!("Basic {token}"))),
                in_flight: false,
            });
        }
        let mut ctx = NtlmContext::new(&ep.user, ep.password.expose(), &ep.address)
            .map_err(|m| self.unreachable(m))?;
        let soap = "application/soap+xml;charset=UTF-8";
        let lost = |e: HttpError| match e {
            HttpError::Connect(m) | HttpError::Broken(m) => {
                self.unreachable(format!("during NTLM authentication: {m}"))
            }
        };
        let negotiate = ctx.step(None).map_err(|m| self.unreachable(m))?;
        let auth = format!("Negotiate {}", B64.encode(negotiate));
        let reply = http
            .post(Vec::new(), soap, Some(&auth), ep.connect_timeout)
            .await
            .map_err(lost)?;
        let challenge = reply
            .www_authenticate
            .iter()
            .find_map(|h| {
                let (scheme, token) = h.split_once(' ')?;
                (scheme.eq_ignore_ascii_case("Negotiate") || scheme.eq_ignore_ascii_case("NTLM"))
                    .then(|| B64.decode(token.trim()).ok())
                    .flatten()
            })
            .filter(|_| reply.status == 401);
        let Some(challenge) = challenge else {
            return Err(if reply.status == 401 {
                self.unreachable(format!(
                    "the endpoint does not offer NTLM (Negotiate) authentication (it offers: {}); \
                     enable it, or use Basic over HTTPS",
                    reply.www_authenticate.join(", ")
                ))
            } else {
                self.unreachable(format!(
                    "unexpected HTTP {} to the NTLM negotiation: is this a WinRM listener?",
                    reply.status
                ))
            });
        };
        let authenticate = ctx
            .step(Some(&challenge))
            .map_err(|m| self.unreachable(m))?;
        let auth = format!("Negotiate {}", B64.encode(authenticate));
        let reply = http
            .post(Vec::new(), soap, Some(&auth), ep.connect_timeout)
            .await
            .map_err(lost)?;
        match reply.status {
            200..=299 => Ok(Link {
                http,
                seal: ep.seal.then_some(ctx),
                basic: None,
                in_flight: false,
            }),
            401 => Err(self.auth_failed()),
            other => Err(self.unreachable(format!(
                "unexpected HTTP {other} at the end of NTLM authentication"
            ))),
        }
    }

    /// The live connection, made (and authenticated) if there is none.
    async fn link<'s>(&self, st: &'s mut State) -> Result<&'s mut Link, TransportError> {
        if st
            .link
            .as_ref()
            .is_some_and(|l| l.in_flight || l.http.is_closed())
        {
            st.link = None;
        }
        if st.link.is_none() {
            st.link = Some(self.open_link().await?);
        }
        Ok(st.link.as_mut().expect("just made"))
    }

    /// Sends one request and returns the answer's envelope.
    async fn call(
        &self,
        st: &mut State,
        request: wsman::Request,
        wait: Duration,
        may_retry: bool,
    ) -> Result<Vec<u8>, CallError> {
        let reused = st
            .link
            .as_ref()
            .is_some_and(|l| !l.in_flight && !l.http.is_closed());
        let result = self.call_once(st, &request, wait).await;
        match result {
            Err(CallError::Broken(_)) if reused && may_retry => {
                tracing::debug!(host = %self.ep.host, "WinRM connection went stale; reconnecting");
                self.call_once(st, &request, wait).await
            }
            other => other,
        }
    }

    async fn call_once(
        &self,
        st: &mut State,
        request: &wsman::Request,
        wait: Duration,
    ) -> Result<Vec<u8>, CallError> {
        let link = self.link(st).await.map_err(CallError::Transport)?;
        let (body, content_type) = match &mut link.seal {
            Some(ctx) => (
                ctx.seal(request.body.as_bytes())
                    .map_err(|m| CallError::Transport(TransportError::Other(m)))?,
                ntlm::CONTENT_TYPE,
            ),
            None => (
                request.body.clone().into_bytes(),
                "application/soap+xml;charset=UTF-8",
            ),
        };
        let auth = link.basic.as_ref().map(|s| s.expose().to_string());
        link.in_flight = true;
        let sent = link
            .http
            .post(body, content_type, auth.as_deref(), wait)
            .await;
        link.in_flight = false;
        let reply = match sent {
            Ok(reply) => reply,
            Err(HttpError::Broken(m)) | Err(HttpError::Connect(m)) => {
                st.link = None;
                return Err(CallError::Broken(m));
            }
        };
        let plain = if reply.content_type.starts_with("multipart/encrypted") {
            let unsealed = match &mut link.seal {
                Some(ctx) => ctx.unseal(&reply.body),
                None => Err("an encrypted answer to an unencrypted request".into()),
            };
            match unsealed {
                Ok(plain) => plain,
                Err(m) => {
                    st.link = None;
                    return Err(CallError::Broken(m));
                }
            }
        } else {
            reply.body.to_vec()
        };
        match reply.status {
            200..=299 => Ok(plain),
            401 => {
                st.link = None;
                Err(CallError::Transport(self.auth_failed()))
            }
            status => match wsman::parse_fault(&plain) {
                Some(fault) => Err(CallError::Fault(fault)),
                None => Err(CallError::Transport(TransportError::Other(format!(
                    "host {}: WinRM answered HTTP {status}: {}",
                    self.ep.host,
                    String::from_utf8_lossy(&plain[..plain.len().min(300)]).trim()
                )))),
            },
        }
    }

    /// The shell id, creating the shell if there is none.
    async fn shell(&self, st: &mut State) -> Result<String, TransportError> {
        if let Some(id) = &st.shell {
            return Ok(id.clone());
        }
        let request = wsman::create_shell(&self.ep.url, REQUEST_WAIT.as_secs_f64());
        let answer = self
            .call(st, request, REQUEST_WAIT, true)
            .await
            .map_err(|e| match e {
                CallError::Fault(f) => {
                    self.unreachable(format!("WinRM refused to open a shell: {f}"))
                }
                CallError::Broken(m) => self.unreachable(format!("opening a shell: {m}")),
                CallError::Transport(TransportError::Other(m)) => self.unreachable(m),
                CallError::Transport(t) => t,
            })?;
        let id = wsman::parse_shell_id(&answer)
            .map_err(|m| self.unreachable(format!("opening a shell: {m}")))?;
        st.shell = Some(id.clone());
        Ok(id)
    }

    /// The command line for a script and what goes to its stdin: a fixed
    /// line (PowerShell's bootstrap, cmd.exe reading commands) and the
    /// script by Send, so that no script, and no secret in one, is ever on
    /// the endpoint's command line (see [`wrapper`]).
    fn command_line(&self, command: &Command) -> Result<(String, Vec<u8>), TransportError> {
        match &command.script {
            Script::Cmd(text) => {
                if command.stdin.is_some() {
                    return Err(TransportError::Unsupported(format!(
                        "host {}: a `cmd` step reads its commands from stdin and takes no \
                         stdin data of its own; use `powershell`",
                        self.ep.host
                    )));
                }
                Ok((wrapper::cmd_line("orchestrate"), wrapper::cmd_payload(text)))
            }
            Script::Sh(_) => Err(TransportError::Unsupported(format!(
                "host {}: `sh` steps need a POSIX host; this host is reached over WinRM \
                 (use `powershell` or `cmd`)",
                self.ep.host
            ))),
            Script::PowerShell(text) | Script::Default(text) => Ok((
                wrapper::powershell_line("powershell"),
                wrapper::payload(text, command.stdin.as_deref()),
            )),
        }
    }
}

#[async_trait]
impl Session for WinrmSession {
    async fn execute(
        &self,
        command: &Command,
        sink: Option<OutputSink>,
    ) -> Result<Execution, TransportError> {
        let (line, input) = self.command_line(command)?;
        let powershell = !matches!(command.script, Script::Cmd(_));
        let mut st = self.state.lock().await;
        self.run(
            &mut st,
            &line,
            ops::Stdin::Bytes(&input),
            command.timeout,
            sink,
            powershell,
        )
        .await
    }

    async fn upload(
        &self,
        source: &UploadSource,
        dest: &str,
        _mode: u32,
    ) -> Result<(), TransportError> {
        let mut st = self.state.lock().await;
        self.upload_locked(&mut st, ops::UploadContents::File(source), dest)
            .await
    }

    async fn remove(&self, path: &str) -> Result<(), TransportError> {
        let mut st = self.state.lock().await;
        self.remove_locked(&mut st, path).await
    }

    fn temp_path(&self, name: &str) -> String {
        crate::transport::temp_path(crate::transport::Os::Windows, &self.ep.temp_prefix, name)
    }

    async fn reboot(&self, timeout: Duration) -> Result<(), TransportError> {
        self.reboot_and_wait(timeout).await
    }

    async fn close(&self) {
        let mut st = self.state.lock().await;
        if let Some(shell) = st.shell.take() {
            let request = wsman::delete_shell(&self.ep.url, &shell, 10.0);
            let _ = self
                .call(&mut st, request, Duration::from_secs(10), false)
                .await;
        }
        st.link = None;
    }
}

impl Drop for WinrmSession {
    fn drop(&mut self) {
        // Dropped without close() (a hard cancel): delete the shell, and with
        // it whatever still runs there, on a fresh connection (the old one
        // may have an answer pending), if a runtime is still there to do it.
        if !self.clean_up_on_drop {
            return;
        }
        let shell = match self.state.try_lock() {
            Ok(mut st) => st.shell.take(),
            Err(_) => None,
        };
        let (Some(shell), Ok(runtime)) = (shell, tokio::runtime::Handle::try_current()) else {
            return;
        };
        let orphan = WinrmSession {
            ep: self.ep.clone(),
            state: Mutex::new(State {
                link: None,
                shell: Some(shell),
            }),
            clean_up_on_drop: false,
        };
        runtime.spawn(async move { orphan.close().await });
    }
}
