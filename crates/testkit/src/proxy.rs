//! A TCP proxy in front of a real server, to make that server "go away" for
//! one client (the code under test) while parallel tests keep using it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Forwards every connection to `upstream` until [`cut`](Self::cut).
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    /// Stops the accept loop when the proxy is dropped.
    stop: CancellationToken,
}

#[derive(Debug)]
struct State {
    /// Cancelled by `cut()`: ends every live connection of this generation.
    live: CancellationToken,
    cut: bool,
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
            cut: false,
        }));
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, upstream, state.clone(), stop.clone()));
        Self { addr, state, stop }
    }

    /// Where clients connect instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every live connection and refuses new ones (accepted, then
    /// closed at once, like a server that is down).
    pub fn cut(&self) {
        let mut state = lock(&self.state);
        state.cut = true;
        state.live.cancel();
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        let mut state = lock(&self.state);
        state.cut = false;
        state.live = CancellationToken::new();
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
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((client, _)) = accepted else { continue };
        let live = {
            let state = lock(&state);
            if state.cut {
                drop(client);
                continue;
            }
            state.live.clone()
        };
        tokio::spawn(forward(client, upstream, live));
    }
}

async fn forward(mut client: TcpStream, upstream: SocketAddr, live: CancellationToken) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        () = live.cancelled() => {}
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
    }
    // Dropping both streams closes both sides.
}
