//! A TCP proxy in front of a real server, to make that server misbehave for
//! one client (the code under test) while parallel tests keep using it.
//!
//! Four states, switched at any time from the test:
//!
//! | call | live connections | new connections |
//! |---|---|---|
//! | [`restore`](TcpProxy::restore) (the start state) | forwarded | forwarded |
//! | [`cut`](TcpProxy::cut) | closed at once | accepted, then closed (a server that is down) |
//! | [`blackhole`](TcpProxy::blackhole) | kept open, nothing forwarded either way | accepted, held open, never forwarded |
//! | [`add_latency`](TcpProxy::add_latency) | forwarded, each chunk after a delay | same |
//!
//! A blackhole is a link that silently drops everything: no reset, no
//! close, the client waits. Bytes the proxy holds are delivered once the
//! link is [`restore`](TcpProxy::restore)d (as TCP retransmits after a
//! partition heals), and connections made during the blackhole reach the
//! server then. What a userspace proxy cannot fake is the kernel's side:
//! the proxy's socket still acknowledges what the client sends (up to its
//! receive buffer) and answers TCP keepalives. To the client's kernel the
//! link looks stalled, not dead, until the proxy's receive window closes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What the proxy does with bytes right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forward, each chunk after `latency` (zero: at once).
    Forward { latency: Duration },
    /// Forward nothing, close nothing.
    Blackhole,
    /// Close everything (the connections themselves are ended through
    /// `State::live`; this only makes the accept loop refuse).
    Cut,
}

/// Forwards every connection to `upstream`; see the module docs for the
/// fault modes.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    mode: watch::Sender<Mode>,
    /// Stops the accept loop when the proxy is dropped.
    stop: CancellationToken,
}

#[derive(Debug)]
struct State {
    /// Cancelled by `cut()`: ends every live connection of this generation.
    live: CancellationToken,
}

impl TcpProxy {
    /// Listens on `127.0.0.1:0` and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("cannot bind the proxy: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("proxy has no address: {e}"));
        let state = Arc::new(Mutex::new(State {
            live: CancellationToken::new(),
        }));
        let (mode, _) = watch::channel(Mode::Forward {
            latency: Duration::ZERO,
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(
            listener,
            upstream,
            state.clone(),
            mode.subscribe(),
            stop.clone(),
        ));
        Self {
            addr,
            state,
            mode,
            stop,
        }
    }

    /// Where clients connect instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every live connection and refuses new ones (accepted, then
    /// closed at once, like a server that is down).
    pub fn cut(&self) {
        let state = lock(&self.state);
        self.mode.send_replace(Mode::Cut);
        state.live.cancel();
    }

    /// Stops forwarding in both directions without closing anything: live
    /// connections stay open and silent, new ones are accepted and held.
    /// A client without a deadline of its own waits forever.
    pub fn blackhole(&self) {
        self.mode.send_replace(Mode::Blackhole);
    }

    /// Forwards with `delay` added to every chunk, in both directions (a
    /// slow or distant link). Chunks of one direction stay in order, so a
    /// burst of `n` chunks takes about `n * delay`.
    pub fn add_latency(&self, delay: Duration) {
        self.mode.send_replace(Mode::Forward { latency: delay });
    }

    /// Forwards again at full speed: after a cut, new connections reach
    /// the server; after a blackhole, held bytes and connections go
    /// through.
    pub fn restore(&self) {
        let mut state = lock(&self.state);
        if state.live.is_cancelled() {
            state.live = CancellationToken::new();
        }
        self.mode.send_replace(Mode::Forward {
            latency: Duration::ZERO,
        });
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        lock(&self.state).live.cancel();
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic elsewhere cannot leave `State` half-updated; keep going.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    state: Arc<Mutex<State>>,
    mode: watch::Receiver<Mode>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((client, _)) = accepted else { continue };
        if *mode.borrow() == Mode::Cut {
            drop(client);
            continue;
        }
        let live = lock(&state).live.clone();
        tokio::spawn(forward(client, upstream, mode.clone(), live));
    }
}

