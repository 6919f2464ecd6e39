//! A small HTTP server on 127.0.0.1 for the demo and the isolation tests: it records every
//! request it receives (so a test can prove a request never arrived) and answers:
//! paths ending in `/hold` once the server's hold hook returns (a test acts while a tool
//! waits on its request), in `/slow` after 60 s, in `/echo-headers-split` with the request's headers
//! in 5-byte chunks, in `/redirect` with a
//! 302 to the metadata address, in `/big` with 64 KiB, in `/echo-headers` with the request's headers as JSON, anything else with
//! a short JSON body naming the path. Echoes of the headers in other shapes:
//! `/echo-headers-gzip` gzip-compressed when the request accepts gzip (as an ordinary server
//! does), `/echo-headers-gzip-always` gzip-compressed whatever was asked, `/echo-headers-truncated`
//! cut off in the middle of the longest header value, `/echo-key-forms` the `x-api-key` header (or
//! the one `?header=` names) in the encodings upstreams commonly echo. `/store` keeps the request's headers and `/stored`
//! answers with them, also on the servers started with `start_beside`. Requests to paths under
//! `/collect` keep their body (a collector or receiver Warden posts to). Replies set with
//! `reply` (a `warden test` case's upstream) come before all of these.

use bytes::Bytes;
use hyper::{Request, Response, body::Incoming, service::service_fn};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    /// The body, of requests to paths under `/collect` (what Warden posts to a collector or
    /// a receiver); empty for the rest.
    pub body: Bytes,
}

/// A response set in advance for the paths under a prefix (`LoopbackServer::reply`).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

type Replies = Arc<Mutex<Vec<(String, Reply)>>>;

/// Called with each `/hold` request; the response waits until the future it returns is done.
pub type Hold =
    Arc<dyn Fn(Received) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

pub struct LoopbackServer {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    memo: Memo,
    replies: Replies,
    task: tokio::task::JoinHandle<()>,
}

/// What `/store` kept, for `/stored`.
type Memo = Arc<Mutex<String>>;

impl LoopbackServer {
    /// Binds a free port on 127.0.0.1 and serves until dropped.
    pub async fn start() -> std::io::Result<LoopbackServer> {
        LoopbackServer::start_with(None).await
    }

    /// The same, with a hook that holds `/hold` requests.
    pub async fn start_with(hold: Option<Hold>) -> std::io::Result<LoopbackServer> {
        LoopbackServer::serve(hold, Memo::default()).await
    }

    /// Another server (another origin) that shares this one's memo: what a request stored on
    /// one, `/stored` on the other answers with.
    pub async fn start_beside(&self) -> std::io::Result<LoopbackServer> {
        LoopbackServer::serve(None, self.memo.clone()).await
    }

    async fn serve(hold: Option<Hold>, memo: Memo) -> std::io::Result<LoopbackServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let replies = Replies::default();
        let log = received.clone();
        let shared = memo.clone();
        let set = replies.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                let hold = hold.clone();
                let memo = shared.clone();
                let set = set.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let log = log.clone();
                        let hold = hold.clone();
                        let memo = memo.clone();
                        let set = set.clone();
                        async move {
                            let reply = answer(req, &log, hold, &memo, &set).await;
                            Ok::<_, std::convert::Infallible>(reply)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(LoopbackServer {
            addr,
            received,
            memo,
            replies,
            task,
        })
    }

    /// From now on, answers requests whose path starts with `prefix` with `reply` (the
    /// longest prefix set that matches wins).
    pub fn reply(&self, prefix: &str, reply: Reply) {
        lock(&self.replies).push((prefix.to_string(), reply));
    }

    /// Forgets every reply set with `reply`.
    pub fn clear_replies(&self) {
        lock(&self.replies).clear();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        lock(&self.received).clone()
    }
}

/// The reply set for `path` (the longest prefix that matches), if any.
fn reply_for(replies: &Mutex<Vec<(String, Reply)>>, path: &str) -> Option<Reply> {
    lock(replies)
        .iter()
        .filter(|(prefix, _)| path.starts_with(prefix.as_str()))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, reply)| reply.clone())
}

fn respond(reply: Reply) -> Response<Chunks> {
    let mut response = Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(name, value);
    }
    // A reply's status and headers are checked where they are read; should one still be
    // invalid, the answer is a plain 500 rather than a panic.
    response
        .body(Chunks::whole(reply.body))
        .unwrap_or_else(|_| {
            let mut error = Response::new(Chunks::whole("invalid reply"));
            *error.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
            error
        })
}

/// Nothing panics while these locks are held; a poisoned log is still a log.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A response body sent as the given chunks (chunked transfer encoding when more than one).
pub struct Chunks(std::collections::VecDeque<Bytes>);

