//! The load generator against a mock KServe v2 server.

mod common;

use std::time::{Duration, Instant};

use common::{Answer, Mock, jpegs};
use preba_loadgen::{DROPPED, RunConfig, read_csv, run};

fn cfg(url: &str, inputs: Vec<std::path::PathBuf>, rate: f64, secs: f64) -> RunConfig {
    let mut c = RunConfig::new(url, "m", inputs);
    c.rates = vec![rate];
    c.duration = Duration::from_secs_f64(secs);
    c
}

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

/// Runs a wall-clock measurement up to three times until its timing checks
/// hold: a generator that cannot keep its schedule fails every attempt,
/// while one scheduling hiccup of a loaded two-core machine (a 300 ms stall
/// made one CI run's p99 380 ms) fails only the attempt it hit. Exact counts
/// are asserted inside `attempt` on every try.
fn timing_holds(what: &str, mut attempt: impl FnMut() -> Result<(), String>) {
    let mut seen = Vec::new();
    for _ in 0..3 {
        match attempt() {
            Ok(()) => return,
            Err(e) => {
                eprintln!("{what}: timing off this attempt: {e}");
                seen.push(e);
            }
        }
    }
    panic!("{what}: timing off in every attempt:\n{}", seen.join("\n"));
}

#[test]
fn achieved_follows_offered_on_a_fast_server() {
    let (url, mock) = Mock::new(|_| Answer::Ok(Duration::from_millis(1))).start();
    let (_d, inputs) = jpegs();
    timing_holds("achieved rate", || {
        let before = mock.infers.load(std::sync::atomic::Ordering::SeqCst);
        let mut c = cfg(&url, inputs.clone(), 0.0, 1.0);
        c.rates = vec![50.0, 200.0];
        let r = run(&c).unwrap();
        assert_eq!(r.len(), 2);
        let mut timing = Ok(());
        for (res, rate) in r.iter().zip([50.0, 200.0]) {
            assert!(res.errors.is_empty(), "{:?}", res.errors);
            assert_eq!(res.ok, rate as u64);
            assert!(!res.modeled);
            let on_rate = res.achieved > rate * 0.85 && res.achieved <= rate * 1.01;
            let fast = res.p50_ms >= 1.0 && res.p99_ms < 200.0;
            if !(on_rate && fast) {
                timing = Err(format!("{res:?}"));
            }
        }
        assert_eq!(
            mock.infers.load(std::sync::atomic::Ordering::SeqCst) - before,
            250
        );
        timing
    });
}

#[test]
fn open_loop_slow_server_does_not_slow_arrivals() {
    let (url, _mock) = Mock::new(|_| Answer::Ok(Duration::from_millis(1500))).start();
    let (_d, inputs) = jpegs();
    let mut c = cfg(&url, inputs, 50.0, 0.6);
    c.concurrency = 5;
    let t = Instant::now();
    let r = run(&c).unwrap().remove(0);
    let took = t.elapsed();
    // 30 arrivals in 0.6 s; the 5 outstanding ones take 1.5 s, so the other 25 find the cap.
    assert_eq!(r.ok, 5, "{r:?}");
    assert_eq!(r.errors.get(DROPPED), Some(&25), "{r:?}");
    assert_eq!(r.errors.len(), 1);
    assert!(r.p50_ms >= 1500.0 && r.p50_ms < 2500.0, "{r:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(
        r.achieved > 2.0 && r.achieved < 3.4,
        "5 answers in ~1.5 s: {r:?}"
    );
}

#[test]
fn percentiles_from_known_delays() {
    // Every tenth request takes 150 ms, the rest 2 ms: p50 is fast, p95 and p99 slow.
    let (url, _mock) =
        Mock::new(|i| Answer::Ok(Duration::from_millis(if i % 10 == 9 { 150 } else { 2 }))).start();
    let (_d, inputs) = jpegs();
    // 100 requests per attempt: every attempt sees the same tenth slow.
    timing_holds("percentiles", || {
        let r = run(&cfg(&url, inputs.clone(), 100.0, 1.0))
            .unwrap()
            .remove(0);
        assert_eq!(r.ok, 100, "{r:?}");
        // A stall adds to a delay, never takes from it: the lower bounds are exact.
        assert!(
            r.p50_ms >= 2.0 && r.p95_ms >= 150.0 && r.p99_ms >= 150.0,
            "{r:?}"
        );
        if r.p50_ms < 60.0 && r.p95_ms < 400.0 && r.p99_ms < 400.0 {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    });
}

#[test]
fn error_reasons_are_counted() {
    let (url, _mock) = Mock::new(|i| match i % 5 {
        1 => Answer::BadRequest("bad image"),
        3 => Answer::Abort,
        _ => Answer::Ok(Duration::from_millis(1)),
    })
    .start();
    let (_d, inputs) = jpegs();
    let r = run(&cfg(&url, inputs, 100.0, 0.5)).unwrap().remove(0);
    assert_eq!(r.ok, 30, "{r:?}");
    assert_eq!(r.errors.get("HTTP 400: bad image"), Some(&10), "{r:?}");
    assert_eq!(r.errors.get("connection closed"), Some(&10), "{r:?}");
    assert_eq!(r.error_count(), 20);
}

#[test]
fn connection_close_and_modeled_marker() {
    let mut m = Mock::new(|_| Answer::Ok(Duration::from_millis(1)));
    m.close = true;
    m.modeled = true;
    let (url, _mock) = m.start();
    let (_d, inputs) = jpegs();
    let r = run(&cfg(&url, inputs, 100.0, 0.5)).unwrap().remove(0);
    assert_eq!(r.ok, 50, "{r:?}");
    assert!(r.errors.is_empty(), "{r:?}");
    assert!(r.modeled);
}

#[test]
fn batches_and_ideal_tensors_are_well_framed() {
    let (url, mock) = Mock::new(|_| Answer::Ok(Duration::from_millis(1))).start();
    let (_d, inputs) = jpegs();
    let mut c = cfg(&url, inputs, 50.0, 0.2);
    c.batch = 3;
    let r = run(&c).unwrap().remove(0);
    assert_eq!((r.ok, r.error_count()), (10, 0), "{r:?}");

    // --ideal: an .npy float32 [1,3,8,8] sent as the FP32 input.
    let dir = tempfile::tempdir().unwrap();
    let npy = dir.path().join("t.npy");
    let mut h = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 8, 8), }".to_string();
    while !(h.len() + 11).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(h.len() as u16).to_le_bytes());
    b.extend_from_slice(h.as_bytes());
    b.resize(b.len() + 3 * 8 * 8 * 4, 0);
    std::fs::write(&npy, b).unwrap();
    let mut c = cfg(&url, vec![npy], 50.0, 0.2);
    c.ideal = true;
    let r = run(&c).unwrap().remove(0);
    assert_eq!((r.ok, r.error_count()), (10, 0), "{r:?}");
    assert_eq!(mock.infers.load(std::sync::atomic::Ordering::SeqCst), 20);
}

