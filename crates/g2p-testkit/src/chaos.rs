//! A fault-injecting HTTP/1.1 proxy to put between a client and a Keymanager (the fake, or a
//! real `kms serve`): it forwards each request and, as a seeded plan says, answers 503, 500
//! or 429 with `Retry-After` instead, resets the connection before answering, cuts the
//! answer mid-body, replaces it with malformed JSON, or adds latency; the token endpoint has
//! a plan of its own and can be down for the next N calls; the whole service can be down for
//! a while. Every decision comes from one seeded generator, so a run's faults are the same
//! sequence every time; each is counted.
//!
//! Written with plain sockets, so a reset is a real TCP RST and a cut answer really stops
//! mid-body.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Fractions of requests that get each fault (the rest are forwarded unchanged).
#[derive(Debug, Clone, Copy, Default)]
pub struct FaultPlan {
    /// HTTP 503 (an ingress's "Service Temporarily Unavailable" page).
    pub unavailable: f64,
    /// HTTP 500 with a MOSIP envelope (`KER-KMS-500`).
    pub server_error: f64,
    /// HTTP 429 with `Retry-After: retry_after_secs`.
    pub too_many_requests: f64,
    /// The `Retry-After` of a 429, seconds.
    pub retry_after_secs: u64,
    /// The connection is reset (TCP RST) after the request is read, before any answer.
    pub reset: f64,
    /// The upstream answer is cut in the middle of its body.
    pub cut: f64,
    /// HTTP 200 with a body that is not JSON.
    pub malformed: f64,
    /// Added latency, drawn uniformly from this range, on every request.
    pub latency: (Duration, Duration),
}

/// What the proxy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChaosCounts {
    /// Requests read, by last path segment (`decrypt`, `token`, ...).
    pub requests: BTreeMap<String, u64>,
    /// Faults injected, by kind (`unavailable`, `reset`, `cut`, ...).
    pub faults: BTreeMap<&'static str, u64>,
}

impl ChaosCounts {
    /// Requests to an endpoint.
    pub fn requests_to(&self, endpoint: &str) -> u64 {
        self.requests.get(endpoint).copied().unwrap_or(0)
    }

    /// Every request read.
    pub fn total_requests(&self) -> u64 {
        self.requests.values().sum()
    }

    /// Every fault injected.
    pub fn total_faults(&self) -> u64 {
        self.faults.values().sum()
    }
}

/// SplitMix64: small, seedable, good enough to draw faults.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn fraction(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Unavailable,
    ServerError,
    TooMany,
    Reset,
    Cut,
    Malformed,
    Down,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::Unavailable => "unavailable",
            Fault::ServerError => "server_error",
            Fault::TooMany => "too_many_requests",
            Fault::Reset => "reset",
            Fault::Cut => "cut",
            Fault::Malformed => "malformed",
            Fault::Down => "down",
        }
    }
}

#[derive(Debug)]
struct State {
    upstream: SocketAddr,
    api: FaultPlan,
    token: FaultPlan,
    rng: Mutex<Rng>,
    down_until: Mutex<Option<Instant>>,
    token_down_calls: AtomicU64,
    counts: Mutex<ChaosCounts>,
}

impl State {
    /// The fault for a request to `path`, and its latency.
    fn decide(&self, path: &str) -> (Fault, Duration) {
        let is_token = path.ends_with("/token");
        if self
            .down_until
            .lock()
            .unwrap()
            .is_some_and(|until| Instant::now() < until)
        {
            return (Fault::Down, Duration::ZERO);
        }
        if is_token
            && self
                .token_down_calls
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return (Fault::Unavailable, Duration::ZERO);
        }
        let plan = if is_token { &self.token } else { &self.api };
        let mut rng = self.rng.lock().unwrap();
        let (low, high) = plan.latency;
        let latency = low + high.saturating_sub(low).mul_f64(rng.fraction());
        let mut draw = rng.fraction();
        for (p, fault) in [
            (plan.unavailable, Fault::Unavailable),
            (plan.server_error, Fault::ServerError),
            (plan.too_many_requests, Fault::TooMany),
            (plan.reset, Fault::Reset),
            (plan.cut, Fault::Cut),
            (plan.malformed, Fault::Malformed),
        ] {
            if draw < p {
                return (fault, latency);
            }
            draw -= p;
        }
        (Fault::None, latency)
    }

    fn count(&self, path: &str, fault: Fault) {
        let endpoint = path
            .split('?')
            .next()
            .unwrap_or(path)
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string();
        let mut counts = self.counts.lock().unwrap();
        *counts.requests.entry(endpoint).or_default() += 1;
        if fault != Fault::None {
            *counts.faults.entry(fault.name()).or_default() += 1;
        }
    }
}

/// The proxy. Dropping it leaves its task running until the test's runtime ends.
#[derive(Debug, Clone)]
pub struct ChaosProxy {
    addr: SocketAddr,
    state: Arc<State>,
}