async fn forward(
    client: TcpStream,
    upstream: SocketAddr,
    mut mode: watch::Receiver<Mode>,
    live: CancellationToken,
) {
    let connected = async {
        // A blackholed link carries no SYN either: the server sees the
        // connection only once the link is back.
        passable(&mut mode).await?;
        TcpStream::connect(upstream).await.ok()
    };
    let server = tokio::select! {
        () = live.cancelled() => return,
        server = connected => server,
    };
    let Some(server) = server else { return };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        () = live.cancelled() => {}
        () = async {
            // One direction ending (EOF or error) ends the connection once
            // the other direction has seen it too, as with a real socket.
            tokio::join!(
                pump(client_read, server_write, mode.clone()),
                pump(server_read, client_write, mode),
            );
        } => {}
    }
    // Dropping both halves of both streams closes both sides.
}

/// Copies `from` to `to` chunk by chunk, obeying the mode before reading
/// and again before writing each chunk.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // While blackholed, nothing is read: the client's bytes pile up in
        // the socket buffers, as they would in front of a dead link.
        if passable(&mut mode).await.is_none() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        // The blackhole may have started while this chunk was read.
        let Some(latency) = passable(&mut mode).await else {
            return;
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Waits while the link is blackholed; returns the latency to add, or
/// `None` once the link is cut (or the proxy gone).
async fn passable(mode: &mut watch::Receiver<Mode>) -> Option<Duration> {
    loop {
        match *mode.borrow_and_update() {
            Mode::Forward { latency } => return Some(latency),
            Mode::Cut => return None,
            Mode::Blackhole => {}
        }
        mode.changed().await.ok()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that echoes every byte back.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let (mut read, mut write) = socket.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, payload: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(payload).await?;
        let mut back = vec![0u8; payload.len()];
        stream.read_exact(&mut back).await?;
        Ok(back)
    }

    const PATIENCE: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_forwarding_proxy_passes_bytes_both_ways() {
        let proxy = TcpProxy::start(echo_server().await).await;
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut stream, b"ping").await.unwrap(), b"ping");
    }

    #[tokio::test]
    async fn a_cut_closes_live_connections_and_refuses_new_ones_until_restored() {
        let proxy = TcpProxy::start(echo_server().await).await;
        let mut live = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut live, b"a").await.unwrap();
        proxy.cut();
        let closed = tokio::time::timeout(PATIENCE, round_trip(&mut live, b"b"))
            .await
            .expect("a cut connection ends at once");
        assert!(closed.is_err());
        let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
        let outcome = tokio::time::timeout(PATIENCE, round_trip(&mut refused, b"c"))
            .await
            .expect("a refused connection ends at once");
        assert!(outcome.is_err());
        proxy.restore();
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut fresh, b"d").await.unwrap(), b"d");
    }

    #[tokio::test]
    async fn a_blackhole_forwards_nothing_and_closes_nothing_until_restored() {
        let proxy = TcpProxy::start(echo_server().await).await;
        let mut live = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut live, b"a").await.unwrap();
        proxy.blackhole();
        let silent = tokio::time::timeout(Duration::from_millis(300), round_trip(&mut live, b"b"));
        assert!(silent.await.is_err(), "nothing comes back, nothing closes");
        let mut held = TcpStream::connect(proxy.addr()).await.unwrap();
        held.write_all(b"c").await.unwrap();
        proxy.restore();
        // What the client sent during the blackhole is delivered after it.
        let mut back = [0u8; 1];
        tokio::time::timeout(PATIENCE, live.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&back, b"b");
        tokio::time::timeout(PATIENCE, held.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&back, b"c");
    }

    #[tokio::test]
    async fn added_latency_delays_each_chunk_and_restore_removes_it() {
        let proxy = TcpProxy::start(echo_server().await).await;
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        proxy.add_latency(Duration::from_millis(200));
        let started = std::time::Instant::now();
        round_trip(&mut stream, b"slow").await.unwrap();
        // Once on the way in, once on the way out.
        assert!(started.elapsed() >= Duration::from_millis(400));
        proxy.add_latency(Duration::from_secs(60));
        proxy.restore();
        tokio::time::timeout(PATIENCE, round_trip(&mut stream, b"fast"))
            .await
            .expect("restore removes the added latency")
            .unwrap();
    }
}
