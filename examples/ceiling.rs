//! The machine's ceiling for `benches/compare.sh`: a bare hyper HTTP/1.1
//! server that answers every request with the same bytes from memory.
//!
//! It does what a cache hit cannot avoid (accept, parse, write) and nothing
//! else: no routing, no cache lookup, no compression, no logging. Whatever
//! otpgate adds on top of this is the cost of being a gateway.
//!
//! ```sh
//! cargo run --release --example ceiling -- 127.0.0.1:8199 body.json
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: ceiling LISTEN_ADDR BODY_FILE";
    let listen: SocketAddr = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let body_file = args.next().ok_or_else(|| anyhow::anyhow!(usage))?;
    let body = Bytes::from(std::fs::read(&body_file)?);

    let listener = TcpListener::bind(listen).await?;
    eprintln!("ceiling listening on {listen}, {} byte body", body.len());
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(stream, body.clone()));
    }
}

/// Answers every request on one keep-alive connection with `body`.
async fn serve_connection(stream: tokio::net::TcpStream, body: Bytes) {
    let answer = move |_request: Request<hyper::body::Incoming>| {
        let body = body.clone();
        async move {
            let mut response = Response::new(Full::new(body));
            let json = HeaderValue::from_static("application/json");
            response.headers_mut().insert(CONTENT_TYPE, json);
            Ok::<_, Infallible>(response)
        }
    };
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service_fn(answer))
        .await;
}
