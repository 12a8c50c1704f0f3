//! preba-sim against closed-form queues, hand-computed traces for each policy,
//! reproducibility and sweep sanity.

use preba_sim::{Arrival, Scenario, simulate_rate, simulate_trace};

/// SqueezeNet 1.1 on a100-1g.5gb from the builtin table: lat(1) = 0.3807 ms,
/// lat(2) = 0.6627 ms, lat(4) = 1.2267 ms (p50).
const LAT1_MS: f64 = 0.3807;

fn scenario(requests: usize, slices: usize, latency: &str, policy: &str) -> Scenario {
    let text = format!(
        r#"
name = "test"
seed = 42
requests = {requests}
warmup = {warmup}
[arrivals]
rates = [1000.0]
[workload]
kind = "image"
model = "squeezenet1_1"
pixels = {{ distribution = "fixed", value = 187500.0 }}
[preprocess]
kind = "none"
[policy]
{policy}
[slices]
latency = "{latency}"
[[slices.group]]
type = "a100-1g.5gb"
count = {slices}
idle_w = 5.0
busy_w = 35.7
[power]
cpu_idle_w = 55.0
cpu_core_busy_w = 3.9
"#,
        warmup = requests / 50
    );
    Scenario::parse(&text, "test.toml", None).unwrap_or_else(|e| panic!("{e}"))
}

/// PREBA with Batch_max 1 and Time_queue 0: a FIFO queue in front of c servers.
const FIFO: &str = "kind = \"preba\"\nbatch_max = [1]\ntime_queue_ms = 0.0";

fn close(what: &str, got: f64, want: f64, tol: f64) {
    let err = (got - want).abs() / want;
    assert!(
        err <= tol,
        "{what}: simulated {got:.5}, formula {want:.5} ({:.2}% off, allowed {:.0}%)",
        err * 100.0,
        tol * 100.0
    );
}

fn bisect(f: impl Fn(f64) -> f64, target: f64, mut lo: f64, mut hi: f64) -> f64 {
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if f(mid) < target { lo = mid } else { hi = mid }
    }
    0.5 * (lo + hi)
}

/// M/D/1 waiting-time CDF (Erlang 1909; e.g. Iversen, Teletraffic
/// Engineering, ch. 13): P(W <= t) = (1 - rho) sum_{k=0}^{floor(t/D)}
/// (lambda (kD - t))^k / k! e^{-lambda (kD - t)}.
fn md1_wait_cdf(lambda: f64, d: f64, t: f64) -> f64 {
    let rho = lambda * d;
    let mut sum = 0.0;
    let mut k = 0u32;
    while f64::from(k) * d <= t {
        let x = lambda * (f64::from(k) * d - t);
        let fact: f64 = (1..=k).map(f64::from).product();
        sum += x.powi(k as i32) / fact * (-x).exp();
        k += 1;
    }
    (1.0 - rho) * sum
}

#[test]
fn md1_mean_and_p95_wait() {
    let sc = scenario(1_000_000, 1, "p50", FIFO);
    let rho = 0.7;
    let d = LAT1_MS;
    let lambda = rho / d; // per ms
    let r = simulate_rate(&sc, lambda * 1e3).unwrap();
    let wq = rho * d / (2.0 * (1.0 - rho));
    close("M/D/1 mean wait", r.wait_mean_ms, wq, 0.02);
    let p95 = bisect(|t| md1_wait_cdf(lambda, d, t), 0.95, 0.0, 50.0 * d);
    close("M/D/1 p95 wait", r.wait_p95_ms, p95, 0.02);
    close("M/D/1 p95 response", r.p95_ms, p95 + d, 0.02);
    close("M/D/1 utilisation", r.slice_util, rho, 0.01);
    assert!(
        r.wall_s < 10.0,
        "10^6 requests took {:.1} s to simulate",
        r.wall_s
    );
}