impl Chunks {
    fn whole(body: impl Into<Bytes>) -> Chunks {
        Chunks(
            [body.into()]
                .into_iter()
                .filter(|b| !b.is_empty())
                .collect(),
        )
    }

    fn split(body: String, size: usize) -> Chunks {
        let bytes = Bytes::from(body);
        Chunks(
            (0..bytes.len())
                .step_by(size)
                .map(|i| bytes.slice(i..(i + size).min(bytes.len())))
                .collect(),
        )
    }
}

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

fn gzip(body: &str) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(body.as_bytes())
        .and_then(|()| encoder.finish())
        .unwrap_or_default()
}

/// `value` in the encodings an upstream commonly echoes a header in.
fn encodings(value: &str) -> serde_json::Value {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let url: String = value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    serde_json::json!({
        "base64": STANDARD.encode(value),
        "base64url": URL_SAFE_NO_PAD.encode(value),
        "basic": STANDARD.encode(format!("user:{value}")),
        "url": url,
        // As it is, which the JSON body escapes.
        "json": value,
    })
}

/// The `.expect("static response")` below cannot fail: the builders get only fixed, valid
/// statuses and headers; nothing from the request goes into them.
async fn answer(
    req: Request<Incoming>,
    log: &Mutex<Vec<Received>>,
    hold: Option<Hold>,
    memo: &Mutex<String>,
    replies: &Mutex<Vec<(String, Reply)>>,
) -> Response<Chunks> {
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let path = req.uri().path().to_string();
    let mut received = Received {
        method: req.method().to_string(),
        path: path.clone(),
        query: req.uri().query().map(str::to_string),
        headers: headers.clone(),
        body: Bytes::new(),
    };
    if path.starts_with("/collect") {
        use http_body_util::BodyExt;
        let limited = http_body_util::Limited::new(req.into_body(), 16 << 20);
        received.body = limited
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        lock(log).push(received);
        return match reply_for(replies, &path) {
            Some(reply) => respond(reply),
            None => Response::new(Chunks::whole("{}")),
        };
    }
    lock(log).push(received.clone());
    if let Some(reply) = reply_for(replies, &path) {
        return respond(reply);
    }
    let body = match path.rsplit('/').next().unwrap_or("") {
        "hold" => {
            if let Some(hold) = hold {
                hold(received).await;
            }
            serde_json::json!({ "held": true }).to_string()
        }
        "slow" => {
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            "{}".to_string()
        }
        "redirect" => {
            return Response::builder()
                .status(302)
                .header("location", "http://169.254.169.254/latest/meta-data/")
                .body(Chunks::whole(String::new()))
                .expect("static response");
        }
        "big" => "x".repeat(64 * 1024),
        "echo-headers" => serde_json::json!({ "headers": headers }).to_string(),
        "echo-headers-gzip" | "echo-headers-gzip-always" => {
            let body = serde_json::json!({ "headers": headers }).to_string();
            let accepts = headers
                .iter()
                .any(|(k, v)| k == "accept-encoding" && v.contains("gzip"));
            if accepts || path.ends_with("-always") {
                return Response::builder()
                    .header("content-type", "application/json")
                    .header("content-encoding", "gzip")
                    .body(Chunks::whole(gzip(&body)))
                    .expect("static response");
            }
            body
        }
        "echo-headers-truncated" => {
            // Cut in the middle of the longest header value, as a size limit would.
            let body = serde_json::json!({ "headers": headers }).to_string();
            let longest = headers
                .iter()
                .map(|(_, v)| v.as_str())
                .max_by_key(|v| v.len())
                .unwrap_or("");
            let cut = body
                .find(longest)
                .map_or(body.len(), |at| at + longest.len() / 2);
            body.get(..cut).unwrap_or(&body).to_string()
        }
        "echo-key-forms" => {
            // The header named by `?header=` (default `x-api-key`).
            let name = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("header="))
                .unwrap_or("x-api-key")
                .to_ascii_lowercase();
            let key = headers
                .iter()
                .find(|(k, _)| *k == name)
                .map_or("", |(_, v)| v.as_str());
            encodings(key).to_string()
        }
        "store" => {
            *lock(memo) = serde_json::json!({ "headers": headers }).to_string();
            serde_json::json!({ "stored": true }).to_string()
        }
        "stored" => lock(memo).clone(),
        "echo-headers-split" => {
            // The same, sent 5 bytes per chunk: a credential echo straddles chunk boundaries.
            let body = serde_json::json!({ "headers": headers }).to_string();
            return Response::builder()
                .header("content-type", "application/json")
                .body(Chunks::split(body, 5))
                .expect("static response");
        }
        _ => serde_json::json!({ "service": "warden-loopback", "path": path, "ok": true })
            .to_string(),
    };
    Response::builder()
        .header("content-type", "application/json")
        .body(Chunks::whole(body))
        .expect("static response")
}
