//! The fleet simulator's SSH side: one russh server that plays every
//! simulated endpoint at once.
//!
//! Endpoints are told apart by the address they were reached at: each has
//! its own in 127.0.0.0/8, all of which answer on loopback. One listener on
//! the wildcard address and one port receives them all (a listener bound to
//! 127.0.0.1 would receive only that address, and ten thousand listeners
//! would cost ten thousand descriptors); a connection from anywhere but
//! loopback, or to an address no endpoint has, is closed unanswered.
//!
//! Each connection gets the host key of the endpoint it reached, derived
//! from the seed and the host's name, so the controller verifies host keys
//! as strictly as in a real run. Nothing received is ever executed: every
//! `exec` is answered by [`Fleet::answer`], and the `sftp` subsystem by
//! [`super::sftp`], which keeps what it is sent only as sizes and hashes.
//! A round-trip time, when the scenario sets one, delays every byte each
//! way by half of it (two pumps between the socket and the SSH session),
//! so pipelined requests overlap as they would on a WAN and sequential
//! ones pay in full; without one, the session reads the socket itself.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use russh::keys::PrivateKey;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::server::{self, Auth, Msg, Session};
use russh::{Channel, ChannelId, ChannelMsg};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::endpoint::{After, Fleet, Greeting};
use super::sftp;
use super::wire::{self, Line};

/// A command's input kept at most (the script and its data): past this the
/// rest is read and dropped, so memory stays bounded whatever is sent.
const INPUT_LIMIT: usize = 4 << 20;

/// The host key of `host` in a rehearsal with `seed`.
pub fn host_key(seed: u64, host: &str) -> PrivateKey {
    let mut hash = Sha256::new();
    hash.update(b"orchestrate rehearsal host key\0");
    hash.update(seed.to_le_bytes());
    hash.update(host.as_bytes());
    let bytes: [u8; 32] = hash.finalize().into();
    PrivateKey::from(Ed25519Keypair::from_seed(&bytes))
}

/// `ssh-ed25519 AAAA...`: the public half of [`host_key`], as the
/// inventory pins keys.
pub fn host_key_line(seed: u64, host: &str) -> String {
    host_key(seed, host)
        .public_key()
        .to_openssh()
        .expect("an ed25519 key encodes")
}

/// The running simulator: its port, and the token that stops it.
pub struct Simulator {
    pub port: u16,
    pub stop: CancellationToken,
}

/// Binds the listener and serves `fleet` until `stop` is cancelled.
pub async fn start(fleet: Arc<Fleet>) -> std::io::Result<Simulator> {
    let listener = TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)).await?;
    let port = listener.local_addr()?.port();
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stopped.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, peer)) = accepted else {
                // Out of descriptors, say: the connection waits in the backlog.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let fleet = Arc::clone(&fleet);
            let stopped = stopped.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = stopped.cancelled() => {}
                    _ = serve(fleet, stream, peer) => {}
                }
            });
        }
    });
    Ok(Simulator { port, stop })
}

async fn serve(fleet: Arc<Fleet>, stream: TcpStream, peer: SocketAddr) {
    let index = match (peer.ip(), stream.local_addr().map(|a| a.ip())) {
        (IpAddr::V4(from), Ok(IpAddr::V4(to))) if from.is_loopback() => {
            fleet.by_address.get(&to).copied()
        }
        _ => None,
    };
    let Some(index) = index else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let (greeting, alive) = fleet.greet(index);
    match greeting {
        // Closed before a byte is said, as by a host that turns connections away.
        Greeting::Refuse => return,
        Greeting::Stall => {
            // Accept and say nothing until the controller gives up.
            let mut stream = stream;
            let mut sink = [0u8; 4096];
            tokio::select! {
                _ = alive.cancelled() => {}
                _ = async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} } => {}
            }
            return;
        }
        Greeting::Serve => {}
    }
    let endpoint = &fleet.endpoints[index];
    let config = Arc::new(server::Config {
        keys: vec![host_key(fleet.seed, &endpoint.name)],
        auth_rejection_time: Duration::ZERO,
        auth_rejection_time_initial: Some(Duration::ZERO),
        inactivity_timeout: Some(Duration::from_secs(3600)),
        nodelay: true,
        ..Default::default()
    });
    let cut = alive.child_token();
    let handler = Connection {
        fleet: Arc::clone(&fleet),
        index,
        cut: cut.clone(),
    };
    let half = endpoint.rtt / 2;
    if half.is_zero() {
        // No delay to apply: the session reads the socket itself (two pumps
        // and an in-memory pipe per connection, for nothing, were a fifth
        // of a 10,000-endpoint rehearsal's memory). russh runs the session
        // in a task of its own, so the connection is ended by shutting the
        // socket down under it, through a second descriptor, however this
        // ends: cut (a fault, a reboot), session over, or the simulator
        // stopped (which drops this future mid-way).
        let Ok(_under) = socket_of(&stream).map(ShutDownOnDrop) else {
            return;
        };
        let Ok(running) = server::run_stream(config, stream, handler).await else {
            return;
        };
        tokio::select! {
            _ = cut.cancelled() => {}
            _ = running => {}
        }
        return;
    }
    // Delayed: the socket stays with two pumps here, so that cutting the
    // connection is dropping them.
    let (near, far) = tokio::io::duplex(16 * 1024);
    let (socket_read, socket_write) = stream.into_split();
    let (far_read, far_write) = tokio::io::split(far);
    let mut pumps = tokio::task::JoinSet::new();
    pumps.spawn(delayed(socket_read, far_write, half));
    pumps.spawn(delayed(far_read, socket_write, half));
    let Ok(running) = server::run_stream(config, near, handler).await else {
        return;
    };
    tokio::select! {
        _ = cut.cancelled() => {}
        _ = running => {
            // The session ended: let its last bytes out, then close.
            let _ = tokio::time::timeout(Duration::from_secs(1) + endpoint.rtt, async {
                while pumps.join_next().await.is_some() {}
            })
            .await;
        }
    }
}

