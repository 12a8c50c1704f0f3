//! Counters per model and slice, rendered as Prometheus text with Triton's
//! metric names where Triton has one, and as Triton's statistics JSON.
#![forbid(unsafe_code)]

use serde_json::{Value, json};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds of the batch size histogram.
pub const BATCH_BUCKETS: [u64; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024];

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }
}

#[derive(Default)]
pub struct SliceMetrics {
    pub name: String,
    pub kind: String,
    pub busy_ns: Counter,
    pub batches: Counter,
    pub restarts: Counter,
    pub failures: Counter,
    pub modeled: bool,
}

#[derive(Default)]
pub struct ModelMetrics {
    pub request_success: Counter,
    pub request_failure: Counter,
    /// Elements inferred (a client batch of B counts B).
    pub inference_count: Counter,
    /// Batches run on slices.
    pub exec_count: Counter,
    pub request_ns: Counter,
    pub queue_ns: Counter,
    pub queue_count: Counter,
    pub preprocess_ns: Counter,
    pub infer_ns: Counter,
    pub cpu_fallback: Counter,
    pub gather_copies: Counter,
    pub pad_copies: Counter,
    pub rejected_queue_full: Counter,
    /// `deadline` policy: answered 429 because the request cannot make its deadline.
    pub rejected_deadline: Counter,
    pub batch_hist: [Counter; BATCH_BUCKETS.len()],
    pub batch_sum: Counter,
    /// Per batch size: (count, infer ns).
    pub per_batch: Mutex<std::collections::BTreeMap<u64, (u64, u64)>>,
    pub last_inference_ms: Counter,
    pub queue_depth: Mutex<Vec<usize>>,
    pub slices: Vec<SliceMetrics>,
}

impl ModelMetrics {
    pub fn batch(&self, n: u64, infer_ns: u64) {
        self.exec_count.add(1);
        self.batch_sum.add(n);
        for (i, &b) in BATCH_BUCKETS.iter().enumerate() {
            if n <= b {
                self.batch_hist[i].add(1);
            }
        }
        let mut m = self.per_batch.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.entry(n).or_default();
        e.0 += 1;
        e.1 += infer_ns;
    }
}

/// Card telemetry for the exposition.
pub struct CardGauges {
    pub name: String,
    pub power_w: f64,
    pub cu_busy_s: f64,
    pub cus: u32,
    pub requests: u64,
    pub errors: u64,
}

/// One metric family: HELP, TYPE and a line per (labels, value).
fn family(s: &mut String, name: &str, help: &str, ty: &str, rows: Vec<(String, String)>) {
    let _ = writeln!(s, "# HELP {name} {help}");
    let _ = writeln!(s, "# TYPE {name} {ty}");
    for (labels, v) in rows {
        let _ = writeln!(s, "{name}{{{labels}}} {v}");
    }
}

