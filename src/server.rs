//! The client listener: connections, the tower stack around the request
//! path, and graceful shutdown.
//!
//! On shutdown the listener closes at once, idle connections are closed,
//! queued calls are refused with JSON, and calls already sent upstream are
//! allowed `server.shutdown_grace_seconds` to finish and reach their clients.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::{Either, Ready, ready};
use http::{HeaderValue, Method, Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::BoxError;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::admin;
use crate::config::{Config, secs};
use crate::headers::{IDEMPOTENCY_KEY, PREFER, X_APIKEY, X_CACHE};
use crate::metrics::Metrics;
use crate::proxy::{Gateway, Handled, StartError};

/// A gateway running in the background, for tests, the demo and embedding.
pub struct GatewayHandle {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are.
    pub admin_addr: SocketAddr,
    /// The shared state, for inspection.
    pub gateway: Arc<Gateway>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl GatewayHandle {
    /// Shuts down gracefully and waits until every connection is done.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Starts a graceful shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for the serving task to end.
    pub async fn finished(self) {
        let _ = self.task.await;
    }
}

/// Starts the gateway on already-bound listeners and returns at once; fails
/// only if the durable store cannot be opened or an account key not read.
pub fn spawn(
    config: Config,
    client: TcpListener,
    admin: TcpListener,
) -> Result<GatewayHandle, StartError> {
    let metrics = Arc::new(Metrics::new());
    let gateway = Gateway::new(config, metrics)?;
    let addr = client.local_addr().expect("bound listener");
    let admin_addr = admin.local_addr().expect("bound listener");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(Arc::clone(&gateway), client, admin, async move {
        let _ = stopped.await;
    }));
    Ok(GatewayHandle {
        addr,
        admin_addr,
        gateway,
        stop: Some(stop),
        task,
    })
}

/// Serves clients and the admin endpoints until `shutdown` resolves, then
/// drains gracefully.
pub async fn serve(
    gateway: Arc<Gateway>,
    client: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let admin_task = tokio::spawn(admin::serve(Arc::clone(&gateway), admin));
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(gateway.config.server.max_connections));
    let shared = Arc::new(Shared {
        gateway: Arc::clone(&gateway),
        cors: cors_layer(&gateway.config),
    });
    let builder = connection_builder(&gateway.config);
    tokio::pin!(shutdown);

    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("never closed"),
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = client.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = ClientService {
            shared: Arc::clone(&shared),
            peer: peer.ip(),
        };
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        // A combinator, not an async block: a block awaiting a captured
        // future keeps room for it twice in every connection's task.
        let task = graceful.watch(connection).map(move |ended| {
            if let Err(error) = ended {
                tracing::debug!(%peer, %error, "client connection ended with an error");
            }
            drop(slot);
        });
        tokio::spawn(task);
    }

    drop(client);
    tracing::info!("shutting down: listener closed, queued calls refused");
    gateway.begin_shutdown();
    let grace = secs(gateway.config.server.shutdown_grace_seconds);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_s = grace.as_secs(),
            "connections still open after the grace time"
        );
    }
    admin_task.abort();
    tracing::info!("shutdown complete");
}

/// What every client connection shares: the gateway and the CORS settings.
struct Shared {
    gateway: Arc<Gateway>,
    cors: CorsLayer,
}

/// The body of every answer: boxed, because hyper keeps room for the body
/// type in each connection, idle or not, and the compression body (with its
/// encoders' state) is several KiB.
type AnswerBody = UnsyncBoxBody<Bytes, BoxError>;

/// The hyper service of one client connection, kept as small as possible:
/// hyper holds it, and room for its future, for the connection's whole life,
/// so an idle keep-alive connection costs only a pointer and an address here.
/// The tower stack (CORS, compression, the gateway) is put together for each
/// request inside one boxed future that lives only while the request does.
struct ClientService {
    shared: Arc<Shared>,
    peer: IpAddr,
}

/// What a request's answer comes as: at once for whatever needs no waiting
/// (refusals, fresh cache hits), else a boxed future living as long as the
/// request does.
type ServiceFuture = Either<
    Ready<Result<Response<AnswerBody>, Infallible>>,
    Pin<Box<dyn Future<Output = Result<Response<AnswerBody>, Infallible>> + Send>>,
>;

impl hyper::service::Service<Request<Incoming>> for ClientService {
    type Response = Response<AnswerBody>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let gateway = &self.shared.gateway;
        let peer = self.peer;
        // Bots send neither Origin (CORS is for browsers) nor, mostly,
        // Accept-Encoding: their requests skip the tower stack, whose
        // futures cost a cache hit a fifth of its instructions in copies.
        let headers = request.headers();
        let identity_only = headers
            .get(http::header::ACCEPT_ENCODING)
            .is_none_or(|coding| coding.as_bytes().trim_ascii() == b"identity");
        if identity_only
            && !headers.contains_key(http::header::ORIGIN)
            && request.method() != Method::OPTIONS
        {
            return match gateway.begin(request, peer) {
                Handled::Now(response) => Either::Left(ready(Ok(fast_path_answer(response)))),
                Handled::Later(serving) => Either::Right(Box::pin(
                    serving.map(|response| Ok(fast_path_answer(response))),
                )),
            };
        }
        let gateway = Arc::clone(gateway);
        let stack = ServiceBuilder::new()
            // Preflights carry no x-apikey: answer them before anything checks
            // keys or spends a queue place.
            .layer(self.shared.cors.clone())
            // Compress for clients that ask; the request path holds identity bytes.
            .layer(CompressionLayer::new())
            .service_fn(move |request| {
                let gateway = Arc::clone(&gateway);
                async move { Ok::<_, Infallible>(gateway.handle(request, peer).await) }
            });
        Either::Right(Box::pin(async move {
            let response = stack.oneshot(request).await?;
            Ok(response.map(BodyExt::boxed_unsync))
        }))
    }
}

/// An answer that skipped the CORS and compression layers. It says that it
/// would differ with `Origin` or `Accept-Encoding`, so that a shared cache in
/// front of the gateway does not hand it to browsers or gzip clients.
fn fast_path_answer(mut response: Response<Full<Bytes>>) -> Response<AnswerBody> {
    static VARY: HeaderValue = HeaderValue::from_static("origin, accept-encoding");
    response
        .headers_mut()
        .insert(http::header::VARY, VARY.clone());
    response.map(|body| body.map_err(|never| match never {}).boxed_unsync())
}

fn connection_builder(config: &Config) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(secs(config.server.header_read_timeout_seconds))
        .max_buf_size(config.server.max_header_bytes)
        .keep_alive(true);
    builder
}

fn cors_layer(config: &Config) -> CorsLayer {
    let origins = &config.server.cors_allow_origins;
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            X_APIKEY.clone(),
            http::header::ACCEPT,
            http::header::CONTENT_TYPE,
            PREFER.clone(),
            IDEMPOTENCY_KEY.clone(),
        ])
        .expose_headers([
            X_CACHE.clone(),
            http::header::AGE,
            http::header::RETRY_AFTER,
        ])
        .max_age(std::time::Duration::from_secs(600))
}
