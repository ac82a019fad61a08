//! A TCP load balancer for tests, standing in front of several hosts the way
//! nginx or a cloud LB would: each new connection goes to the backend chosen
//! now (a fixed one, or round robin), skipping backends that refuse
//! connections. Bytes pass through unchanged (the `Host` header names the
//! balancer, as it would in production).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};

/// Round robin instead of a fixed backend.
const ROUND_ROBIN: usize = usize::MAX;

/// A running balancer (stops with the test's runtime).
#[derive(Clone)]
pub struct Balancer {
    /// Its address.
    pub addr: SocketAddr,
    choice: Arc<AtomicUsize>,
}

impl Balancer {
    /// Listens on loopback port `port` (0: any free one) in front of
    /// `backends`, round robin.
    pub async fn start_on(port: u16, backends: Vec<SocketAddr>) -> Balancer {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let choice = Arc::new(AtomicUsize::new(ROUND_ROBIN));
        let next = Arc::new(AtomicUsize::new(0));
        let pick = choice.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let first = match pick.load(Ordering::SeqCst) {
                    ROUND_ROBIN => next.fetch_add(1, Ordering::SeqCst),
                    fixed => fixed,
                };
                let backends = backends.clone();
                tokio::spawn(async move {
                    for i in 0..backends.len() {
                        let target = backends[(first + i) % backends.len()];
                        if let Ok(mut upstream) = TcpStream::connect(target).await {
                            let _ = upstream.set_nodelay(true);
                            let mut client = client;
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                            return;
                        }
                    }
                });
            }
        });
        Balancer { addr, choice }
    }

    /// `http://ADDR`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// New connections go to backend `i` (or the next one up, if it is down).
    pub fn send_to(&self, i: usize) {
        self.choice.store(i, Ordering::SeqCst);
    }

    /// New connections go round robin.
    pub fn round_robin(&self) {
        self.choice.store(ROUND_ROBIN, Ordering::SeqCst);
    }
}