/// M/G/1 with gamma service (CV 0.6): the Pollaczek-Khinchine mean wait,
/// W = rho E[S] (1 + CV^2) / (2 (1 - rho)) (Kleinrock, Queueing Systems I,
/// eq. 5.105), and the draws' own mean and spread through the utilisation.
#[test]
fn mg1_gamma_mean_wait() {
    let cv: f64 = 0.6;
    let sc = scenario(1_000_000, 1, &format!("gamma:{cv}"), FIFO);
    let rho = 0.7;
    let d = LAT1_MS;
    let lambda = rho / d;
    let r = simulate_rate(&sc, lambda * 1e3).unwrap();
    let wq = rho * d * (1.0 + cv * cv) / (2.0 * (1.0 - rho));
    close("M/G/1 (gamma, CV 0.6) mean wait", r.wait_mean_ms, wq, 0.02);
    close("M/G/1 utilisation", r.slice_util, rho, 0.01);
    // Between M/D/1 and M/M/1: the spread, not the mean, moved the wait.
    assert!(r.wait_mean_ms > rho * d / (2.0 * (1.0 - rho)) * 1.2);
}

#[test]
fn gamma_service_is_rejected_outside_its_range() {
    for bad in ["gamma:", "gamma:-1", "gamma:nan", "gamma:11"] {
        let text = format!(
            "name = \"t\"\nrequests = 10\n[arrivals]\nrates = [1.0]\n[workload]\nkind = \"image\"\nmodel = \"squeezenet1_1\"\npixels = {{ distribution = \"fixed\", value = 1.0 }}\n[preprocess]\nkind = \"none\"\n[policy]\nkind = \"preba\"\n[slices]\nlatency = \"{bad}\"\n[[slices.group]]\ntype = \"a100-1g.5gb\"\ncount = 1\n"
        );
        let e = Scenario::parse(&text, "t.toml", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("slices.latency") && e.contains("gamma"),
            "{bad}: {e}"
        );
    }
}

/// Erlang C: probability of waiting in M/M/c with offered load a = lambda/mu.
fn erlang_c(c: u32, a: f64) -> f64 {
    let mut term = 1.0;
    let mut sum = 1.0;
    for k in 1..c {
        term *= a / f64::from(k);
        sum += term;
    }
    let last = term * a / f64::from(c) * f64::from(c) / (f64::from(c) - a);
    last / (sum + last)
}

#[test]
fn mmc_mean_and_p95_wait() {
    let c = 4;
    let sc = scenario(1_000_000, c, "exponential", FIFO);
    let mu = 1.0 / LAT1_MS; // per ms
    let rho = 0.75;
    let lambda = rho * c as f64 * mu;
    let r = simulate_rate(&sc, lambda * 1e3).unwrap();
    let pw = erlang_c(c as u32, lambda / mu);
    let drain = c as f64 * mu - lambda;
    close("M/M/4 mean wait", r.wait_mean_ms, pw / drain, 0.02);
    // P(W > t) = C e^{-(c mu - lambda) t}
    close(
        "M/M/4 p95 wait",
        r.wait_p95_ms,
        (pw / 0.05).ln() / drain,
        0.02,
    );
}

#[test]
fn mm1_p95_response() {
    let sc = scenario(1_000_000, 1, "exponential", FIFO);
    let mu = 1.0 / LAT1_MS;
    let lambda = 0.5 * mu;
    let r = simulate_rate(&sc, lambda * 1e3).unwrap();
    // Response time of M/M/1 is exponential with rate mu - lambda.
    close("M/M/1 mean response", r.mean_ms, 1.0 / (mu - lambda), 0.02);
    close(
        "M/M/1 p95 response",
        r.p95_ms,
        20f64.ln() / (mu - lambda),
        0.02,
    );
}

fn trace(ms: &[f64]) -> Vec<Arrival> {
    ms.iter()
        .map(|&t| Arrival {
            at: (t * 1e6).round() as u64,
            size: 187_500.0,
        })
        .collect()
}

