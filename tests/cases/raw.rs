//! A bare HTTP/1.1 client on a TCP socket, for what reqwest would tidy up:
//! exact request targets, hop-by-hop headers, bytes counted as they arrive,
//! and connections kept across a gateway shutdown.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One answer as it came off the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body with HTTP framing (chunks) removed, content coding untouched.
    pub body: Vec<u8>,
    /// Bytes after the head, chunk framing included.
    pub wire_len: usize,
    pub chunked: bool,
}

impl RawResponse {
    /// The first header of that name (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            let text = String::from_utf8_lossy(&self.body);
            panic!("not JSON ({error}): {text}")
        })
    }
}

/// `GET target` with a Host header and `headers`, ready to write.
pub fn get(target: &str, headers: &[(&str, &str)]) -> String {
    let mut text = format!("GET {target} HTTP/1.1\r\nhost: gateway.test\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text
}

/// Sends one request on a new connection, asking the server to close it,
/// and reads everything until it does: the body is what was really sent.
pub async fn exchange_until_close(
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
) -> RawResponse {
    let mut headers = headers.to_vec();
    headers.push(("connection", "close"));
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connect to the gateway");
    stream
        .write_all(get(target, &headers).as_bytes())
        .await
        .expect("write request");

    let mut bytes = Vec::new();
    stream
        .read_to_end(&mut bytes)
        .await
        .expect("read until close");
    let head = parse_head(&bytes).expect("a complete response head");
    let raw_body = &bytes[head.len..];
    let body = if head.chunked {
        dechunk(raw_body).expect("complete chunked body").0
    } else {
        raw_body.to_vec()
    };
    head.into_response(body, raw_body.len())
}

/// Reads one response from a kept-alive connection; `Ok(None)` when the
/// server closed it before sending a byte.
pub async fn read_response(stream: &mut TcpStream) -> io::Result<Option<RawResponse>> {
    let mut bytes = Vec::new();
    let head = loop {
        if let Some(head) = parse_head(&bytes) {
            break head;
        }
        if read_more(stream, &mut bytes).await? == 0 {
            if bytes.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "cut inside the head",
            ));
        }
    };

    loop {
        let raw_body = &bytes[head.len..];
        let framed = match (head.chunked, head.content_length) {
            (true, _) => dechunk(raw_body),
            (false, Some(length)) if raw_body.len() >= length => {
                Some((raw_body[..length].to_vec(), length))
            }
            (false, Some(_)) => None,
            (false, None) if head.status == 204 || head.status == 304 => Some((Vec::new(), 0)),
            (false, None) => None,
        };
        if let Some((body, used)) = framed {
            return Ok(Some(head.into_response(body, used)));
        }
        if read_more(stream, &mut bytes).await? == 0 {
            let closed_body = bytes[head.len..].to_vec();
            let used = closed_body.len();
            if head.chunked || head.content_length.is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "cut inside the body",
                ));
            }
            return Ok(Some(head.into_response(closed_body, used)));
        }
    }
}

async fn read_more(stream: &mut TcpStream, bytes: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 8192];
    let read = stream.read(&mut chunk).await?;
    bytes.extend_from_slice(&chunk[..read]);
    Ok(read)
}

struct Head {
    len: usize,
    status: u16,
    headers: Vec<(String, String)>,
    content_length: Option<usize>,
    chunked: bool,
}

impl Head {
    fn into_response(self, body: Vec<u8>, wire_len: usize) -> RawResponse {
        RawResponse {
            status: self.status,
            headers: self.headers,
            body,
            wire_len,
            chunked: self.chunked,
        }
    }
}

fn parse_head(bytes: &[u8]) -> Option<Head> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let text = String::from_utf8_lossy(&bytes[..end]);
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let status = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let value = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let chunked =
        value("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let content_length = value("content-length").and_then(|v| v.parse().ok());
    Some(Head {
        len: end + 4,
        status,
        headers,
        content_length,
        chunked,
    })
}

/// The payload of a complete chunked body and the bytes it used; `None`
/// while incomplete.
fn dechunk(raw: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line_end = at + raw[at..].windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&raw[at..line_end]);
        let size_text = size_text
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let size = usize::from_str_radix(&size_text, 16).ok()?;
        let data_start = line_end + 2;
        if size == 0 {
            let trailer_end =
                data_start + raw[data_start..].windows(2).position(|w| w == b"\r\n")?;
            return Some((body, trailer_end + 2));
        }
        let data_end = data_start + size;
        if raw.len() < data_end + 2 {
            return None;
        }
        body.extend_from_slice(&raw[data_start..data_end]);
        at = data_end + 2;
    }
}
