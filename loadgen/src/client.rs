//! A KServe v2 HTTP/1.1 client: a pool of keep-alive connections (TCP_NODELAY),
//! one hyper `http1` connection task each.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::LoadgenError;

/// The header that says how long the JSON part of a binary-extension body is.
pub(crate) const HEADER_LEN: &str = "inference-header-content-length";

/// A prebuilt infer request body: JSON header + binary tensor data.
#[derive(Clone, Debug)]
pub(crate) struct Body {
    pub bytes: Bytes,
    pub json_len: usize,
}

#[derive(Clone)]
pub(crate) struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    addr: SocketAddr,
    authority: String,
    prefix: String,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

struct Answer {
    status: StatusCode,
    header_len: Option<usize>,
    body: Bytes,
}

impl Client {
    /// Resolves the URL's host (no connection yet).
    pub async fn new(url: &str) -> Result<Client, LoadgenError> {
        crate::cli::check_url(url)?;
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let connect = |reason: String| LoadgenError::Connect {
            url: url.to_string(),
            reason,
        };
        let addr = tokio::net::lookup_host(with_port.as_str())
            .await
            .map_err(|e| connect(format!("cannot resolve {authority}: {e}")))?
            .next()
            .ok_or_else(|| connect(format!("{authority} resolves to no address")))?;
        Ok(Client {
            inner: Arc::new(Inner {
                url: url.to_string(),
                addr,
                authority: authority.to_string(),
                prefix: prefix.to_string(),
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = TcpStream::connect(self.inner.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("connect: {e}"))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    async fn sender(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        loop {
            let pooled = self
                .inner
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop();
            match pooled {
                Some(mut s) if !s.is_closed() => {
                    if s.ready().await.is_ok() {
                        return Ok(s);
                    }
                }
                Some(_) => {}
                None => return self.connect().await,
            }
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Body>,
    ) -> Result<Answer, String> {
        let mut sender = self.sender().await?;
        let uri = format!("{}{path}", self.inner.prefix);
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, &self.inner.authority);
        let payload = match body {
            Some(b) => {
                req = req
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .header(HEADER_LEN, b.json_len)
                    .header(header::CONTENT_LENGTH, b.bytes.len());
                b.bytes.clone()
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(payload))
            .map_err(|e| format!("request: {e}"))?;
        let resp = sender.send_request(req).await.map_err(http_reason)?;
        let keep = !resp
            .headers()
            .get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let status = resp.status();
        let header_len = resp
            .headers()
            .get(HEADER_LEN)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(http_reason)?
            .to_bytes();
        if keep && !sender.is_closed() {
            self.inner
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(sender);
        }
        Ok(Answer {
            status,
            header_len,
            body,
        })
    }

    /// `GET /v2/models/M`: the model metadata, or why not.
    pub async fn metadata(&self, model: &str) -> Result<Value, LoadgenError> {
        let url = &self.inner.url;
        let a = self
            .send(Method::GET, &format!("/v2/models/{model}"), None)
            .await
            .map_err(|reason| LoadgenError::Connect {
                url: url.clone(),
                reason,
            })?;
        if a.status != StatusCode::OK {
            return Err(LoadgenError::Server {
                url: url.clone(),
                status: a.status.as_u16(),
                text: error_text(&a.body, None),
            });
        }
        serde_json::from_slice(&a.body).map_err(|e| {
            LoadgenError::Protocol(format!("metadata of model {model} is not JSON: {e}"))
        })
    }

    /// `POST /v2/models/M/infer`: Ok(modeled) on success, the error reason otherwise.
    pub async fn infer(&self, model: &str, body: Body) -> Result<bool, String> {
        let a = self
            .send(
                Method::POST,
                &format!("/v2/models/{model}/infer"),
                Some(&body),
            )
            .await?;
        check_answer(a.status, a.header_len, &a.body)
    }
}

fn http_reason(e: hyper::Error) -> String {
    if e.is_incomplete_message() || e.is_canceled() {
        "connection closed".to_string()
    } else {
        format!("http: {e}")
    }
}

fn truncate(s: &str, n: usize) -> String {
    let s = s.trim();
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// The `error` text of a KServe v2 answer, or the start of its body.
fn error_text(body: &[u8], header_len: Option<usize>) -> String {
    let json = &body[..header_len.unwrap_or(body.len()).min(body.len())];
    if let Ok(v) = serde_json::from_slice::<Value>(json)
        && let Some(e) = v.get("error").and_then(Value::as_str)
    {
        return truncate(e, 100);
    }
    truncate(&String::from_utf8_lossy(json), 100)
}

/// Whether an infer answer is a success; `Ok(true)` when it says `preba_modeled`.
pub(crate) fn check_answer(
    status: StatusCode,
    header_len: Option<usize>,
    body: &[u8],
) -> Result<bool, String> {
    if status != StatusCode::OK {
        return Err(format!(
            "HTTP {}: {}",
            status.as_u16(),
            error_text(body, header_len)
        ));
    }
    let n = header_len.unwrap_or(body.len());
    if n > body.len() {
        return Err("bad answer: Inference-Header-Content-Length past the body".into());
    }
    let v: Value =
        serde_json::from_slice(&body[..n]).map_err(|e| format!("bad answer: JSON header: {e}"))?;
    if let Some(e) = v.get("error") {
        return Err(format!(
            "error: {}",
            truncate(e.as_str().unwrap_or(&e.to_string()), 100)
        ));
    }
    Ok(v.pointer("/parameters/preba_modeled")
        .and_then(Value::as_bool)
        == Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        let ok = br#"{"model_name":"m","outputs":[],"parameters":{"preba_modeled":true}}"#;
        assert_eq!(check_answer(StatusCode::OK, None, ok), Ok(true));
        let mut bin = br#"{"outputs":[]}"#.to_vec();
        let n = bin.len();
        bin.extend_from_slice(&[0xff, 0xfe, 0x00]);
        assert_eq!(check_answer(StatusCode::OK, Some(n), &bin), Ok(false));
        assert_eq!(
            check_answer(StatusCode::BAD_REQUEST, None, br#"{"error":"bad jpeg"}"#),
            Err("HTTP 400: bad jpeg".into())
        );
        assert_eq!(
            check_answer(StatusCode::OK, None, br#"{"error":"queue full"}"#),
            Err("error: queue full".into())
        );
        assert!(check_answer(StatusCode::OK, Some(99), b"{}").is_err());
        assert_eq!(
            check_answer(StatusCode::SERVICE_UNAVAILABLE, None, b"busy\n"),
            Err("HTTP 503: busy".into())
        );
    }
}