fn batches(sc: &Scenario, ms: &[f64]) -> Vec<(usize, u64, u64, Vec<u64>)> {
    let mut s = sc.clone();
    s.warmup = 0;
    simulate_trace(&s, &trace(ms))
        .unwrap()
        .batches
        .into_iter()
        .map(|b| (b.slice, b.start, b.end, b.requests))
        .collect()
}

#[test]
fn preba_trace_by_hand() {
    // Batch_max 4, Time_queue 1 ms, 2 slices.
    let sc = scenario(
        10,
        2,
        "p50",
        "kind = \"preba\"\nbatch_max = [4]\ntime_queue_ms = 1.0",
    );
    let got = batches(
        &sc,
        &[
            0.0, 0.1, 0.2, 0.3, 0.5, 0.6, 1.6, 2.0, 3.0, 3.0, 3.0, 3.0, 3.1,
        ],
    );
    let want = vec![
        // full at r3's arrival
        (0, 300_000, 300_000 + 1_226_700, vec![0, 1, 2, 3]),
        // r4's Time_queue runs out at 1.5 ms: both waiting go to the free slice 1
        (1, 1_500_000, 1_500_000 + 662_700, vec![4, 5]),
        // slice 0 freed at 1.5267 but r6 is not due until 2.6
        (0, 2_600_000, 2_600_000 + 662_700, vec![6, 7]),
        // four simultaneous arrivals fill the bucket; slice 0 busy, slice 1 free
        (1, 3_000_000, 3_000_000 + 1_226_700, vec![8, 9, 10, 11]),
        // r12 alone at its deadline
        (0, 4_100_000, 4_100_000 + 380_700, vec![12]),
    ];
    assert_eq!(got, want);
}

#[test]
fn triton_trace_by_hand() {
    // Round robin over 2 slices, max_batch_size 2, no queue delay.
    let sc = scenario(
        10,
        2,
        "p50",
        "kind = \"triton\"\nmax_batch_size = 2\nmax_queue_delay_us = 0.0",
    );
    let got = batches(&sc, &[0.0, 0.1, 0.2, 0.25, 0.3]);
    let want = vec![
        (0, 0, 380_700, vec![0]),
        (1, 100_000, 480_700, vec![1]),
        // r2 and r4 were sent to slice 0 while it was busy
        (0, 380_700, 380_700 + 662_700, vec![2, 4]),
        (1, 480_700, 480_700 + 380_700, vec![3]),
    ];
    assert_eq!(got, want);
}

#[test]
fn deadline_trace_by_hand() {
    // One slice, SLA 2 ms, batches of at most 2.
    let sc = scenario(
        10,
        1,
        "p50",
        "kind = \"deadline\"\nsla_ms = 2.0\nmax_batch_size = 2",
    );
    let got = batches(&sc, &[0.0, 0.1, 1.0]);
    let want = vec![
        // r0 alone could wait until 2.0 - 0.3807; r1 fills the batch at once
        (0, 100_000, 100_000 + 662_700, vec![0, 1]),
        // r2 alone waits for company until its latest start 3.0 - 0.3807
        (0, 2_619_300, 3_000_000, vec![2]),
    ];
    assert_eq!(got, want);
    // An SLA below lat(1): every request is rejected early, none is late.
    let sc = scenario(10, 1, "p50", "kind = \"deadline\"\nsla_ms = 0.3");
    let mut s = sc.clone();
    s.warmup = 0;
    let out = simulate_trace(&s, &trace(&[0.0, 1.0, 2.0])).unwrap();
    assert!(out.batches.is_empty());
    assert_eq!(out.result.rejected, 3);
    assert_eq!(out.result.sla_met, Some(0.0));
}

