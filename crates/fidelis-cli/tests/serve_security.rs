//! `fidelis serve` drivable only by its user, over real HTTP on 127.0.0.1: a foreign `Host`
//! or `Origin` gets 403, a missing or wrong token 401, job ids are random, slow or idle
//! connections are closed, and out-of-range numbers get 422 naming the field before any job
//! starts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use fidelis_cli::serve::{Access, Limits, ServerState, start};
use fidelis_models::Model;
use fidelis_models::fetch::organism_path;
use serde_json::{Value, json};

/// How long any one request may take before the test calls it a hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The header read timeout of the test servers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// The idle timeout of the test servers (longer than the header and request timeouts, so
/// the tests see which one closed a connection).
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// The token of the server that has one.
const TOKEN: &str = "test-token-0123456789abcdef";

fn server(access: Access) -> SocketAddr {
    let limits = Limits {
        header_read_timeout_ms: HEADER_TIMEOUT.as_millis() as u64,
        idle_timeout_ms: IDLE_TIMEOUT.as_millis() as u64,
        request_timeout_ms: 1_500,
        ..Limits::default()
    };
    server_with(access, limits)
}

fn server_with(access: Access, limits: Limits) -> SocketAddr {
    let device = fidelis_cli::device::parse_device("cpu").unwrap();
    let model = Model::load(&organism_path(), &device).expect("the organism loads");
    let state = ServerState::with_access(vec![("organism".into(), model)], "cpu", limits, access);
    let running = start(state, "127.0.0.1:0".parse().unwrap()).expect("server starts");
    let addr = running.addr;
    std::mem::forget(running); // serves until the test process ends
    addr
}

/// A response: status, headers (lowercase names) and the body as JSON (or a string).
struct Answer {
    status: u16,
    head: String,
    body: Value,
}

/// One HTTP/1.1 request with `Connection: close` and the extra header lines `headers`; the
/// `Host` header is `host`, or the server's address when `None`.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    host: Option<&str>,
    headers: &[&str],
    body: Option<&Value>,
) -> Answer {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(REQUEST_TIMEOUT)).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        host.map_or_else(|| addr.to_string(), String::from),
        body.len()
    );
    for line in headers {
        head += &format!("{line}\r\n");
    }
    head += "\r\n";
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse(&String::from_utf8_lossy(&raw))
}

fn parse(text: &str) -> Answer {
    let (head, payload) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = serde_json::from_str(payload).unwrap_or(Value::String(payload.to_string()));
    Answer {
        status,
        head: head.to_ascii_lowercase(),
        body,
    }
}

fn get(addr: SocketAddr, path: &str, headers: &[&str]) -> Answer {
    request(addr, "GET", path, None, headers, None)
}

fn post(addr: SocketAddr, path: &str, body: &Value) -> Answer {
    request(addr, "POST", path, None, &[], Some(body))
}

