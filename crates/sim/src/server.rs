//! Accepting TCP connections and serving HTTP/1.1 on them, with exact idle closing and
//! graceful shutdown.
//!
//! Idle closing is done here rather than by hyper: a connection with no request in flight for
//! exactly `idle_close` is shut down, which reproduces a client pool reusing a connection the
//! server has just closed (hyper issue 2136).

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout};

use crate::control;
use crate::pipeline::{self, DropConnection, Peer};
use crate::query::{Target, target};
use crate::respond::SimResponse;
use crate::state::{Shared, lock};

/// How long shutdown waits for busy connections before cutting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Accepts connections until `stop` turns true, then shuts every connection down.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    next_id += 1;
                    shared.connections.fetch_add(1, Ordering::Relaxed);
                    let peer = Peer { addr, conn_id: next_id };
                    let task = serve_connection(stream, peer, shared.clone(), stop.clone());
                    connections.spawn(task);
                }
                Err(err) => tracing::warn!(error = %err, "accept failed"),
            },
            _ = stop.changed() => break,
        }
        while connections.try_join_next().is_some() {}
    }

    drop(listener);
    let drained = timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        connections.abort_all();
    }
}

/// Requests in flight on one connection and when the last one finished.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    last_done: Mutex<Instant>,
    changed: Notify,
}

impl Activity {
    fn idle_deadline(&self, idle_close: Option<Duration>) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        idle_close.map(|idle| *lock(&self.last_done) + idle)
    }
}

/// Marks a request in flight until dropped (also when hyper drops the future).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        activity.changed.notify_one();
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *lock(&self.0.last_done) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_one();
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: Peer,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity {
        in_flight: AtomicUsize::new(0),
        last_done: Mutex::new(Instant::now()),
        changed: Notify::new(),
    });
    let service = {
        let (shared, activity) = (shared.clone(), activity.clone());
        service_fn(move |request| {
            let (shared, guard) = (shared.clone(), InFlight::start(&activity));
            async move {
                let response = dispatch(&shared, request, peer).await;
                drop(guard);
                response
            }
        })
    };
    let connection = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);

    let mut settings = shared.settings.subscribe();
    let mut closing = *stop.borrow();
    if closing {
        connection.as_mut().graceful_shutdown();
    }
    loop {
        let idle_close = settings.borrow().idle_close;
        let deadline = activity.idle_deadline(idle_close).filter(|_| !closing);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(conn_id = peer.conn_id, error = %err, "connection ended");
                }
                break;
            }
            _ = sleep_until_some(deadline) => {
                if activity.idle_deadline(idle_close).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!(conn_id = peer.conn_id, "closing idle connection");
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            _ = activity.changed.notified() => {}
            _ = settings.changed() => {}
            _ = stop.changed(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn dispatch(
    shared: &Shared,
    request: hyper::Request<hyper::body::Incoming>,
    peer: Peer,
) -> Result<SimResponse, DropConnection> {
    match target(request.uri().path()) {
        Target::Control(segments) => Ok(control::serve_control(shared, request, segments).await),
        Target::Api(route) => pipeline::serve_api(shared, request, route, peer).await,
    }
}