fn shipped(name: &str) -> Scenario {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name);
    Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn same_seed_same_result_other_seed_other_result() {
    let mut sc = shipped("citrinet-1g7-card.toml");
    sc.requests = 20_000;
    sc.warmup = 2_000;
    let strip = |mut r: preba_sim::RateResult| {
        r.wall_s = 0.0;
        r
    };
    let a = strip(simulate_rate(&sc, 4000.0).unwrap());
    let b = strip(simulate_rate(&sc, 4000.0).unwrap());
    assert_eq!(a, b);
    sc.seed += 1;
    let c = strip(simulate_rate(&sc, 4000.0).unwrap());
    assert_ne!(a, c);
}

#[test]
fn sweeps_are_monotone_and_saturate() {
    for name in [
        "squeezenet-1g7-cpu32.toml",
        "squeezenet-1g7-card.toml",
        "citrinet-1g7-card.toml",
    ] {
        let mut sc = shipped(name);
        sc.requests = 30_000;
        sc.warmup = 3_000;
        let rs: Vec<_> = sc
            .rates
            .iter()
            .map(|&r| simulate_rate(&sc, r).unwrap())
            .collect();
        for w in rs.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            assert!(
                b.throughput >= a.throughput * 0.98,
                "{name}: throughput fell from {} at {}/s to {} at {}/s",
                a.throughput,
                a.offered,
                b.throughput,
                b.offered
            );
            assert!(
                b.slice_util >= a.slice_util * 0.98,
                "{name}: slice utilisation fell"
            );
            assert!(
                b.p95_ms >= a.p95_ms * 0.9,
                "{name}: p95 fell sharply at {}/s",
                b.offered
            );
            assert!(b.energy_j > 0.0 && b.j_per_request <= a.j_per_request * 1.05);
        }
        // Below saturation everything offered is served.
        let first = &rs[0];
        assert!(
            (first.throughput / first.offered - 1.0).abs() < 0.05,
            "{name}: {first:?}"
        );
        // The sweeps are sized to end past saturation.
        let last = rs.last().unwrap();
        assert!(
            last.throughput < 0.99 * last.offered,
            "{name}: never saturates: {last:?}"
        );
    }
}

#[test]
fn scenario_errors_name_file_and_field() {
    let base = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scenarios/squeezenet-1g7-cpu32.toml"),
    )
    .unwrap();
    let cases = [
        (
            "per_core_rate = 300.0",
            "per_core_rate = -1.0",
            "preprocess.per_core_rate",
        ),
        ("cores = 32", "", "preprocess.cores"),
        ("kind = \"preba\"", "kind = \"fifo\"", "policy.kind"),
        (
            "type = \"a100-1g.5gb\"",
            "type = \"h100-9g\"",
            "slices.group[0].type",
        ),
        ("sigma = 0.3", "sigma = 0.3\nsigmaa = 1", "sigmaa"),
        ("warmup = 20000", "warmup = 200000", "warmup"),
    ];
    for (from, to, field) in cases {
        assert!(base.contains(from), "{from}");
        let err = Scenario::parse(&base.replacen(from, to, 1), "x.toml", None).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("x.toml: field `") && msg.contains(field),
            "{field}: {msg}"
        );
    }
}

#[test]
fn cli_exit_codes() {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(preba_sim::main(&s(&[])), 2);
    assert_eq!(preba_sim::main(&s(&["--scenario"])), 2);
    assert_eq!(preba_sim::main(&s(&["--bogus"])), 2);
    assert_eq!(preba_sim::main(&s(&["--scenario", "/nonexistent.toml"])), 1);
    let dir = std::env::temp_dir().join(format!("preba-sim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("r.json");
    let sc =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/squeezenet-1g7-card.toml");
    let args = s(&[
        "--scenario",
        sc.to_str().unwrap(),
        "--requests",
        "5000",
        "--seed",
        "3",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(preba_sim::main(&args), 0);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(v["format"], "preba-sim-1");
    assert_eq!(v["seed"], 3);
    assert_eq!(v["rates"].as_array().unwrap().len(), 8);
    assert!(v["rates"][0]["p95_ms"].as_f64().unwrap() > 0.0);
    assert!(
        v["sources"]["preprocess"]
            .as_str()
            .unwrap()
            .contains("model.rs")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
