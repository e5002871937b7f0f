//! A TCP proxy in front of a real sshd, that breaks the connection on
//! command: the network faults a fleet run meets, made on purpose.
//!
//! [`Proxy::start`] listens on a fresh address of 127.0.0.0/8 and forwards
//! every connection to one [`Host`] of an [`super::sshd::Sshd`]; its
//! [`Proxy::host`] is that host as an inventory would name it through the
//! proxy (same host key, the proxy's address and port). On command it:
//! - stalls: stops forwarding both ways, closing nothing ([`Proxy::stall`]),
//!   as a link that drops every packet;
//! - cuts every live connection now or after a delay ([`Proxy::cut`],
//!   [`Proxy::cut_after`]), or the first one to send N more bytes towards
//!   the server ([`Proxy::cut_after_bytes`]): a cable pulled mid-command or
//!   mid-upload. The server side sees its connection close, as sshd does
//!   when the client's link goes;
//! - refuses new connections for a while (listener closed: the client gets
//!   ECONNREFUSED, [`Proxy::refuse_for`]);
//! - resets the next N connections at once (RST before the banner, as a
//!   firewall or a restarting host does, [`Proxy::reset_next`]) or closes
//!   them without a word (what sshd does past `MaxStartups`,
//!   [`Proxy::close_next`]);
//! - delays every byte by half a round-trip time each way
//!   ([`Proxy::set_rtt`]), as a WAN link does: a propagation delay, not a
//!   bandwidth limit (bytes keep flowing, each arriving RTT/2 after it left).
//!
//! It runs on a tokio runtime of its own so that the (synchronous) tests can
//! drive it while the `orchestrate` binary they started talks through it.
//! All rules live in one `watch` channel: the forwarding tasks wait on it
//! (stalls, cuts) and the accept loop reads it per connection.

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

use super::sshd::Host;

#[derive(Debug, Clone, Default)]
struct Rules {
    stalled: bool,
    /// Bumped to cut every connection that started under an older value.
    generation: u64,
    /// Bytes towards the server after which the next connection is cut.
    cut_bytes: Option<u64>,
    reset_next: usize,
    close_next: usize,
    refuse_until: Option<Instant>,
    /// Each direction delays what it forwards by half of this.
    rtt: Duration,
}

struct Shared {
    rules: watch::Sender<Rules>,
    upstream: SocketAddr,
    accepted: AtomicUsize,
    turned_away: AtomicUsize,
}

/// A proxy to one sshd host. Stops (and drops its connections) on drop.
pub struct Proxy {
    listen: SocketAddrV4,
    host_key: String,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// A fresh address for each proxy of this process (the port is picked free).
fn next_address() -> Ipv4Addr {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let second = (std::process::id() % 250) as u8 + 1;
    Ipv4Addr::new(127, second, 252, (n % 250) as u8 + 1)
}

fn listener(at: SocketAddrV4) -> std::io::Result<tokio::net::TcpListener> {
    let socket = TcpSocket::new_v4()?;
    // Listening again on the same port right after closing it (refuse_for).
    socket.set_reuseaddr(true)?;
    socket.bind(at.into())?;
    socket.listen(1024)
}

impl Proxy {
    /// A proxy forwarding to `upstream`, listening from now on.
    pub fn start(upstream: &Host) -> Proxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the proxy");
        let upstream_addr: SocketAddr = format!("{}:{}", upstream.address, upstream.port)
            .parse()
            .expect("the upstream address");
        let (first, listen) = runtime.block_on(async {
            let listener = listener(SocketAddrV4::new(next_address(), 0)).expect("proxy listens");
            let SocketAddr::V4(at) = listener.local_addr().unwrap() else {
                unreachable!("bound to IPv4")
            };
            (listener, at)
        });
        let shared = Arc::new(Shared {
            rules: watch::Sender::new(Rules::default()),
            upstream: upstream_addr,
            accepted: AtomicUsize::new(0),
            turned_away: AtomicUsize::new(0),
        });
        runtime.spawn(accept_loop(first, listen, shared.clone()));
        Proxy {
            listen,
            host_key: upstream.host_key.clone(),
            shared,
            runtime: Some(runtime),
        }
    }

    /// The proxied host as an inventory names it: the proxy's address and
    /// port, the upstream's host key.
    pub fn host(&self) -> Host {
        Host {
            address: self.listen.ip().to_string(),
            port: self.listen.port(),
            host_key: self.host_key.clone(),
        }
    }

    /// Stops forwarding in both directions; nothing is closed.
    pub fn stall(&self) {
        self.shared.rules.send_modify(|r| r.stalled = true);
    }

    /// Forwards again what a stall held back.
    pub fn resume(&self) {
        self.shared.rules.send_modify(|r| r.stalled = false);
    }

    /// Cuts every live connection now (new ones are still accepted).
    pub fn cut(&self) {
        self.shared.rules.send_modify(|r| r.generation += 1);
    }

    /// Cuts every connection live at that moment, `delay` from now.
    pub fn cut_after(&self, delay: Duration) {
        let shared = self.shared.clone();
        self.runtime().spawn(async move {
            tokio::time::sleep(delay).await;
            shared.rules.send_modify(|r| r.generation += 1);
        });
    }

