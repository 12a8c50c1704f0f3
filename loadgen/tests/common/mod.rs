//! A tiny KServe v2 server for the load generator's tests: model metadata,
//! and infer answers after a chosen delay, with chosen failures.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// What request number `i` (0-based, in arrival order at the server) gets.
pub enum Answer {
    Ok(Duration),
    /// HTTP 400 with this error text.
    BadRequest(&'static str),
    /// Drop the connection without an answer.
    Abort,
}

pub struct Mock {
    pub answer: Box<dyn Fn(u64) -> Answer + Send + Sync>,
    /// Answer every request with `Connection: close`.
    pub close: bool,
    pub modeled: bool,
    /// The model's preprocessed-input name: IMAGE (BYTES) and this FP32 input.
    pub input: &'static str,
    pub infers: AtomicU64,
}

impl Mock {
    pub fn new(answer: impl Fn(u64) -> Answer + Send + Sync + 'static) -> Mock {
        Mock {
            answer: Box::new(answer),
            close: false,
            modeled: false,
            input: "IMAGE",
            infers: AtomicU64::new(0),
        }
    }

    /// Serves on 127.0.0.1 from a thread of its own; returns the base URL.
    pub fn start(self) -> (String, Arc<Mock>) {
        let mock = Arc::new(self);
        let m = mock.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    stream.set_nodelay(true).unwrap();
                    let m = m.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| handle(m.clone(), req));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        });
        let addr: SocketAddr = rx.recv().unwrap();
        (format!("http://{addr}"), mock)
    }
}

fn json_response(status: StatusCode, v: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .unwrap()
}

async fn handle(
    m: Arc<Mock>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let path = req.uri().path().to_string();
    let header_len = req
        .headers()
        .get("inference-header-content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let mut resp = match path.as_str() {
        "/v2/models/m" => json_response(
            StatusCode::OK,
            json!({"name": "m", "versions": ["1"], "platform": "onnx",
                   "inputs": [{"name": m.input, "datatype": "BYTES", "shape": [-1, 1]},
                              {"name": "input", "datatype": "FP32", "shape": [-1, 3, 8, 8]}],
                   "outputs": [{"name": "probs", "datatype": "FP32", "shape": [-1, 10]}]}),
        ),
        "/v2/models/m/infer" => {
            let i = m.infers.fetch_add(1, Ordering::SeqCst);
            if let Err(e) = check_infer(header_len, &body) {
                json_response(StatusCode::BAD_REQUEST, json!({"error": e}))
            } else {
                match (m.answer)(i) {
                    Answer::Ok(d) => {
                        tokio::time::sleep(d).await;
                        let mut header = json!({"model_name": "m", "outputs": [{"name": "probs", "datatype": "FP32", "shape": [1, 10], "parameters": {"binary_data_size": 40}}]});
                        if m.modeled {
                            header["parameters"] = json!({"preba_modeled": true});
                        }
                        let mut b = header.to_string().into_bytes();
                        let n = b.len();
                        b.extend_from_slice(&[0u8; 40]);
                        Response::builder()
                            .header("content-type", "application/octet-stream")
                            .header("inference-header-content-length", n)
                            .body(Full::new(Bytes::from(b)))
                            .unwrap()
                    }
                    Answer::BadRequest(text) => {
                        json_response(StatusCode::BAD_REQUEST, json!({"error": text}))
                    }
                    Answer::Abort => return Err(std::io::Error::other("abort")),
                }
            }
        }
        p if p.starts_with("/v2/models/") => {
            json_response(StatusCode::NOT_FOUND, json!({"error": "unknown model"}))
        }
        _ => json_response(StatusCode::NOT_FOUND, json!({"error": "not found"})),
    };
    if m.close {
        resp.headers_mut()
            .insert("connection", "close".parse().unwrap());
    }
    Ok(resp)
}

/// Checks the binary tensor extension framing the load generator must send.
fn check_infer(header_len: Option<usize>, body: &[u8]) -> Result<(), String> {
    let n = header_len.ok_or("no Inference-Header-Content-Length")?;
    let header: Value = serde_json::from_slice(body.get(..n).ok_or("header past body")?)
        .map_err(|e| format!("header: {e}"))?;
    let input = &header["inputs"][0];
    let size = input["parameters"]["binary_data_size"]
        .as_u64()
        .ok_or("no binary_data_size")? as usize;
    if size != body.len() - n {
        return Err(format!(
            "binary_data_size {size}, body has {}",
            body.len() - n
        ));
    }
    if header["outputs"][0]["parameters"]["binary_data"] != json!(true) {
        return Err("outputs not asked in binary".into());
    }
    if input["datatype"] == "BYTES" {
        // u32-LE length + bytes per element, as many as shape[0].
        let mut rest = &body[n..];
        let mut count = 0;
        while !rest.is_empty() {
            let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            rest = rest.get(4 + len..).ok_or("element past the end")?;
            count += 1;
        }
        if input["shape"] != json!([count, 1]) {
            return Err(format!("shape {} for {count} elements", input["shape"]));
        }
    }
    Ok(())
}

/// Two small fake JPEG files in a fresh temporary directory.
pub fn jpegs() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = (0..2)
        .map(|i| {
            let p = dir.path().join(format!("img{i}.jpg"));
            std::fs::write(&p, [0xff, 0xd8, 0xff, 0xe0, i, 0xff, 0xd9]).unwrap();
            p
        })
        .collect();
    (dir, paths)
}
