//! otpgate-sim: an in-process stand-in for the RumahOTP API, the upstream every otpgate test
//! and demo runs against.
//!
//! It serves the endpoints real bots use (with and without `/api`), keeps a seeded world of
//! accounts, catalog, orders, deposits and h2h transactions, and puts a Cloudflare-like per-IP
//! rate limiter and injectable faults in front of it. It shares no code with the gateway: it is
//! the gateway's adversary. Control and audit calls live under `/__sim/`.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let sim = otpgate_sim::spawn(listener, otpgate_sim::SimConfig::default()).await;
//! println!("upstream at {}", sim.base_url());
//! sim.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod api;
mod audit;
mod cli;
mod clock;
mod config;
mod control;
mod error;
mod faults;
mod pipeline;
mod protection;
mod query;
mod respond;
mod server;
mod state;
mod world;

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use audit::{RecordedRequest, Stats};
pub use cli::{SimArgs, run};
pub use clock::rupiah;
pub use config::{AccountSeed, SimConfig};
pub use faults::Fault;

use state::{Shared, lock};

/// Starts a simulator on `listener` and returns at once; it serves until
/// [`SimHandle::shutdown`] (or until the handle is dropped).
pub async fn spawn(listener: TcpListener, config: SimConfig) -> SimHandle {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
    let shared = Arc::new(Shared::new(config));
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(server::accept_loop(listener, shared.clone(), stop_rx));
    tracing::info!(%addr, "simulator listening");
    SimHandle {
        addr,
        shared,
        stop,
        task,
    }
}

/// A running simulator: its address, its audit, and levers to change it from a test.
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl SimHandle {
    /// The address the simulator listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL clients configure, with the `/api` prefix: `http://127.0.0.1:PORT/api`.
    pub fn base_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// The counters, as `GET /__sim/stats` returns them.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Every emulated API request received since start or reset, as `GET /__sim/requests`.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests()
    }

    /// Adds a fault, as `POST /__sim/faults`; faults accumulate.
    pub fn set_fault(&self, fault: Fault) {
        lock(&self.shared.faults).add(fault);
    }

    /// Removes every fault, as `DELETE /__sim/faults`.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// The current balance (rupiah) of the account with this key, after pending refunds and
    /// expiries are applied; `None` for an unknown key.
    pub fn balance(&self, key: &str) -> Option<i64> {
        let (world, _) = self.shared.world_now();
        world.balance(key)
    }

    /// Stops accepting, closes idle connections at once and busy ones after at most 2 s, then
    /// returns.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        tracing::info!(addr = %self.addr, "simulator stopped");
    }
}
