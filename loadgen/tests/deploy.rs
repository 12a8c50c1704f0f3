//! The KServe manifests in deploy/kserve/ against the `preba serve` command line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::Value;

fn manifests() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kserve");
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 3,
        "manifests in {}: {paths:?}",
        dir.display()
    );
    for p in paths {
        let text = std::fs::read_to_string(&p).unwrap();
        for (i, doc) in serde_norway::Deserializer::from_str(&text).enumerate() {
            let v: serde_norway::Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: document {i}: {e}", p.display()));
            let name = format!("{} #{i}", p.file_name().unwrap().to_string_lossy());
            out.push((name, serde_json::to_value(v).unwrap()));
        }
    }
    out
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {ptr} in {v}"))
}

fn port(addr: &str) -> Result<u16, String> {
    addr.parse::<SocketAddr>()
        .map(|a| a.port())
        .map_err(|_| format!("not ADDR:PORT: {addr:?}"))
}

fn check_card(v: &str) -> Result<(), String> {
    let bdf = |b: &str| {
        // [DDDD:]BB:DD.F in hex.
        let parts: Vec<&str> = b.split([':', '.']).collect();
        let widths: &[usize] = if parts.len() == 4 {
            &[4, 2, 2, 1]
        } else {
            &[2, 2, 1]
        };
        parts.len() == widths.len()
            && parts
                .iter()
                .zip(widths)
                .all(|(p, &w)| p.len() == w && p.chars().all(|c| c.is_ascii_hexdigit()))
    };
    let env = |e: &str| {
        e.strip_prefix("$(")
            .and_then(|e| e.strip_suffix(')'))
            .is_some_and(|n| {
                !n.is_empty()
                    && n.chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            })
    };
    let ok = match v.split_once(':') {
        _ if v == "emulated" || v == "cpu" => true,
        _ if env(v) => true,
        Some(("vfio", b)) => bdf(b),
        Some(("vfio-user", p)) => p.starts_with('/'),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("bad --card {v:?}"))
    }
}

fn check_slices(v: &str) -> Result<(), String> {
    let num = |n: &str| n.parse::<u32>().is_ok_and(|n| n > 0);
    let ok = match v.split_once(':') {
        Some(("cpu", n)) => match n.split_once('x') {
            Some((a, b)) => num(a) && num(b),
            None => num(n),
        },
        Some(("cuda", "all")) => true,
        Some(("cuda", list)) => list
            .split(',')
            .all(|m| m.starts_with("MIG-") && m.len() > 4),
        Some(("modeled", list)) => list.split(',').all(|e| {
            let (prof, n) = e.split_once('*').unwrap_or((e, "1"));
            num(n)
                && prof
                    .split_once('-')
                    .is_some_and(|(gpu, p)| !gpu.is_empty() && p.contains('g'))
        }),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("bad --slices {v:?}"))
    }
}

/// Parses `preba serve` args (`--flag value` or `--flag=value`) into flag -> values,
/// checking every flag is one `preba serve` has and every value is well formed.
fn serve_args(args: &[String]) -> Result<BTreeMap<String, Vec<String>>, String> {
    let (first, rest) = args.split_first().ok_or("no args")?;
    if first != "serve" {
        return Err(format!("first arg is {first:?}, not serve"));
    }
    let mut flags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        let (flag, value) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), v.to_string()),
            _ => (
                a.clone(),
                it.next().ok_or(format!("{a} has no value"))?.clone(),
            ),
        };
        match flag.as_str() {
            "--model-repository" | "--profile" => {
                if !value.starts_with('/') {
                    return Err(format!("{flag} {value:?} is not an absolute path"));
                }
            }
            "--model" => {
                let (name, path) = value
                    .split_once('=')
                    .ok_or(format!("--model {value:?}: not NAME=PATH"))?;
                if name.is_empty() || !path.ends_with(".onnx") {
                    return Err(format!("--model {value:?}: not NAME=PATH.onnx"));
                }
            }
            "--card" => check_card(&value)?,
            "--slices" => check_slices(&value)?,
            "--http" | "--metrics" => {
                port(&value)?;
            }
            "--max-queue" => {
                value
                    .parse::<u32>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or(format!("--max-queue {value:?}"))?;
            }
            _ => return Err(format!("{flag} is not a preba serve flag")),
        }
        let seen = flags.entry(flag.clone()).or_default();
        if !seen.is_empty() && flag != "--model" {
            return Err(format!("{flag} given twice"));
        }
        seen.push(value);
    }
    Ok(flags)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

struct Runtime {
    http: u16,
    metrics: u16,
    card_from_env: bool,
    formats: Vec<String>,
}