impl ChaosProxy {
    /// Starts a proxy on `127.0.0.1:0` in front of `upstream`, drawing faults for the API
    /// with `api` and for the token endpoint (any path ending in `/token`) with `token`.
    pub async fn start(upstream: SocketAddr, seed: u64, api: FaultPlan, token: FaultPlan) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            upstream,
            api,
            token,
            rng: Mutex::new(Rng(seed)),
            down_until: Mutex::new(None),
            token_down_calls: AtomicU64::new(0),
            counts: Mutex::new(ChaosCounts::default()),
        });
        let serving = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = serving.clone();
                tokio::spawn(async move {
                    let _ = connection(stream, state).await;
                });
            }
        });
        ChaosProxy { addr, state }
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `url` (of the upstream) with the proxy's address in its place.
    pub fn rewrite(&self, url: &str) -> String {
        url.replace(&self.state.upstream.to_string(), &self.addr.to_string())
    }

    /// Every connection is reset at once for `period` from now (the service is down).
    pub fn down_for(&self, period: Duration) {
        *self.state.down_until.lock().unwrap() = Some(Instant::now() + period);
    }

    /// The service is back.
    pub fn up(&self) {
        *self.state.down_until.lock().unwrap() = None;
    }

    /// The next `n` token requests answer 503.
    pub fn token_down_for_calls(&self, n: u64) {
        self.state.token_down_calls.store(n, Ordering::SeqCst);
    }

    /// What happened so far.
    pub fn counts(&self) -> ChaosCounts {
        self.state.counts.lock().unwrap().clone()
    }
}

/// A request read from the client: its bytes and its path.
struct Request {
    bytes: Vec<u8>,
    path: String,
}

fn header_end(buffer: &[u8]) -> Option<usize> {
    buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

fn content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0)
}

fn is_chunked(head: &[u8]) -> bool {
    String::from_utf8_lossy(head).lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.to_ascii_lowercase().contains("chunked")
        })
    })
}

/// Reads one message (head and a body delimited by `Content-Length` or chunked encoding)
/// from `stream`, with `buffer` holding what was read beyond the previous one. `None` at a
/// clean end of stream.
async fn read_message(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut chunk = [0u8; 16 * 1024];
    let head_len = loop {
        if let Some(end) = header_end(buffer) {
            break end;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = buffer[..head_len].to_vec();
    let total = if is_chunked(&head) {
        loop {
            if let Some(end) = buffer[head_len..]
                .windows(5)
                .position(|w| w == b"0\r\n\r\n")
            {
                break head_len + end + 5;
            }
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buffer.extend_from_slice(&chunk[..n]);
        }
    } else {
        let total = head_len + content_length(&head);
        while buffer.len() < total {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buffer.extend_from_slice(&chunk[..n]);
        }
        total
    };
    let message = buffer[..total].to_vec();
    buffer.drain(..total);
    Some(message)
}

fn path_of(request: &[u8]) -> String {
    let line = request.split(|b| *b == b'\r').next().unwrap_or_default();
    String::from_utf8_lossy(line)
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string()
}

fn answer(status: &str, extra: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n{extra}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Closes `stream` with a TCP reset.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn forward(
    upstream: &mut Option<TcpStream>,
    state: &State,
    request: &[u8],
) -> Option<Vec<u8>> {
    for _ in 0..2 {
        if upstream.is_none() {
            *upstream = TcpStream::connect(state.upstream).await.ok();
        }
        let stream = upstream.as_mut()?;
        let mut buffer = Vec::new();
        if stream.write_all(request).await.is_ok()
            && let Some(response) = read_message(stream, &mut buffer).await
        {
            return Some(response);
        }
        // The upstream closed a kept-alive connection: once more on a new one.
        *upstream = None;
    }
    None
}

async fn connection(mut client: TcpStream, state: Arc<State>) -> Option<()> {
    let mut buffer = Vec::new();
    let mut upstream: Option<TcpStream> = None;
    loop {
        let bytes = read_message(&mut client, &mut buffer).await?;
        let request = Request {
            path: path_of(&bytes),
            bytes,
        };
        let (fault, latency) = state.decide(&request.path);
        state.count(&request.path, fault);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let is_token = request.path.ends_with("/token");
        let reply = match fault {
            Fault::Down | Fault::Reset => {
                reset(client);
                return Some(());
            }
            Fault::Unavailable if is_token => answer(
                "503 Service Unavailable",
                "",
                "application/json",
                r#"{"error":"temporarily_unavailable","error_description":"try again later"}"#,
            ),
            Fault::Unavailable => answer(
                "503 Service Temporarily Unavailable",
                "",
                "text/html",
                "<html><head><title>503 Service Temporarily Unavailable</title></head><body>nginx</body></html>",
            ),
            Fault::ServerError => answer(
                "500 Internal Server Error",
                "",
                "application/json",
                r#"{"id":null,"version":null,"responsetime":"2026-12-04T10:00:00.000Z","metadata":null,"response":null,"errors":[{"errorCode":"KER-KMS-500","message":"Internal server error"}]}"#,
            ),
            Fault::TooMany => answer(
                "429 Too Many Requests",
                &format!(
                    "retry-after: {}\r\n",
                    if is_token {
                        state.token.retry_after_secs
                    } else {
                        state.api.retry_after_secs
                    }
                ),
                "text/plain",
                "slow down",
            ),
            Fault::Malformed => answer(
                "200 OK",
                "",
                "application/json",
                r#"{"id":null,"response":{"data":"#,
            ),
            Fault::Cut | Fault::None => {
                let Some(response) = forward(&mut upstream, &state, &request.bytes).await else {
                    reset(client);
                    return Some(());
                };
                if fault == Fault::Cut {
                    let head = header_end(&response).unwrap_or(response.len());
                    let keep = head + (response.len() - head) / 2;
                    let _ = client.write_all(&response[..keep]).await;
                    let _ = client.shutdown().await;
                    return Some(());
                }
                response
            }
        };
        client.write_all(&reply).await.ok()?;
    }
}