    /// Cuts the first connection to forward `bytes` more bytes towards the
    /// server (counted over all connections from now), after exactly that
    /// many: once.
    pub fn cut_after_bytes(&self, bytes: u64) {
        self.shared.rules.send_modify(|r| r.cut_bytes = Some(bytes));
    }

    /// Closes the listener for `how_long`: connections are refused.
    pub fn refuse_for(&self, how_long: Duration) {
        self.shared
            .rules
            .send_modify(|r| r.refuse_until = Some(Instant::now() + how_long));
    }

    /// Accepts the next `count` connections and resets them at once (RST).
    pub fn reset_next(&self, count: usize) {
        self.shared.rules.send_modify(|r| r.reset_next = count);
    }

    /// Accepts the next `count` connections and closes them without a
    /// word, as sshd does past its `MaxStartups`.
    pub fn close_next(&self, count: usize) {
        self.shared.rules.send_modify(|r| r.close_next = count);
    }

    /// Delays every byte by `rtt / 2` each way from now on (new and live
    /// connections): a round trip through the proxy takes `rtt` more.
    pub fn set_rtt(&self, rtt: Duration) {
        self.shared.rules.send_modify(|r| r.rtt = rtt);
    }

    /// Connections accepted so far (turned away ones included).
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Connections reset or closed at once by [`Proxy::reset_next`] and
    /// [`Proxy::close_next`].
    pub fn turned_away(&self) -> usize {
        self.shared.turned_away.load(Ordering::Relaxed)
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("running until dropped")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn accept_loop(
    mut listening: tokio::net::TcpListener,
    at: SocketAddrV4,
    shared: Arc<Shared>,
) {
    let mut rules = shared.rules.subscribe();
    loop {
        let refuse_until = rules.borrow_and_update().refuse_until;
        if let Some(until) = refuse_until {
            drop(listening);
            tokio::time::sleep_until(until.into()).await;
            shared.rules.send_modify(|r| r.refuse_until = None);
            listening = listener(at).expect("proxy listens again");
            continue;
        }
        let (client, _) = tokio::select! {
            accepted = listening.accept() => match accepted {
                Ok(pair) => pair,
                Err(_) => continue,
            },
            _ = rules.changed() => continue,
        };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        let mut turn_away = None;
        shared.rules.send_modify(|r| {
            if r.reset_next > 0 {
                r.reset_next -= 1;
                turn_away = Some(true);
            } else if r.close_next > 0 {
                r.close_next -= 1;
                turn_away = Some(false);
            }
        });
        match turn_away {
            Some(reset) => {
                shared.turned_away.fetch_add(1, Ordering::Relaxed);
                if reset {
                    // SO_LINGER 0: close() sends RST instead of FIN. (Deprecated
                    // because a non-zero linger blocks on drop; zero does not.)
                    #[allow(deprecated)]
                    let _ = client.set_linger(Some(Duration::ZERO));
                }
                drop(client);
            }
            None => {
                tokio::spawn(serve(client, shared.clone()));
            }
        }
    }
}

async fn serve(client: TcpStream, shared: Arc<Shared>) {
    let Ok(server) = TcpStream::connect(shared.upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut rules = shared.rules.subscribe();
    let generation = rules.borrow_and_update().generation;
    let (from_client, to_client) = client.into_split();
    let (from_server, to_server) = server.into_split();
    tokio::select! {
        _ = pump(from_client, to_server, &shared, true) => {}
        _ = pump(from_server, to_client, &shared, false) => {}
        _ = rules.wait_for(|r| r.generation != generation) => {}
    }
    // Both halves drop here: each side sees its connection close.
}

/// Copies one direction, holding chunks while stalled; towards the server,
/// counts bytes for [`Proxy::cut_after_bytes`]. With a round-trip time
/// set, a chunk is handed to a writer that sends it RTT/2 after it was
/// read, so the reader goes on reading meanwhile (a delay, not a throttle).
async fn pump(mut from: OwnedReadHalf, to: OwnedWriteHalf, shared: &Shared, upward: bool) {
    let mut rules = shared.rules.subscribe();
    let (delayed, mut due) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>, bool)>();
    let writer = async move {
        let mut to = to;
        while let Some((at, bytes, cut)) = due.recv().await {
            tokio::time::sleep_until(at.into()).await;
            if to.write_all(&bytes).await.is_err() || cut {
                return;
            }
        }
    };
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let read_at = Instant::now();
            if rules.wait_for(|r| !r.stalled).await.is_err() {
                return;
            }
            let mut take = n;
            let mut cut = false;
            if upward {
                shared.rules.send_if_modified(|r| match r.cut_bytes {
                    Some(left) if (n as u64) >= left => {
                        take = left as usize;
                        cut = true;
                        r.cut_bytes = None;
                        true
                    }
                    Some(left) => {
                        r.cut_bytes = Some(left - n as u64);
                        false
                    }
                    None => false,
                });
            }
            let at = read_at + rules.borrow().rtt / 2;
            if delayed.send((at, buf[..take].to_vec(), cut)).is_err() || cut {
                return;
            }
        }
    };
    tokio::pin!(writer);
    tokio::select! {
        _ = &mut writer => return,
        _ = reader => {}
    }
    // The reader is done (end of stream, or the cut): what it read still goes.
    writer.await;
}
