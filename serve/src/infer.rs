//! One `POST .../infer`: split a client batch into single inputs,
//! preprocess each (card or CPU, into its arena slot), hand each to the
//! batcher, and assemble the answers. Transport-independent: the HTTP front
//! end calls [`infer`] with the body; a gRPC front end would do the same.
#![forbid(unsafe_code)]

use crate::arena::SlotLease;
use crate::kserve::{self, InferRequest, OutTensor, TensorData};
use crate::model::{Answer, Item, Model, Row};
use crate::repo::Kind;
use crate::server::State;
use preba_host::backend::{Job, Output, Via};
use preba_host::error::RequestError;
use serde_json::{Map, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// An HTTP answer: status, body, JSON header length (binary responses).
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub header_len: Option<usize>,
}

impl Reply {
    pub fn error(status: u16, msg: &str) -> Reply {
        Reply {
            status,
            body: kserve::error_body(msg),
            header_len: None,
        }
    }
}

/// What the client sent, per element.
enum Element {
    /// Encoded JPEG/WAV bytes to preprocess (a view of the body when binary).
    Encoded(bytes::Bytes),
    /// An already preprocessed tensor (the "ideal" path).
    Tensor(bytes::Bytes),
    /// Already computed log-Mel features `[n_mels, frames]` of an audio model.
    Features { frames: usize, data: Vec<f32> },
}

/// Releases the admission count of a request however it ends.
struct Admitted<'a> {
    model: &'a Model,
    n: usize,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.model.inflight.fetch_sub(self.n, Ordering::SeqCst);
    }
}

pub async fn infer(
    state: Arc<State>,
    model: Arc<Model>,
    body: bytes::Bytes,
    header_len: Option<usize>,
) -> Reply {
    let t0 = Instant::now();
    let r = infer_inner(&state, &model, &body, header_len).await;
    let m = &model.metrics;
    match &r {
        Ok(_) => {
            m.request_success.add(1);
            m.request_ns.add(t0.elapsed().as_nanos() as u64);
            let ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            m.last_inference_ms.set(ms);
        }
        Err(_) => m.request_failure.add(1),
    }
    r.unwrap_or_else(|(s, msg)| Reply::error(s, &msg))
}

