//! `fidelis serve`'s JSON API on the organism: bad requests get a 4xx with a message and the
//! server keeps serving; concurrent requests all complete or get "busy"; jobs report progress,
//! finish and can be cancelled. Nothing here depends on the organism's exact outputs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use fidelis_cli::serve::{Limits, ServerState, start};
use fidelis_models::Model;
use fidelis_models::fetch::organism_path;
use serde_json::{Value, json};

/// How long any one request may take before the test calls it a hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

fn server() -> SocketAddr {
    let device = fidelis_cli::device::parse_device("cpu").unwrap();
    let model = Model::load(&organism_path(), &device).expect("the organism loads");
    let state = ServerState::new(vec![("organism".into(), model)], "cpu", Limits::default());
    let running = start(state, "127.0.0.1:0".parse().unwrap()).expect("server starts");
    let addr = running.addr;
    std::mem::forget(running); // serves until the test process ends
    addr
}

/// One HTTP/1.1 request; returns the status and the body parsed as JSON (or as a string).
fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(REQUEST_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(REQUEST_TIMEOUT)).unwrap();
    let body = body.unwrap_or(b"");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    // The server may answer an oversize body before reading it all and close the socket.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, payload) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let payload = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(payload)
    } else {
        payload.to_string()
    };
    let value = serde_json::from_str(&payload).unwrap_or(Value::String(payload));
    (status, value)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Equal JSON up to the last bits of f32 numbers (the download is f32 text; the job result
/// holds the same f32s widened to f64).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-6 * x.abs().max(y.abs()).max(1.0)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

fn post(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    request(addr, "POST", path, Some(body.to_string().as_bytes()))
}

fn error_of(value: &Value) -> String {
    value["error"].as_str().unwrap_or_default().to_string()
}

/// Polls a job until it leaves "running", within `limit`.
fn wait_job(addr: SocketAddr, id: &str, limit: Duration) -> Value {
    let start = Instant::now();
    loop {
        let (status, job) = request(addr, "GET", &format!("/api/jobs/{id}"), None);
        assert_eq!(status, 200, "{job}");
        if job["state"] != "running" {
            return job;
        }
        assert!(start.elapsed() < limit, "job {id} still running: {job}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_serving(addr: SocketAddr) {
    let (status, info) = request(addr, "GET", "/api/info", None);
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["models"][0]["name"], "organism");
}

#[test]
fn bad_requests_get_a_4xx_with_a_message_and_the_server_keeps_serving() {
    let addr = server();
    // (what, status, body, words the message must contain)
    let too_long = "The key is in the red box. ".repeat(30);
    let huge = "x".repeat(Limits::default().max_text_chars + 1);
    let cases: Vec<(&str, u16, Vec<u8>, &str)> = vec![
        ("malformed JSON", 400, b"{\"preset\": ".to_vec(), "JSON"),
        ("not an object", 400, b"[1, 2]".to_vec(), "object"),
        (
            "oversize body",
            413,
            json!({"input_context": "a".repeat(Limits::default().max_body_bytes)})
                .to_string()
                .into_bytes(),
            "limit",
        ),
        (
            "text over the character limit",
            413,
            json!({"input_context": huge, "input_current": "Where?"})
                .to_string()
                .into_bytes(),
            "characters",
        ),
        (
            "text longer than the model's window",
            422,
            json!({"preset": "organism-qa", "input_context": too_long})
                .to_string()
                .into_bytes(),
            "window",
        ),
        (
            "unknown preset",
            400,
            json!({"preset": "no-such-preset"}).to_string().into_bytes(),
            "unknown preset",
        ),
        (
            "unknown model",
            400,
            json!({"model": "gpt-17", "preset": "organism-qa"})
                .to_string()
                .into_bytes(),
            "unknown model",
        ),
        (
            "unknown field",
            400,
            json!({"preset": "organism-qa", "temperature": 2})
                .to_string()
                .into_bytes(),
            "temperature",
        ),
        (
            "bad method name",
            400,
            json!({"preset": "organism-qa", "method": "telepathy"})
                .to_string()
                .into_bytes(),
            "telepathy",
        ),
        (
            "too many new tokens",
            422,
            json!({"preset": "organism-qa", "max_new_tokens": 100_000})
                .to_string()
                .into_bytes(),
            "max_new_tokens",
        ),
    ];
    for (what, want, body, words) in cases {
        let (status, value) = request(addr, "POST", "/api/context", Some(&body));
        assert_eq!(status, want, "{what}: {value}");
        let message = error_of(&value);
        assert!(message.contains(words), "{what}: {message:?}");
        assert_serving(addr);
    }
    let circuit_cases = [
        (json!({"task": "chess"}), "chess"),
        (json!({"method": "magic"}), "magic"),
        (json!({"model": "gpt-17"}), "unknown model"),
        (json!({"n": 0}), "n is 0"),
    ];
    for (body, words) in circuit_cases {
        let (status, value) = post(addr, "/api/circuit", &body);
        assert!((400..500).contains(&status), "{body}: {status} {value}");
        assert!(error_of(&value).contains(words), "{body}: {value}");
    }
    let (status, value) = request(addr, "GET", "/api/jobs/999999", None);
    assert_eq!(status, 404, "{value}");
    let (status, value) = request(
        addr,
        "GET",
        "/api/jobs/0123456789abcdef0123456789abcdef",
        None,
    );
    assert_eq!(status, 404, "{value}");
    let (status, value) = request(addr, "GET", "/api/nothing", None);
    assert_eq!(status, 404, "{value}");
    assert_serving(addr);
}

#[test]
fn twenty_concurrent_requests_complete_or_get_busy() {
    let addr = server();
    let start = Instant::now();
    let threads: Vec<_> = (0..20)
        .map(|i| {
            std::thread::spawn(move || {
                if i % 5 == 4 {
                    request(addr, "GET", "/api/info", None)
                } else {
                    post(addr, "/api/context", &json!({"preset": "organism-qa"}))
                }
            })
        })
        .collect();
    let answers: Vec<(u16, Value)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let mut jobs = Vec::new();
    for (status, value) in &answers {
        match status {
            200 => assert_eq!(value["models"][0]["name"], "organism"),
            202 => jobs.push(value["job"].as_str().unwrap().to_string()),
            409 | 429 => assert!(error_of(value).contains("busy"), "{value}"),
            other => panic!("unexpected {other}: {value}"),
        }
    }
    assert!(!jobs.is_empty(), "no request was accepted: {answers:?}");
    for id in jobs {
        let job = wait_job(addr, &id, Duration::from_secs(120));
        assert_eq!(job["state"], "done", "{job}");
        let out = &job["result"]["attribution"];
        assert!(!out["output_current_tokens"].as_array().unwrap().is_empty());
        assert!(
            job["result"]["command"]
                .as_str()
                .unwrap()
                .starts_with("fidelis context --model organism")
        );
        let (status, file) = request(
            addr,
            "GET",
            &format!("/api/jobs/{id}/files/result.json"),
            None,
        );
        assert_eq!(status, 200);
        assert!(
            same_json(&file, out),
            "the download is the attribution itself:\n{file}\n{out}"
        );
    }
    assert!(start.elapsed() < Duration::from_secs(180));
    assert_serving(addr);
}

#[test]
fn circuit_jobs_report_progress_finish_and_cancel() {
    let addr = server();
    let (status, value) = post(
        addr,
        "/api/circuit",
        &json!({"task": "ioi", "method": "eap", "n": 8, "batch_size": 8}),
    );
    assert_eq!(status, 202, "{value}");
    let job = wait_job(
        addr,
        value["job"].as_str().unwrap(),
        Duration::from_secs(120),
    );
    assert_eq!(job["state"], "done", "{job}");
    let result = &job["result"];
    let points = result["curve"]["points"].as_array().unwrap();
    assert!(points.len() >= 5, "{result}");
    let circuits = result["graph"]["circuits"].as_array().unwrap();
    assert_eq!(circuits.len(), points.len());
    assert!(!result["graph"]["edges"].as_array().unwrap().is_empty());
    assert!(
        result["command"]
            .as_str()
            .unwrap()
            .starts_with("fidelis circuit discover --model organism --task ioi")
    );
    let id = job["id"].as_str().unwrap();
    let (status, graph) = request(
        addr,
        "GET",
        &format!("/api/jobs/{id}/files/graph.json"),
        None,
    );
    assert_eq!(status, 200);
    assert!(graph["edges"].is_object(), "EAP-IG format");

    // A long job: a second request on the same model is busy; cancelling stops it.
    let long =
        json!({"task": "ioi", "method": "eap-ig-inputs", "n": 256, "steps": 50, "batch_size": 4});
    let (status, value) = post(addr, "/api/circuit", &long);
    assert_eq!(status, 202, "{value}");
    let id = value["job"].as_str().unwrap().to_string();
    let (status, busy) = post(addr, "/api/context", &json!({"preset": "organism-qa"}));
    assert_eq!(status, 409, "{busy}");
    assert!(error_of(&busy).contains("busy"), "{busy}");
    assert!(
        busy.get("job").is_none(),
        "a busy answer does not tell the running job's id"
    );
    let (status, _) = post(addr, &format!("/api/jobs/{id}/cancel"), &json!({}));
    assert_eq!(status, 200);
    let job = wait_job(addr, &id, Duration::from_secs(60));
    assert_eq!(job["state"], "cancelled", "{job}");
    // The model is free again.
    let (status, value) = post(addr, "/api/context", &json!({"preset": "organism-qa"}));
    assert_eq!(status, 202, "{value}");
    let job = wait_job(
        addr,
        value["job"].as_str().unwrap(),
        Duration::from_secs(60),
    );
    assert_eq!(job["state"], "done", "{job}");
}

#[test]
fn a_non_loopback_host_must_be_asked_for() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fidelis"))
        .args(["serve", "--host", "0.0.0.0", "--port", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--allow-remote"), "{stderr}");
}

/// The server serves the encoder-decoder organism next to the organism: its presets are
/// offered, a context job on it finds the pronoun and the output-context cues, and a circuit
/// request on it is a clear 400.
#[test]
fn an_encoder_decoder_serves_context_jobs() {
    let device = fidelis_cli::device::parse_device("cpu").unwrap();
    let dir =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/seq2seq-organism");
    let name = fidelis_cli::serve::presets::SEQ2SEQ_ORGANISM;
    let seq2seq = fidelis_models::Seq2SeqModel::load(&dir, &device).unwrap();
    let organism = Model::load(&organism_path(), &device).unwrap();
    let state = ServerState::serving(
        vec![
            (
                "organism".into(),
                fidelis_cli::model_args::AnyModel::DecoderOnly(organism),
            ),
            (
                name.into(),
                fidelis_cli::model_args::AnyModel::Seq2Seq(seq2seq),
            ),
        ],
        "cpu",
        Limits::default(),
        Default::default(),
    );
    let running = start(state, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = running.addr;
    std::mem::forget(running);
    let (status, info) = request(addr, "GET", "/api/info", None);
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["models"][1]["kind"], "encoder-decoder");
    let presets = info["presets"].as_array().unwrap();
    assert!(
        presets
            .iter()
            .any(|p| p["id"] == "seq2seq-organism-pronoun"),
        "{info}"
    );
    let (status, value) = post(
        addr,
        "/api/context",
        &json!({"preset": "seq2seq-organism-pronoun"}),
    );
    assert_eq!(status, 202, "{value}");
    let job = wait_job(
        addr,
        value["job"].as_str().unwrap(),
        Duration::from_secs(60),
    );
    assert_eq!(job["state"], "done", "{job}");
    let out = &job["result"]["attribution"];
    assert_eq!(out["output_current"], "elle est pres l' usine .");
    assert_eq!(out["cci_scores"][0]["cti_token"], "elle");
    assert!(
        out["cci_scores"][0]["output_context_scores"].is_array(),
        "{out}"
    );
    let rust = job["result"]["rust"].as_str().unwrap();
    assert!(
        rust.contains("Seq2SeqModel::load") && rust.contains("attribute_context_seq2seq("),
        "{rust}"
    );
    let (status, value) = post(addr, "/api/circuit", &json!({"model": name, "task": "ioi"}));
    assert_eq!(status, 400, "{value}");
    assert!(error_of(&value).contains("encoder-decoder"), "{value}");
}