fn error_of(answer: &Answer) -> String {
    answer.body["error"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn running_jobs(addr: SocketAddr) -> u64 {
    let info = get(addr, "/api/info", &[]);
    assert_eq!(info.status, 200, "{}", info.body);
    info.body["running_jobs"].as_u64().unwrap()
}

#[test]
fn a_foreign_host_or_origin_gets_403() {
    let addr = server(Access::default());
    let port = addr.port();
    let own = [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ];
    for host in &own {
        let answer = request(addr, "GET", "/api/info", Some(host), &[], None);
        assert_eq!(answer.status, 200, "{host}: {}", answer.body);
    }
    let foreign = [
        format!("attacker.example:{port}"),
        format!("127.0.0.1:{}", port.wrapping_add(1)),
        "127.0.0.1".to_string(),
        format!("localhost.attacker.example:{port}"),
    ];
    for host in &foreign {
        for (method, path) in [("GET", "/"), ("GET", "/api/info"), ("GET", "/nothing")] {
            let answer = request(addr, method, path, Some(host), &[], None);
            assert_eq!(answer.status, 403, "{host} {path}: {}", answer.body);
            assert!(error_of(&answer).contains("Host"), "{}", answer.body);
        }
        let answer = request(
            addr,
            "POST",
            "/api/context",
            Some(host),
            &[],
            Some(&json!({"preset": "organism-qa"})),
        );
        assert_eq!(answer.status, 403, "{}", answer.body);
    }
    // An absolute request URI must name this server too.
    let answer = request(
        addr,
        "GET",
        &format!("http://attacker.example:{port}/api/info"),
        None,
        &[],
        None,
    );
    assert_eq!(answer.status, 403, "{}", answer.body);

    let own_origin = format!("Origin: http://127.0.0.1:{port}");
    assert_eq!(get(addr, "/api/info", &[&own_origin]).status, 200);
    for origin in [
        format!("Origin: http://attacker.example:{port}"),
        format!("Origin: https://127.0.0.1:{port}"),
        "Origin: null".to_string(),
    ] {
        let answer = request(
            addr,
            "POST",
            "/api/context",
            None,
            &[&origin],
            Some(&json!({"preset": "organism-qa"})),
        );
        assert_eq!(answer.status, 403, "{origin}: {}", answer.body);
        assert!(
            error_of(&answer).contains("cross-origin"),
            "{}",
            answer.body
        );
    }
    assert_eq!(running_jobs(addr), 0, "no refused request started a job");
}

#[test]
fn job_ids_are_random_hex() {
    let addr = server(Access::default());
    let mut ids = Vec::new();
    for _ in 0..2 {
        let answer = post(addr, "/api/context", &json!({"preset": "organism-qa"}));
        assert_eq!(answer.status, 202, "{}", answer.body);
        let id = answer.body["job"].as_str().unwrap().to_string();
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        // One job per model: wait for this one before starting the next.
        let start = Instant::now();
        loop {
            let status = get(addr, &format!("/api/jobs/{id}"), &[]);
            assert_eq!(status.status, 200, "{}", status.body);
            if status.body["state"] != "running" {
                break;
            }
            assert!(start.elapsed() < REQUEST_TIMEOUT, "{}", status.body);
            std::thread::sleep(Duration::from_millis(50));
        }
        ids.push(id);
    }
    let [a, b] = [&ids[0], &ids[1]].map(|id| u128::from_str_radix(id, 16).unwrap());
    assert!(a.abs_diff(b) > 1 << 64, "ids {ids:?} look sequential");
    // A neighbour of a real id is no job.
    let neighbour = format!("{:032x}", a.wrapping_add(1));
    assert_eq!(
        get(addr, &format!("/api/jobs/{neighbour}"), &[]).status,
        404
    );
}

#[test]
fn a_token_is_needed_when_the_server_has_one() {
    let addr = server(Access {
        token: Some(TOKEN.into()),
        ..Access::default()
    });
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let wrong = format!("Authorization: Bearer {}x", &TOKEN[..TOKEN.len() - 1]);
    for path in [
        "/",
        "/api/info",
        "/api/jobs/0123456789abcdef0123456789abcdef",
    ] {
        let answer = get(addr, path, &[]);
        assert_eq!(answer.status, 401, "{path}: {}", answer.body);
        assert!(answer.head.contains("www-authenticate: bearer"));
        assert!(error_of(&answer).contains("token"), "{}", answer.body);
        assert_eq!(get(addr, path, &[&wrong]).status, 401, "{path}");
        assert_eq!(get(addr, path, &["Authorization: Basic eDp5"]).status, 401);
    }
    let answer = post(addr, "/api/context", &json!({"preset": "organism-qa"}));
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert_eq!(running_jobs_with(addr, &bearer), 0);
    assert_eq!(get(addr, "/api/info", &[&bearer]).status, 200);
    assert_eq!(get(addr, "/", &[&bearer]).status, 200);

    // The page: `/?token=` sets the cookie and sends the browser to `/`.
    assert_eq!(get(addr, "/?token=wrong", &[]).status, 401);
    let answer = get(addr, &format!("/?token={TOKEN}"), &[]);
    assert_eq!(answer.status, 303, "{}", answer.body);
    assert!(answer.head.contains("location: /\r\n"), "{}", answer.head);
    let cookie = format!("fidelis_token_{}={TOKEN}", addr.port());
    let set_cookie = answer
        .head
        .lines()
        .find(|l| l.starts_with("set-cookie:"))
        .unwrap_or_default();
    assert!(
        set_cookie.contains(&cookie.to_ascii_lowercase()),
        "{set_cookie}"
    );
    assert!(set_cookie.contains("httponly") && set_cookie.contains("samesite=strict"));
    let with_cookie = format!("Cookie: {cookie}");
    assert_eq!(get(addr, "/", &[&with_cookie]).status, 200);
    assert_eq!(get(addr, "/app.js", &[&with_cookie]).status, 200);
    assert_eq!(get(addr, "/api/info", &[&with_cookie]).status, 200);
    let stale = format!("Cookie: fidelis_token_{}=wrong", addr.port());
    assert_eq!(get(addr, "/api/info", &[&stale]).status, 401);
    // The token does not excuse a foreign Host.
    let answer = request(
        addr,
        "GET",
        &format!("/?token={TOKEN}"),
        Some("attacker.example"),
        &[],
        None,
    );
    assert_eq!(answer.status, 403);
}

fn running_jobs_with(addr: SocketAddr, auth: &str) -> u64 {
    let info = get(addr, "/api/info", &[auth]);
    assert_eq!(info.status, 200, "{}", info.body);
    info.body["running_jobs"].as_u64().unwrap()
}

/// Reads until the server closes the connection; returns what it sent and when it closed.
fn read_until_closed(stream: &mut TcpStream) -> (String, Duration) {
    let start = Instant::now();
    stream.set_read_timeout(Some(HEADER_TIMEOUT * 10)).unwrap();
    let mut raw = Vec::new();
    let result = stream.read_to_end(&mut raw);
    let waited = start.elapsed();
    assert!(
        result.is_ok() || raw.is_empty() && waited < HEADER_TIMEOUT * 10,
        "the connection stayed open: {result:?}"
    );
    (String::from_utf8_lossy(&raw).into_owned(), waited)
}

#[test]
fn slow_and_idle_connections_are_closed() {
    let addr = server(Access::default());
    // Slowloris: a request line, then nothing.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1")
        .unwrap();
    let (_, waited) = read_until_closed(&mut slow);
    assert!(
        waited >= HEADER_TIMEOUT / 2 && waited < HEADER_TIMEOUT * 5,
        "closed after {waited:?}"
    );

    // A kept-alive connection that sends no second request.
    let mut idle = TcpStream::connect(addr).unwrap();
    let head = format!("GET /api/info HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    idle.write_all(head.as_bytes()).unwrap();
    idle.set_read_timeout(Some(REQUEST_TIMEOUT)).unwrap();
    let mut first = vec![0u8; 64 * 1024];
    let n = idle.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    let (_, waited) = read_until_closed(&mut idle);
    assert!(
        waited >= HEADER_TIMEOUT / 2 && waited < IDLE_TIMEOUT,
        "closed after {waited:?}: the header timeout also bounds a kept-alive connection"
    );

    // A body that stops halfway: the request timeout answers 408.
    let mut stalled = TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /api/context HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"preset\":"
    );
    stalled.write_all(head.as_bytes()).unwrap();
    let (text, waited) = read_until_closed(&mut stalled);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(waited < IDLE_TIMEOUT, "closed after {waited:?}");
    // The server still serves.
    assert_eq!(get(addr, "/api/info", &[]).status, 200);
}

#[test]
fn a_connection_on_which_no_byte_moves_is_closed() {
    // The idle timeout alone: header and request timeouts far away.
    let idle = Duration::from_secs(1);
    let addr = server_with(
        Access::default(),
        Limits {
            header_read_timeout_ms: 30_000,
            idle_timeout_ms: idle.as_millis() as u64,
            request_timeout_ms: 30_000,
            ..Limits::default()
        },
    );
    let mut stalled = TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /api/context HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"preset\":"
    );
    stalled.write_all(head.as_bytes()).unwrap();
    let (text, waited) = read_until_closed(&mut stalled);
    // The body read fails (400) and the connection is closed, well before the other timeouts.
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 400"),
        "{text}"
    );
    assert!(
        waited >= idle / 2 && waited < idle * 5,
        "closed after {waited:?}"
    );
    assert_eq!(running_jobs(addr), 0);
}