/// Prometheus text exposition of every model.
pub fn render(models: &[(&str, &str, &ModelMetrics)], card: Option<&CardGauges>) -> String {
    let mut s = String::new();
    let lab = |m: &str, v: &str| format!("model=\"{m}\",version=\"{v}\"");
    let per = |f: &dyn Fn(&ModelMetrics) -> u64| {
        models
            .iter()
            .map(|(m, v, x)| (lab(m, v), f(x).to_string()))
            .collect::<Vec<_>>()
    };
    family(
        &mut s,
        "nv_inference_request_success",
        "Number of successful inference requests",
        "counter",
        per(&|m| m.request_success.get()),
    );
    family(
        &mut s,
        "nv_inference_request_failure",
        "Number of failed inference requests",
        "counter",
        per(&|m| m.request_failure.get()),
    );
    family(
        &mut s,
        "nv_inference_count",
        "Number of inferences performed (a client batch of B counts B)",
        "counter",
        per(&|m| m.inference_count.get()),
    );
    family(
        &mut s,
        "nv_inference_exec_count",
        "Number of model executions (batches)",
        "counter",
        per(&|m| m.exec_count.get()),
    );
    family(
        &mut s,
        "nv_inference_request_duration_us",
        "Cumulative request duration in microseconds",
        "counter",
        per(&|m| m.request_ns.get() / 1000),
    );
    family(
        &mut s,
        "nv_inference_queue_duration_us",
        "Cumulative time requests spent in the batching queue in microseconds",
        "counter",
        per(&|m| m.queue_ns.get() / 1000),
    );
    family(
        &mut s,
        "nv_inference_compute_infer_duration_us",
        "Cumulative model execution time in microseconds",
        "counter",
        per(&|m| m.infer_ns.get() / 1000),
    );
    family(
        &mut s,
        "preba_preprocess_duration_us",
        "Cumulative preprocessing time (card or CPU) in microseconds",
        "counter",
        per(&|m| m.preprocess_ns.get() / 1000),
    );
    family(
        &mut s,
        "preba_cpu_fallback_total",
        "Inputs the card did not take, preprocessed on the CPU",
        "counter",
        per(&|m| m.cpu_fallback.get()),
    );
    family(
        &mut s,
        "preba_gather_copies_total",
        "Batches whose slots were not contiguous, gathered by a copy",
        "counter",
        per(&|m| m.gather_copies.get()),
    );
    family(
        &mut s,
        "preba_pad_copies_total",
        "Audio batches copied to pad to their longest input",
        "counter",
        per(&|m| m.pad_copies.get()),
    );
    family(
        &mut s,
        "preba_rejected_queue_full_total",
        "Requests answered 503 because the queue was full",
        "counter",
        per(&|m| m.rejected_queue_full.get()),
    );
    family(
        &mut s,
        "preba_rejected_deadline_total",
        "Requests answered 429 early because they could not make their deadline (deadline policy)",
        "counter",
        per(&|m| m.rejected_deadline.get()),
    );
    let mut bucket_rows = Vec::new();
    let mut sum_rows = Vec::new();
    let mut count_rows = Vec::new();
    for (m, v, x) in models {
        for (i, b) in BATCH_BUCKETS.iter().enumerate() {
            bucket_rows.push((
                format!("{},le=\"{b}\"", lab(m, v)),
                x.batch_hist[i].get().to_string(),
            ));
        }
        bucket_rows.push((
            format!("{},le=\"+Inf\"", lab(m, v)),
            x.exec_count.get().to_string(),
        ));
        sum_rows.push((lab(m, v), x.batch_sum.get().to_string()));
        count_rows.push((lab(m, v), x.exec_count.get().to_string()));
    }
    let _ = writeln!(
        s,
        "# HELP preba_batch_size Batch sizes dispatched to slices"
    );
    let _ = writeln!(s, "# TYPE preba_batch_size histogram");
    for (l, v) in bucket_rows {
        let _ = writeln!(s, "preba_batch_size_bucket{{{l}}} {v}");
    }
    for (l, v) in sum_rows {
        let _ = writeln!(s, "preba_batch_size_sum{{{l}}} {v}");
    }
    for (l, v) in count_rows {
        let _ = writeln!(s, "preba_batch_size_count{{{l}}} {v}");
    }
    let mut depth = Vec::new();
    let mut busy = Vec::new();
    let mut restarts = Vec::new();
    let mut sfail = Vec::new();
    for (m, v, x) in models {
        let d = x
            .queue_depth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (b, n) in d.iter().enumerate() {
            depth.push((format!("{},bucket=\"{b}\"", lab(m, v)), n.to_string()));
        }
        for sm in &x.slices {
            let l = format!(
                "{},slice=\"{}\",kind=\"{}\",modeled=\"{}\"",
                lab(m, v),
                sm.name,
                sm.kind,
                sm.modeled
            );
            busy.push((l.clone(), format!("{:.6}", sm.busy_ns.get() as f64 / 1e9)));
            restarts.push((l.clone(), sm.restarts.get().to_string()));
            sfail.push((l, sm.failures.get().to_string()));
        }
    }
    family(
        &mut s,
        "preba_queue_depth",
        "Requests waiting in the batcher, per length bucket",
        "gauge",
        depth,
    );
    family(
        &mut s,
        "preba_slice_busy_seconds_total",
        "Time each slice spent running batches",
        "counter",
        busy,
    );
    family(
        &mut s,
        "preba_slice_restarts_total",
        "Worker processes restarted after dying",
        "counter",
        restarts,
    );
    family(
        &mut s,
        "preba_slice_failed_batches_total",
        "Batches that failed on a slice",
        "counter",
        sfail,
    );
    if let Some(c) = card {
        let l = format!("card=\"{}\"", c.name);
        family(
            &mut s,
            "preba_card_power_watts",
            "Board power from the card's power monitor (TELEMETRY)",
            "gauge",
            vec![(l.clone(), format!("{:.3}", c.power_w))],
        );
        family(
            &mut s,
            "preba_card_cu_busy_seconds_total",
            "Compute-unit busy time summed over CUs (TELEMETRY)",
            "counter",
            vec![(l.clone(), format!("{:.6}", c.cu_busy_s))],
        );
        family(
            &mut s,
            "preba_card_compute_units",
            "Compute units on the card",
            "gauge",
            vec![(l.clone(), c.cus.to_string())],
        );
        family(
            &mut s,
            "preba_card_requests_total",
            "Requests the card completed (TELEMETRY)",
            "counter",
            vec![(l.clone(), c.requests.to_string())],
        );
        family(
            &mut s,
            "preba_card_errors_total",
            "Requests the card failed (TELEMETRY)",
            "counter",
            vec![(l, c.errors.to_string())],
        );
    }
    s
}