/// Polylines drawn 2 px wide: the runs' lines (axes and ticks are 1 px polylines).
fn series_lines(svg: &str) -> usize {
    svg.split("<polyline")
        .skip(1)
        .filter(|p| p.split('>').next().unwrap().contains("stroke-width=\"2\""))
        .count()
}

#[test]
fn csv_and_plot() {
    let (url, _mock) = Mock::new(|_| Answer::Ok(Duration::from_millis(1))).start();
    let (d, inputs) = jpegs();
    let a = d.path().join("a.csv");
    let b = d.path().join("b.csv");
    let svg = d.path().join("one.svg");
    let files: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
    let cmd = format!(
        "{url} --model m {} --rates 20:40:20 --duration 0.3 --label fast --csv {} --plot {}",
        files.join(" "),
        a.display(),
        svg.display()
    );
    assert_eq!(preba_loadgen::main(&args(&cmd)), 0);
    let text = std::fs::read_to_string(&a).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("label,offered_rps,achieved_rps,p50_ms,p95_ms,p99_ms,ok,errors,error_detail,modeled")
    );
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(row.len(), 10);
    assert_eq!(
        (row[0], row[1], row[6], row[7], row[9]),
        ("fast", "20.000", "6", "0", "false")
    );
    assert_eq!(lines.count(), 1);
    let run_a = read_csv(&a).unwrap();
    assert_eq!(run_a.label, "fast");
    assert_eq!(run_a.results.len(), 2);
    let one = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(series_lines(&one), 1, "{one}");

    // A second run with errors, then both on one plot.
    let mut slow = run_a.clone();
    slow.label = "slow, with errors".into();
    for r in &mut slow.results {
        r.p95_ms *= 3.0;
        r.errors.insert("HTTP 503: queue full; try later".into(), 2);
    }
    preba_loadgen::write_csv(&b, &slow.label, &slow.results).unwrap();
    let back = read_csv(&b).unwrap();
    assert_eq!(back.label, slow.label);
    assert_eq!(
        back.results[0]
            .errors
            .get("HTTP 503: queue full, try later"),
        Some(&2)
    );
    let both = d.path().join("both.svg");
    let plot = format!("plot {} {} {}", both.display(), a.display(), b.display());
    assert_eq!(preba_loadgen::main(&args(&plot)), 0);
    let s = std::fs::read_to_string(&both).unwrap();
    assert!(s.starts_with("<svg"), "{}", &s[..80.min(s.len())]);
    assert_eq!(series_lines(&s), 2);
    assert!(s.contains("fast") && s.contains("slow, with errors"));
}

#[test]
fn unreachable_server_and_unknown_model_fail_clearly() {
    let (_d, inputs) = jpegs();
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let e = run(&cfg(&url, inputs.clone(), 10.0, 0.1)).unwrap_err();
    assert_eq!(e.exit_code(), 1);
    let msg = e.to_string();
    assert!(
        msg.contains("cannot reach server") && msg.contains(&url),
        "{msg}"
    );
    let cmd = format!("{url} --model m {}", inputs[0].display());
    assert_eq!(preba_loadgen::main(&args(&cmd)), 1);

    let (url, _mock) = Mock::new(|_| Answer::Ok(Duration::ZERO)).start();
    let mut c = cfg(&url, inputs.clone(), 10.0, 0.1);
    c.model = "nope".into();
    let e = run(&c).unwrap_err();
    assert_eq!(e.exit_code(), 1);
    assert!(e.to_string().contains("404: unknown model"), "{e}");

    // Usage errors exit 2: a missing input file, a bad flag.
    let cmd = format!("{url} --model m /nonexistent.jpg");
    assert_eq!(preba_loadgen::main(&args(&cmd)), 2);
    assert_eq!(preba_loadgen::main(&args("ftp://x --model m a.jpg")), 2);
    // --fail-on-error turns request errors into exit 1.
    let (url, _mock) = Mock::new(|_| Answer::BadRequest("no")).start();
    let cmd = format!(
        "{url} --model m {} --rate 20 --duration 0.1 --fail-on-error",
        inputs[0].display()
    );
    assert_eq!(preba_loadgen::main(&args(&cmd)), 1);
}