#[test]
fn out_of_range_numbers_get_422_naming_the_field_and_start_no_job() {
    let addr = server(Access::default());
    let context = |field: &str, value: Value| {
        let mut body = json!({"preset": "organism-qa"});
        body[field] = value;
        ("/api/context", field.to_string(), body)
    };
    let circuit = |field: &str, value: Value| {
        let mut body = json!({"task": "ioi", "method": "eap"});
        body[field] = value;
        ("/api/circuit", field.to_string(), body)
    };
    let two_63: u64 = 1 << 63;
    let cases = [
        context("max_new_tokens", json!(0)),
        context("max_new_tokens", json!(-1)),
        context("max_new_tokens", json!(100_000)),
        context("cti_std", json!(1e39)),
        context("cci_std", json!(-1e39)),
        context("cti_topk", json!(two_63)),
        context("cci_topk", json!(0)),
        context("ig_steps", json!(0)),
        context("ig_steps", json!(1_000_000)),
        circuit("n", json!(0)),
        circuit("n", json!(1_000_000_000_000u64)),
        circuit(
            "n",
            serde_json::from_str::<Value>("18446744073709551616").unwrap(),
        ),
        circuit("steps", json!(1_000_000_000)),
        circuit("batch_size", json!(0)),
        circuit("batch_size", json!(two_63)),
        circuit("steps_per_pass", json!(0)),
        circuit("exact_per_pass", json!(0)),
        circuit("workers", json!(1_000_000)),
        circuit("seed", json!(-5)),
    ];
    for (path, field, body) in cases {
        let answer = post(addr, path, &body);
        assert_eq!(answer.status, 422, "{body}: {}", answer.body);
        assert_eq!(
            answer.body["field"],
            field.as_str(),
            "{body}: {}",
            answer.body
        );
        assert!(
            error_of(&answer).contains(&field),
            "{body}: {}",
            answer.body
        );
        assert_eq!(running_jobs(addr), 0, "{body} started a job");
    }
    // In range, the same requests run.
    let answer = post(
        addr,
        "/api/context",
        &json!({"preset": "organism-qa", "cti_topk": 2}),
    );
    assert_eq!(answer.status, 202, "{}", answer.body);
}