fn cn(count: u64, ns: u64) -> Value {
    json!({"count": count, "ns": ns})
}

/// One entry of Triton's statistics JSON.
pub fn stats_json(name: &str, version: &str, m: &ModelMetrics) -> Value {
    let succ = m.request_success.get();
    let batches: Vec<Value> = m
        .per_batch
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(b, (c, ns))| {
            json!({"batch_size": b, "compute_input": cn(*c, 0), "compute_infer": cn(*c, *ns), "compute_output": cn(*c, 0)})
        })
        .collect();
    json!({
        "name": name,
        "version": version,
        "last_inference": m.last_inference_ms.get(),
        "inference_count": m.inference_count.get(),
        "execution_count": m.exec_count.get(),
        "inference_stats": {
            "success": cn(succ, m.request_ns.get()),
            "fail": cn(m.request_failure.get(), 0),
            "queue": cn(m.queue_count.get(), m.queue_ns.get()),
            "compute_input": cn(m.queue_count.get(), m.preprocess_ns.get()),
            "compute_infer": cn(m.queue_count.get(), m.infer_ns.get()),
            "compute_output": cn(m.queue_count.get(), 0),
            "cache_hit": cn(0, 0),
            "cache_miss": cn(0, 0)
        },
        "batch_stats": batches
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_triton_names_and_histogram() {
        let mut m = ModelMetrics::default();
        m.slices.push(SliceMetrics {
            name: "cpu0".into(),
            kind: "cpu".into(),
            ..Default::default()
        });
        m.request_success.add(3);
        m.batch(3, 1000);
        m.batch(1, 500);
        *m.queue_depth.lock().unwrap() = vec![2];
        let t = render(&[("sq", "1", &m)], None);
        assert!(
            t.contains("nv_inference_request_success{model=\"sq\",version=\"1\"} 3"),
            "{t}"
        );
        assert!(
            t.contains("preba_batch_size_bucket{model=\"sq\",version=\"1\",le=\"2\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("preba_batch_size_bucket{model=\"sq\",version=\"1\",le=\"4\"} 2"),
            "{t}"
        );
        assert!(
            t.contains("preba_batch_size_sum{model=\"sq\",version=\"1\"} 4"),
            "{t}"
        );
        assert!(
            t.contains("preba_queue_depth{model=\"sq\",version=\"1\",bucket=\"0\"} 2"),
            "{t}"
        );
        assert!(t.contains("slice=\"cpu0\""), "{t}");
        let j = stats_json("sq", "1", &m);
        assert_eq!(j["execution_count"], 2);
        assert_eq!(j["batch_stats"][1]["batch_size"], 3);
    }
}