/// A socket shut down (both ways) when this is dropped, whoever else holds
/// a descriptor of it.
struct ShutDownOnDrop(std::net::TcpStream);

impl Drop for ShutDownOnDrop {
    fn drop(&mut self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

/// A second descriptor of `stream`'s socket, to shut it down with while
/// the session owns the stream.
fn socket_of(stream: &TcpStream) -> std::io::Result<std::net::TcpStream> {
    use std::os::fd::AsFd as _;
    Ok(std::net::TcpStream::from(
        stream.as_fd().try_clone_to_owned()?,
    ))
}

/// Copies `from` to `to`, each piece `delay` after it was read.
async fn delayed(
    mut from: impl AsyncRead + Unpin + Send + 'static,
    mut to: impl AsyncWrite + Unpin + Send + 'static,
    delay: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(64);
    let writer = tokio::spawn(async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let due = tokio::time::Instant::now() + delay;
                if tx.send((due, buffer[..n].to_vec())).await.is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// One SSH connection to one endpoint.
struct Connection {
    fleet: Arc<Fleet>,
    index: usize,
    /// Cancelled to cut this connection (a fault, or the host going down).
    cut: CancellationToken,
}

impl server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        _user: &str,
        _key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn auth_password(&mut self, _user: &str, _password: &str) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        let fleet = Arc::clone(&self.fleet);
        let (index, cut) = (self.index, self.cut.clone());
        tokio::spawn(async move { command(fleet, index, cut, channel).await });
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // SFTP is served by the channel's task (see `command`); no other
        // subsystem exists on a simulated host.
        if name == "sftp" {
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }
}

/// Serves one session channel: the exec line, the input to its end, then
/// the scenario's answer; or, asked for the `sftp` subsystem, SFTP.
async fn command(
    fleet: Arc<Fleet>,
    index: usize,
    cut: CancellationToken,
    mut channel: Channel<Msg>,
) {
    let mut line = None;
    let mut input = Vec::new();
    loop {
        match channel.wait().await {
            Some(ChannelMsg::Exec { command, .. }) => {
                let text = String::from_utf8_lossy(&command).into_owned();
                if let Line::Become { marker } = wire::classify(&text) {
                    let said = format!("{marker}\n");
                    let _ = channel.extended_data(1, said.as_bytes()).await;
                }
                line = Some(text);
            }
            Some(ChannelMsg::RequestSubsystem { name, .. }) if name == "sftp" => {
                sftp::serve(fleet, index, channel);
                return;
            }
            Some(ChannelMsg::Data { data }) => {
                let room = INPUT_LIMIT.saturating_sub(input.len());
                input.extend_from_slice(&data[..data.len().min(room)]);
            }
            Some(ChannelMsg::Eof) => break,
            Some(ChannelMsg::Signal { .. }) | Some(ChannelMsg::Close) | None => {
                let _ = channel.close().await;
                return;
            }
            Some(_) => {}
        }
    }
    let Some(line) = line else {
        let _ = channel.close().await;
        return;
    };
    let script = match wire::classify(&line) {
        Line::Reader | Line::Become { .. } => wire::script_of(&input),
        Line::Cmd => wire::cmd_script_of(&input),
        Line::Direct(text) => text,
    };
    let reply = fleet.answer(index, &script);
    if reply.after == After::Drop {
        // Cut while the command runs: no exit status ever comes.
        tokio::time::sleep(reply.latency / 2).await;
        cut.cancel();
        return;
    }
    // The command runs for its latency, unless the controller kills it.
    let killed = tokio::select! {
        _ = tokio::time::sleep(reply.latency) => false,
        message = wait_for_signal(&mut channel) => message,
    };
    if killed {
        let _ = channel.exit_status(137).await;
        let _ = channel.eof().await;
        let _ = channel.close().await;
        return;
    }
    if !reply.stdout.is_empty() {
        let _ = channel.data(reply.stdout.as_bytes()).await;
    }
    if let After::Flood(bytes) = reply.after {
        let chunk = vec![b'A'; 32 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            if channel.data(&chunk[..n]).await.is_err() {
                return;
            }
            left -= n as u64;
        }
    }
    if !reply.stderr.is_empty() {
        let _ = channel.extended_data(1, reply.stderr.as_bytes()).await;
    }
    let _ = channel.exit_status(reply.exit as u32).await;
    let _ = channel.eof().await;
    let _ = channel.close().await;
    if let After::Reboot(back_after) = reply.after {
        // Let the exit status leave before the host goes.
        tokio::time::sleep(Duration::from_millis(20)).await;
        fleet.go_down(index, back_after);
    }
}

/// Resolves `true` when the controller signals the command (a kill), and
/// never otherwise while the channel is open.
async fn wait_for_signal(channel: &mut Channel<Msg>) -> bool {
    loop {
        match channel.wait().await {
            Some(ChannelMsg::Signal { .. }) => return true,
            Some(ChannelMsg::Close) | None => return true,
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_keys_are_the_same_for_one_seed_and_differ_between_hosts() {
        assert_eq!(host_key_line(1, "a"), host_key_line(1, "a"));
        assert_ne!(host_key_line(1, "a"), host_key_line(1, "b"));
        assert_ne!(host_key_line(1, "a"), host_key_line(2, "a"));
        assert!(host_key_line(1, "a").starts_with("ssh-ed25519 AAAA"));
    }
}