fn check_runtime(name: &str, m: &Value) -> Runtime {
    let spec = &m["spec"];
    assert!(
        strings(&spec["protocolVersions"]).contains(&"v2".to_string()),
        "{name}: protocolVersions"
    );
    let formats: Vec<String> = spec["supportedModelFormats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| s(f, "/name").to_string())
        .collect();
    assert!(formats.contains(&"onnx".to_string()), "{name}: {formats:?}");
    let containers = spec["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "{name}");
    let c = &containers[0];
    assert_eq!(s(c, "/name"), "kserve-container", "{name}");
    assert_eq!(strings(&c["command"]), vec!["preba"], "{name}");
    let flags = serve_args(&strings(&c["args"])).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(flags["--model-repository"], vec!["/mnt/models"], "{name}");
    let http = port(&flags["--http"][0]).unwrap();
    let metrics = port(&flags["--metrics"][0]).unwrap();
    for a in [&flags["--http"][0], &flags["--metrics"][0]] {
        assert!(
            a.starts_with("0.0.0.0:"),
            "{name}: {a} is not reachable from outside the pod"
        );
    }
    assert_ne!(http, metrics, "{name}");
    for (probe, path) in [
        ("livenessProbe", "/v2/health/live"),
        ("readinessProbe", "/v2/health/ready"),
    ] {
        let g = &c[probe]["httpGet"];
        assert_eq!(s(g, "/path"), path, "{name}: {probe}");
        assert_eq!(
            g["port"].as_u64(),
            Some(u64::from(http)),
            "{name}: {probe} port"
        );
    }
    let ports: Vec<u64> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["containerPort"].as_u64().unwrap())
        .collect();
    assert!(
        ports.contains(&u64::from(http)),
        "{name}: containerPort {ports:?} lacks {http}"
    );
    check_prometheus(name, &spec["annotations"], metrics);
    Runtime {
        http,
        metrics,
        card_from_env: flags.get("--card").is_some_and(|c| c[0] == "$(PREBA_CARD)"),
        formats,
    }
}

fn check_prometheus(name: &str, ann: &Value, metrics: u16) {
    assert_eq!(ann["prometheus.io/scrape"], "true", "{name}: {ann}");
    assert_eq!(
        ann["prometheus.io/port"],
        metrics.to_string().as_str(),
        "{name}: scrape port"
    );
    assert_eq!(ann["prometheus.io/path"], "/metrics", "{name}");
}

#[test]
fn manifests_match_the_serve_command_line() {
    let all = manifests();
    let mut runtimes = BTreeMap::new();
    let mut services = Vec::new();
    for (name, m) in &all {
        match (s(m, "/apiVersion"), s(m, "/kind")) {
            ("serving.kserve.io/v1alpha1", "ServingRuntime") => {
                runtimes.insert(s(m, "/metadata/name").to_string(), check_runtime(name, m));
            }
            ("serving.kserve.io/v1beta1", "InferenceService") => services.push((name, m)),
            ("keda.sh/v1alpha1", "ScaledObject") => {}
            (v, k) => panic!("{name}: unexpected {v} {k}"),
        }
    }
    assert!(runtimes.contains_key("preba"), "{:?}", runtimes.keys());
    assert!(!services.is_empty());
    let mut predictors = Vec::new();
    for (name, m) in &services {
        let model = &m["spec"]["predictor"]["model"];
        let rt = runtimes
            .get(s(model, "/runtime"))
            .unwrap_or_else(|| panic!("{name}: unknown runtime"));
        assert!(
            rt.formats
                .contains(&s(model, "/modelFormat/name").to_string()),
            "{name}"
        );
        assert_eq!(s(model, "/protocolVersion"), "v2", "{name}");
        let uri = s(model, "/storageUri");
        assert!(uri.contains("://"), "{name}: storageUri {uri}");
        check_prometheus(name, &m["metadata"]["annotations"], rt.metrics);
        if rt.card_from_env {
            // The card's env var comes from its device plugin: the pod must ask for the card.
            assert_eq!(
                model["resources"]["limits"]["preba.dev/card"], "1",
                "{name}"
            );
        }
        assert_ne!(rt.http, rt.metrics);
        predictors.push(format!("{}-predictor", s(m, "/metadata/name")));
    }
    for (name, m) in all.iter().filter(|(_, m)| m["kind"] == "ScaledObject") {
        let target = s(m, "/spec/scaleTargetRef/name");
        assert!(
            predictors.iter().any(|p| p == target),
            "{name}: {target} is no predictor of {predictors:?}"
        );
        let triggers = m["spec"]["triggers"].as_array().unwrap();
        assert!(
            triggers.iter().any(|t| t["type"] == "prometheus"
                && s(t, "/metadata/query").contains("preba_queue_depth")),
            "{name}: no trigger on preba_queue_depth"
        );
    }
}

#[test]
fn the_arg_checker_rejects_what_preba_serve_would() {
    let v = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    assert!(
        serve_args(&v(
            "serve --http 0.0.0.0:8080 --card vfio:0000:3b:00.0 --slices modeled:a100-1g.5gb*7"
        ))
        .is_ok()
    );
    assert!(
        serve_args(&v(
            "serve --slices cuda:MIG-1234,MIG-5678 --model sq=/m/sq.onnx --model mb=/m/mb.onnx"
        ))
        .is_ok()
    );
    assert!(serve_args(&v("serve --card=vfio-user:/run/card.sock --slices=cpu:4")).is_ok());
    for bad in [
        "serve --http 0.0.0.0",
        "serve --bogus 1",
        "serve --card vfio:3b:00",
        "serve --card gpu",
        "serve --slices cpu:0",
        "serve --slices cuda:GPU-1",
        "serve --model sq",
        "serve --model-repository models",
        "serve --max-queue -1",
        "serve --http 0.0.0.0:1 --http 0.0.0.0:2",
        "run --http 0.0.0.0:1",
        "serve --metrics",
    ] {
        assert!(serve_args(&v(bad)).is_err(), "{bad}");
    }
}
