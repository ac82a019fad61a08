//! A TCP relay in front of a server that records every byte both ways (what a
//! passive observer of a plaintext link sees) and can silence the
//! connections that asked to `LISTEN`: their bytes stop flowing in both
//! directions while the connections stay open, as when a NAT or a load
//! balancer forgets an idle connection without telling either end.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running relay (stops with the test's runtime).
#[derive(Clone)]
pub struct Tap {
    /// Its loopback port.
    pub port: u16,
    seen: Arc<Mutex<Vec<u8>>>,
    conns: Arc<Mutex<Vec<Conn>>>,
}

#[derive(Clone)]
struct Conn {
    /// The client sent `LISTEN`.
    listens: Arc<AtomicBool>,
    /// Nothing passes any more.
    silenced: Arc<AtomicBool>,
}

/// Copies `from` to `to`, recording, until either end closes; while
/// `silenced`, bytes read are dropped.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    seen: Arc<Mutex<Vec<u8>>>,
    conn: Conn,
    from_client: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let bytes = &buf[..n];
        seen.lock().unwrap().extend_from_slice(bytes);
        if from_client && bytes.windows(6).any(|w| w.eq_ignore_ascii_case(b"LISTEN")) {
            conn.listens.store(true, Ordering::SeqCst);
        }
        if conn.silenced.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(bytes).await.is_err() {
            return;
        }
    }
}

impl Tap {
    /// Relays a new loopback port to `target`.
    pub async fn start(target: SocketAddr) -> Tap {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tap = Tap {
            port,
            seen: Arc::default(),
            conns: Arc::default(),
        };
        let (seen, conns) = (tap.seen.clone(), tap.conns.clone());
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let conn = Conn {
                    listens: Arc::default(),
                    silenced: Arc::default(),
                };
                conns.lock().unwrap().push(conn.clone());
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, seen.clone(), conn.clone(), true));
                tokio::spawn(pump(sr, cw, seen.clone(), conn, false));
            }
        });
        tap
    }

    /// Everything that crossed so far, both ways.
    pub fn seen(&self) -> Vec<u8> {
        self.seen.lock().unwrap().clone()
    }

    /// Silences every connection that has sent `LISTEN` so far; returns how
    /// many. Later connections pass.
    pub fn silence_listeners(&self) -> usize {
        let conns = self.conns.lock().unwrap();
        let mut n = 0;
        for c in conns.iter().filter(|c| c.listens.load(Ordering::SeqCst)) {
            c.silenced.store(true, Ordering::SeqCst);
            n += 1;
        }
        n
    }
}