async fn infer_inner(
    state: &Arc<State>,
    model: &Arc<Model>,
    body: &bytes::Bytes,
    header_len: Option<usize>,
) -> Result<Reply, (u16, String)> {
    let t_start = Instant::now();
    let req = kserve::parse_infer(body, header_len).map_err(|e| (400, e))?;
    let (elements, outputs) = elements(model, &req, body)?;
    let n = elements.len();
    // Admission: the queue limit counts elements, since each joins the batcher.
    let before = model.inflight.fetch_add(n, Ordering::SeqCst);
    let _admitted = Admitted { model, n };
    if before + n > model.max_queue {
        model.metrics.rejected_queue_full.add(1);
        return Err((
            503,
            format!(
                "queue full: {before} inputs of model {} waiting (--max-queue {})",
                model.cfg.name, model.max_queue
            ),
        ));
    }
    if state.stopping.load(Ordering::SeqCst) {
        return Err((503, "the server is shutting down".into()));
    }
    // Preprocess every element (concurrently, bounded by the backend's
    // parallelism); the first element that fails fails the request, naming
    // it, and nothing of it reaches the batcher.
    let what = model.cfg.kind.input_name();
    // Slots in element order, neighbours where possible, taken before any
    // preprocessing finishes: the batch then reaches the worker in one range.
    let mut leases: Vec<Option<Arc<SlotLease>>> = match &model.slots {
        Some(pool) => pool
            .take_many(n)
            .ok_or_else(|| {
                model.metrics.rejected_queue_full.add(1);
                (
                    503,
                    format!(
                        "queue full: all {} batch slots of model {} are in use",
                        pool.capacity(),
                        model.cfg.name
                    ),
                )
            })?
            .into_iter()
            .map(Some)
            .collect(),
        None => (0..n).map(|_| None).collect(),
    };
    let mut tasks = Vec::with_capacity(n);
    for (i, el) in elements.into_iter().enumerate() {
        let lease = leases[i].take();
        if matches!(el, Element::Tensor(_) | Element::Features { .. }) {
            // Already preprocessed: one small copy into the slot, no thread hop.
            let r = prepare(state, model, el, lease)
                .map_err(|(status, e)| (status, format!("{what}[{i}]: {e}")));
            tasks.push(Prep::Done(r));
            continue;
        }
        let st = state.clone();
        let md = model.clone();
        tasks.push(Prep::Task(tokio::spawn(async move {
            let permit = st.preprocess_permits.acquire().await;
            let st2 = st.clone();
            let r = tokio::task::spawn_blocking(move || prepare(&st2, &md, el, lease))
                .await
                .map_err(|e| (500, format!("preprocessing task failed: {e}")))
                .and_then(|r| r)
                .map_err(|(status, e)| (status, format!("{what}[{i}]: {e}")));
            drop(permit);
            r
        })));
    }
    let mut items = Vec::with_capacity(n);
    let mut first_err = None;
    for t in tasks {
        let r = match t {
            Prep::Done(r) => Ok(r),
            Prep::Task(h) => h.await,
        };
        match r {
            Ok(Ok(it)) => items.push(it),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert((400, format!("{what}: {e}")));
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    // What is left of the request's budget for batching and inference: the
    // client's `timeout` parameter (microseconds, as Triton), else the SLA.
    let budget = req
        .timeout_us
        .map(Duration::from_micros)
        .or(model.cfg.sla_ms.map(|ms| Duration::from_secs_f64(ms / 1e3)))
        .map(|b| b.saturating_sub(t_start.elapsed()));
    let rxs: Vec<_> = items
        .into_iter()
        .map(|(item, dur)| model.submit(item, dur, budget))
        .collect();
    let mut answers = Vec::with_capacity(n);
    for rx in rxs {
        match rx.await {
            Ok(Ok(a)) => answers.push(a),
            Ok(Err(f)) => return Err(f),
            Err(_) => return Err((500, "the batcher dropped the request".into())),
        }
    }
    model.metrics.inference_count.add(n as u64);
    let out = assemble(model, &req, &outputs, answers)?;
    Ok(out)
}

/// An element being prepared: done inline, or on the blocking pool.
/// One element, ready for the batcher (with its audio duration), or the HTTP status and
/// message of its failure.
type Prepared = Result<(Item, Option<f32>), (u16, String)>;

/// An element's preprocessing: done, or running.
enum Prep {
    Done(Prepared),
    Task(tokio::task::JoinHandle<Prepared>),
}

type Outputs = Vec<(String, Option<bool>, Option<usize>)>;

/// The client batch as elements, and the outputs asked for.
fn elements(
    model: &Model,
    req: &InferRequest,
    body: &bytes::Bytes,
) -> Result<(Vec<Element>, Outputs), (u16, String)> {
    if req.inputs.len() != 1 {
        return Err((
            400,
            format!(
                "model {} takes one input ({} BYTES [-1,1]), got {}",
                model.cfg.name,
                model.cfg.kind.input_name(),
                req.inputs.len()
            ),
        ));
    }
    let inp = &req.inputs[0];
    let kind = model.cfg.kind;
    let els = if inp.name == kind.input_name() {
        if inp.datatype != "BYTES" {
            return Err((
                400,
                format!(
                    "input {}: datatype {} (expected BYTES)",
                    inp.name, inp.datatype
                ),
            ));
        }
        let b = match inp.shape.as_slice() {
            [b] | [b, 1] => *b as usize,
            s => {
                return Err((
                    400,
                    format!("input {}: shape {s:?} (expected [B,1])", inp.name),
                ));
            }
        };
        if b == 0 {
            return Err((400, format!("input {}: empty batch", inp.name)));
        }
        if b > model.cfg.max_batch_size as usize {
            return Err((
                400,
                format!(
                    "input {}: batch of {b} is over max_batch_size {}",
                    inp.name, model.cfg.max_batch_size
                ),
            ));
        }
        let v: Vec<bytes::Bytes> = match &inp.data {
            TensorData::Binary(r) => {
                let buf = body.slice(r.clone());
                kserve::split_bytes(&buf, &inp.name)
                    .map_err(|e| (400, e))?
                    .into_iter()
                    .map(|e| buf.slice(e))
                    .collect()
            }
            TensorData::Json(j) => kserve::json_bytes(j, &inp.name)
                .map_err(|e| (400, e))?
                .into_iter()
                .map(bytes::Bytes::from)
                .collect(),
        };
        if v.len() != b {
            return Err((
                400,
                format!(
                    "input {}: shape says {b} elements, the data holds {}",
                    inp.name,
                    v.len()
                ),
            ));
        }
        let limit = preba_protocol::limits::MAX_INPUT_BYTES as usize;
        if let Some((i, e)) = v.iter().enumerate().find(|(_, e)| e.len() > limit) {
            return Err((
                400,
                format!(
                    "{}[{i}]: {} bytes is over the {limit}-byte limit",
                    inp.name,
                    e.len()
                ),
            ));
        }
        v.into_iter().map(Element::Encoded).collect()
    } else if inp.name == model.tensor_input.name && kind == Kind::Audio {
        // Features computed by the client: [B, n_mels, T], FP32, binary.
        let mels = model.cfg.audio.n_mels as i64;
        if inp.datatype != "FP32" {
            return Err((
                400,
                format!(
                    "input {}: datatype {} (expected FP32)",
                    inp.name, inp.datatype
                ),
            ));
        }
        let (b, t) = match inp.shape.as_slice() {
            [b, m, t] if *m == mels && *b > 0 && *t > 0 => (*b as usize, *t as usize),
            s => {
                return Err((
                    400,
                    format!("input {}: shape {s:?} (expected [B, {mels}, T])", inp.name),
                ));
            }
        };
        if b > model.cfg.max_batch_size as usize {
            return Err((
                400,
                format!(
                    "input {}: batch of {b} is over max_batch_size {}",
                    inp.name, model.cfg.max_batch_size
                ),
            ));
        }
        let TensorData::Binary(r) = &inp.data else {
            return Err((
                400,
                format!("input {}: FP32 features must be binary", inp.name),
            ));
        };
        let raw = &body[r.clone()];
        let row = mels as usize * t * 4;
        if raw.len() != b * row {
            return Err((
                400,
                format!(
                    "input {}: {} bytes of data, shape needs {}",
                    inp.name,
                    raw.len(),
                    b * row
                ),
            ));
        }
        raw.chunks_exact(row)
            .map(|c| Element::Features {
                frames: t,
                data: c
                    .chunks_exact(4)
                    .map(|f| f32::from_le_bytes([f[0], f[1], f[2], f[3]]))
                    .collect(),
            })
            .collect()
    } else if inp.name == model.tensor_input.name && kind == Kind::Image {
        let dt = model.item_dtype.triton_name();
        if inp.datatype != dt {
            return Err((
                400,
                format!(
                    "input {}: datatype {} (expected {dt})",
                    inp.name, inp.datatype
                ),
            ));
        }
        let want: Vec<i64> = model.item_shape.clone();
        if inp.shape.len() != want.len() + 1 || inp.shape[1..] != want[..] || inp.shape[0] == 0 {
            return Err((
                400,
                format!(
                    "input {}: shape {:?} (expected [B, {}])",
                    inp.name,
                    inp.shape,
                    want.iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let b = inp.shape[0] as usize;
        if b > model.cfg.max_batch_size as usize {
            return Err((
                400,
                format!(
                    "input {}: batch of {b} is over max_batch_size {}",
                    inp.name, model.cfg.max_batch_size
                ),
            ));
        }
        let row = preba_slice::tensor_bytes(model.item_dtype, &want).unwrap_or(0) as usize;
        // Binary tensors stay views of the body: one copy, into the arena.
        let raw = match &inp.data {
            TensorData::Binary(r) => body.slice(r.clone()),
            TensorData::Json(j) if dt == "FP32" => bytes::Bytes::from(
                kserve::json_f32(j, &inp.name, b * row / 4).map_err(|e| (400, e))?,
            ),
            TensorData::Json(_) => {
                return Err((400, format!("input {}: {dt} data must be binary", inp.name)));
            }
        };
        if raw.len() != b * row {
            return Err((
                400,
                format!(
                    "input {}: {} bytes of data, shape needs {}",
                    inp.name,
                    raw.len(),
                    b * row
                ),
            ));
        }
        (0..b)
            .map(|i| Element::Tensor(raw.slice(i * row..(i + 1) * row)))
            .collect()
    } else {
        return Err((
            400,
            format!(
                "unknown input {} for model {} (it takes {} BYTES [-1,1] or the preprocessed {})",
                inp.name,
                model.cfg.name,
                kind.input_name(),
                model.tensor_input.name
            ),
        ));
    };
    let mut outs = Vec::new();
    for o in &req.outputs {
        if !model.meta.outputs.iter().any(|m| m.name == o.name) {
            return Err((
                400,
                format!("unknown output {} for model {}", o.name, model.cfg.name),
            ));
        }
        outs.push((o.name.clone(), o.binary, o.classification));
    }
    if outs.is_empty() {
        outs = model
            .meta
            .outputs
            .iter()
            .map(|m| (m.name.clone(), None, None))
            .collect();
    }
    let binary_default = req.binary_default;
    for o in &mut outs {
        o.1 = Some(o.1.unwrap_or(binary_default));
    }
    Ok((els, outs))
}

/// The HTTP status of a failed preprocessing: the input's fault is the client's (400); the
/// card or the server failing is not (500).
fn backend_failure(e: RequestError) -> (u16, String) {
    let status = match e {
        RequestError::Cpu(_) | RequestError::Rejected { .. } => 400,
        _ => 500,
    };
    (status, e.to_string())
}

/// A request the model cannot take (400).
fn bad(msg: impl Into<String>) -> (u16, String) {
    (400, msg.into())
}

/// Preprocesses one element into what the batcher carries (blocking). The error is the
/// HTTP status and the message.
fn prepare(state: &State, model: &Model, el: Element, lease: Option<Arc<SlotLease>>) -> Prepared {
    let t0 = Instant::now();
    let r = match (model.cfg.kind, el) {
        (Kind::Image, el) => {
            let lease = lease.ok_or((500, "internal: no slot for an image".to_string()))?;
            let region = lease.region();
            let arena = state.arena.mem();
            match el {
                Element::Tensor(t) => arena.write(region.0, &t).map_err(|e| bad(e.to_string()))?,
                Element::Features { .. } => return Err(bad("image models take IMAGE")),
                Element::Encoded(bytes) => {
                    let via = state
                        .backend
                        .process_into(&bytes, &model.cfg.image, arena, region, lease.clone())
                        .map_err(backend_failure)?;
                    if via == Via::CpuFallback {
                        model.metrics.cpu_fallback.add(1);
                    }
                }
            }
            Ok((Item::Slot(lease), None))
        }
        (Kind::Audio, Element::Encoded(bytes)) => {
            let (out, via) = state
                .backend
                .process(&bytes, &Job::Audio(model.cfg.audio))
                .map_err(backend_failure)?;
            if via == Via::CpuFallback {
                model.metrics.cpu_fallback.add(1);
            }
            let Output::Audio(a) = out else {
                return Err((500, "internal: image output for an audio job".into()));
            };
            let dur = a.info.seconds() as f32;
            Ok((
                Item::Features {
                    frames: a.features.frames,
                    data: a.features.data,
                },
                Some(dur),
            ))
        }
        (Kind::Audio, Element::Features { frames, data }) => {
            // 10 ms hop: the bucket follows the features' length.
            let dur =
                frames as f32 * f32::from(model.cfg.audio.hop) / model.cfg.audio.sample_rate as f32;
            Ok((Item::Features { frames, data }, Some(dur)))
        }
        (Kind::Audio, Element::Tensor(_)) => Err(bad("audio models take AUDIO")),
    };
    model
        .metrics
        .preprocess_ns
        .add(t0.elapsed().as_nanos() as u64);
    r
}

/// Concatenates per-element rows into the response tensors.
fn assemble(
    model: &Model,
    req: &InferRequest,
    outs: &Outputs,
    answers: Vec<Answer>,
) -> Result<Reply, (u16, String)> {
    let b = answers.len() as i64;
    let modeled = answers.iter().any(|a| a.modeled);
    let mut tensors = Vec::new();
    for (name, binary, class) in outs {
        let rows: Vec<&Row> = answers
            .iter()
            .map(|a| a.rows.iter().find(|r| &r.name == name))
            .collect::<Option<_>>()
            .ok_or_else(|| (500, format!("output {name} missing from a slice's answer")))?;
        // Audio outputs may differ in length across batches: pad to the longest.
        let first = rows[0];
        if rows
            .iter()
            .any(|r| r.shape != first.shape || r.dtype != first.dtype)
        {
            return Err((
                500,
                format!("output {name}: rows of a client batch differ in shape"),
            ));
        }
        let t = match class {
            Some(k) => {
                if first.dtype != preba_slice::Dtype::F32 {
                    return Err((
                        400,
                        format!("output {name}: classification needs FP32 scores"),
                    ));
                }
                let k = (*k).min(first.raw.len() / 4);
                let mut items = Vec::new();
                for r in &rows {
                    let scores: Vec<f32> = r
                        .raw
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect();
                    items.extend(kserve::classify(&scores, k, &model.cfg.labels));
                }
                OutTensor {
                    name: name.clone(),
                    datatype: "BYTES".into(),
                    shape: vec![b, k as i64],
                    raw: kserve::encode_bytes(items),
                    binary: binary.unwrap_or(false),
                }
            }
            None => {
                let mut shape = vec![b];
                shape.extend(&first.shape);
                OutTensor {
                    name: name.clone(),
                    datatype: first.dtype.triton_name().into(),
                    shape,
                    raw: rows.iter().flat_map(|r| r.raw.iter().copied()).collect(),
                    binary: binary.unwrap_or(false),
                }
            }
        };
        tensors.push(t);
    }
    let mut params = Map::new();
    if modeled {
        params.insert("preba_modeled".into(), json!(true));
    }
    let (body, header_len) = kserve::build_response(
        &model.cfg.name,
        &model.cfg.version,
        req.id.as_ref(),
        &tensors,
        params,
    );
    Ok(Reply {
        status: 200,
        body,
        header_len,
    })
}
