//! Profile table: parsing, errors, interpolation, the knee rule on published
//! curves and on the paper's examples, the builtin table.

use preba_batcher::{Error, PrebaConfig, ProfileTable, Time};

const MS: Time = 1_000_000;

/// MIGPerf's published A100-80GB sweep, copied into the crate (see its README).
const MIGPERF_CSV: &str = include_str!("../profiles/data/migperf-a100-80gb-cv.csv");

/// (GPU, rank by size) of the builtin slice types.
fn slice_rank(slice: &str) -> (usize, usize) {
    const FAMILIES: [[&str; 4]; 2] = [
        [
            "a100-1g.5gb",
            "a100-2g.10gb",
            "a100-3g.20gb",
            "a100-7g.40gb",
        ],
        [
            "a100-1g.10gb",
            "a100-2g.20gb",
            "a100-3g.40gb",
            "a100-7g.80gb",
        ],
    ];
    FAMILIES
        .iter()
        .enumerate()
        .find_map(|(f, names)| names.iter().position(|n| *n == slice).map(|r| (f, r)))
        .unwrap_or_else(|| panic!("unknown slice type {slice}"))
}

fn table(entries: &str) -> Result<ProfileTable, Error> {
    ProfileTable::parse(&format!("format = \"preba-profile-1\"\n{entries}"))
}

const GOOD: &str = r#"
[[entry]]
model = "m"
slice = "s"
source = "[D] test"
points = [
  { batch = 1, p50_ms = 1.0, p95_ms = 1.5, throughput = 1000.0 },
  { batch = 4, p50_ms = 4.0, p95_ms = 5.0 },
  { batch = 8, p50_ms = 6.0, p95_ms = 7.0, throughput = 1333.0 },
]
"#;

fn field_error(entries: &str) -> (&'static str, String) {
    match table(entries) {
        Err(Error::Entry { field, problem, .. }) => (field, problem),
        other => panic!("expected an entry error, got {other:?}"),
    }
}

#[test]
fn parses_and_defaults_throughput() {
    let t = table(GOOD).unwrap();
    let e = t.find("m", "s", None).unwrap();
    assert_eq!(e.points().len(), 3);
    assert_eq!(e.points()[1].throughput, 1000.0);
    assert!(t.find("m", "s", Some(0)).is_none());
    assert!(t.find("m", "other", None).is_none());
}

#[test]
fn errors_name_the_entry_and_field() {
    let e = table(&GOOD.replace("batch = 4", "batch = 1")).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("entry 0 (m on s)"), "{msg}");
    assert!(msg.contains("`batch`") && msg.contains("point 1"), "{msg}");

    assert_eq!(
        field_error(&GOOD.replace("p50_ms = 4.0", "p50_ms = 0.0")).0,
        "p50_ms"
    );
    assert_eq!(
        field_error(&GOOD.replace("p95_ms = 5.0", "p95_ms = -5.0")).0,
        "p95_ms"
    );
    assert_eq!(
        field_error(&GOOD.replace("p95_ms = 5.0", "p95_ms = 3.0")).0,
        "p95_ms"
    );
    assert_eq!(
        field_error(&GOOD.replace("throughput = 1000.0", "throughput = 0.0")).0,
        "throughput"
    );
    assert_eq!(
        field_error(&GOOD.replace("batch = 1,", "batch = 0,")).0,
        "batch"
    );
    let no_points = GOOD.split("points").next().unwrap();
    assert_eq!(field_error(no_points), ("points", "missing".to_string()));
    assert_eq!(
        field_error(&format!("{no_points}points = []")),
        ("points", "empty".to_string())
    );
    assert_eq!(field_error(&GOOD.replace("source", "#")).0, "source");
    assert_eq!(field_error(&GOOD.replace("model = \"m\"", "")).0, "model");
    assert_eq!(field_error(&format!("{GOOD}{GOOD}")).0, "bucket");
    assert_eq!(
        field_error(&GOOD.replace("source", "batch_knee = 0\nsource")).0,
        "batch_knee"
    );

    // Unknown fields and a missing or wrong format are refused too, by name.
    let msg = table(&GOOD.replace("source", "sauce"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("sauce"), "{msg}");
    let msg = ProfileTable::parse(GOOD).unwrap_err().to_string();
    assert!(msg.contains("`format`"), "{msg}");
    let msg = ProfileTable::parse("format = \"x\"")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("`format`"), "{msg}");
}

#[test]
fn round_trips_through_toml() {
    let t = table(&format!(
        "{GOOD}\n[[entry]]\nmodel = \"a\"\nslice = \"s\"\nbucket = 2\nbatch_knee = 3\ntime_knee_ms = 7.25\nsource = \"x\"\npoints = [{{ batch = 2, p50_ms = 0.1, p95_ms = 0.30000000000000004 }}]\n"
    ))
    .unwrap();
    let again = ProfileTable::parse(&t.to_toml()).unwrap();
    assert_eq!(again, t);
    let builtin = ProfileTable::builtin();
    assert_eq!(ProfileTable::parse(&builtin.to_toml()).unwrap(), builtin);
}

#[test]
fn latency_interpolates_extrapolates_and_has_a_floor() {
    let t = table(GOOD).unwrap();
    let e = t.find("m", "s", None).unwrap();
    assert_eq!(e.latency_ns(1), MS);
    assert_eq!(e.latency_ns(2), 2 * MS);
    assert_eq!(e.latency_ns(4), 4 * MS);
    assert_eq!(e.latency_ns(6), 5 * MS);
    assert_eq!(e.latency_ns(8), 6 * MS);
    // Past the last point along the last two: 0.5 ms per request.
    assert_eq!(e.latency_ns(16), 10 * MS);
    assert_eq!(e.latency_ns(0), MS);
    assert_eq!(e.p95_ns(6), 6 * MS);
    assert_eq!(e.p95_ns(12), 9 * MS);

    // A falling tail is cut at the first point's latency.
    let t = table(
        r#"[[entry]]
model = "m"
slice = "s"
source = "x"
points = [ { batch = 2, p50_ms = 2.0, p95_ms = 2.0 }, { batch = 4, p50_ms = 1.0, p95_ms = 1.0 } ]
"#,
    )
    .unwrap();
    let e = &t.entries()[0];
    assert_eq!(e.latency_ns(1), 2 * MS);
    assert_eq!(e.latency_ns(3), 2 * MS);
    assert_eq!(e.latency_ns(100), 2 * MS);

    // One point: constant below it, constant throughput above.
    let t = table(
        "[[entry]]\nmodel = \"m\"\nslice = \"s\"\nsource = \"x\"\npoints = [ { batch = 4, p50_ms = 2.0, p95_ms = 3.0 } ]\n",
    )
    .unwrap();
    let e = &t.entries()[0];
    assert_eq!(e.latency_ns(1), 2 * MS);
    assert_eq!(e.latency_ns(8), 4 * MS);
    assert_eq!(e.knee(), (4, 3 * MS));
}

#[test]
fn knee_rule_and_overrides() {
    let t = table(GOOD).unwrap();
    // Throughputs 1000, 1000, 1333: 90% of 1333 is 1200, first reached at 8.
    assert_eq!(t.entries()[0].knee(), (8, 7 * MS));
    let t = table(&GOOD.replace("source", "batch_knee = 4\nsource")).unwrap();
    assert_eq!(t.entries()[0].knee(), (4, 5 * MS));
    let t = table(&GOOD.replace("source", "batch_knee = 6\ntime_knee_ms = 2.5\nsource")).unwrap();
    assert_eq!(t.entries()[0].knee(), (6, 2_500_000));
}

/// The published MIGPerf sweeps as a profile table, straight from the CSV.
fn migperf_table() -> ProfileTable {
    let mut text = String::from("format = \"preba-profile-1\"\n");
    let mut last = String::new();
    for line in MIGPERF_CSV.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let key = format!("{}/{}", f[0], f[1]);
        if key != last {
            text += &format!(
                "[[entry]]\nmodel = \"{}\"\nslice = \"{}\"\nsource = \"MIGPerf\"\n",
                f[0], f[1]
            );
            last = key;
        }
        let (mean, std): (f64, f64) = (f[3].parse().unwrap(), f[4].parse().unwrap());
        text += &format!(
            "[[entry.points]]\nbatch = {}\np50_ms = {mean}\np95_ms = {}\nthroughput = {}\n",
            f[2],
            mean + 1.645 * std,
            f[5]
        );
    }
    ProfileTable::parse(&text).unwrap()
}

#[test]
fn knee_rule_on_the_published_migperf_curves() {
    let t = migperf_table();
    let knees = |model: &str| -> Vec<(u32, Time)> {
        ["1g.10gb", "2g.20gb", "3g.40gb", "7g.80gb"]
            .iter()
            .map(|s| t.find(model, s, None).unwrap().knee())
            .collect()
    };
    let r50 = knees("resnet50");
    let vit = knees("vision_transformer");
    assert_eq!(
        r50.iter().map(|k| k.0).collect::<Vec<_>>(),
        [32, 64, 64, 64]
    );
    assert_eq!(vit.iter().map(|k| k.0).collect::<Vec<_>>(), [8, 8, 8, 16]);
    for k in [&r50, &vit] {
        // Bigger slices batch at least as much and are no slower at their knee
        // than a smaller slice at the same batch would be.
        assert!(k.windows(2).all(|w| w[0].0 <= w[1].0), "{k:?}");
        for (b, t) in k {
            assert!(*b >= 1 && *t > MS && *t < 200 * MS, "{k:?}");
        }
    }
    // ResNet-50 on 1g: p95 at batch 32 = 83.66 + 1.645 * std.
    assert!((r50[0].1 as f64 / 1e6 - 83.66).abs() < 1.0);
}

#[test]
fn builtin_published_entries_match_the_published_csv() {
    let b = ProfileTable::builtin();
    let csv = migperf_table();
    for (csv_model, model) in [("resnet50", "resnet50"), ("vision_transformer", "vit_b_16")] {
        for s in ["1g.10gb", "2g.20gb", "3g.40gb", "7g.80gb"] {
            let ours = b.find(model, &format!("a100-{s}"), None).unwrap();
            let theirs = csv.find(csv_model, s, None).unwrap();
            assert_eq!(ours.points().len(), theirs.points().len());
            for (p, q) in ours.points().iter().zip(theirs.points()) {
                assert_eq!(p.batch, q.batch);
                assert!((p.p50_ms - q.p50_ms).abs() < 1e-3);
                assert!((p.p95_ms - q.p95_ms).abs() < 1e-3);
            }
            assert!(ours.source().contains("[P]"));
        }
    }
}

#[test]
fn builtin_knees_reproduce_the_papers_examples() {
    let b = ProfileTable::builtin();
    let knee = |m: &str, s: &str| b.find(m, s, None).unwrap().knee().0;
    for (model, small, big) in [
        ("mobilenet_v3_small", 16, 128),
        ("squeezenet1_1", 4, 32),
        ("swin_t", 2, 16),
    ] {
        assert_eq!(knee(model, "a100-1g.5gb"), small, "{model}");
        assert_eq!(knee(model, "a100-7g.40gb"), big, "{model}");
    }
    // Audio Time_knee ~35 ms on 1g.5gb: every bucket within a factor 2, the
    // mean over buckets within 25%.
    for model in ["citrinet_256", "conformer"] {
        let times: Vec<f64> = (0..6)
            .map(|i| b.find(model, "a100-1g.5gb", Some(i)).unwrap().knee().1 as f64 / 1e6)
            .collect();
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        assert!(times.iter().all(|t| (17.5..70.0).contains(t)), "{times:?}");
        assert!((26.0..44.0).contains(&mean), "{model}: {mean}");
    }
}

#[test]
fn builtin_table_is_sane() {
    let b = ProfileTable::builtin();
    assert!(b.entries().len() >= 70);
    for e in b.entries() {
        let (batch, time) = e.knee();
        assert!(
            e.points().iter().any(|p| p.batch == batch),
            "{} {}",
            e.model(),
            e.slice()
        );
        assert!(time >= e.latency_ns(batch) && time > 0);
        assert!(e.source().contains("[P]") || e.source().contains("[D]"));
        // Each larger slice type of the same GPU batches at least as much.
        let (fam, r) = slice_rank(e.slice());
        for o in b.entries() {
            let (ofam, ro) = slice_rank(o.slice());
            if o.model() == e.model() && o.bucket() == e.bucket() && ofam == fam && ro > r {
                assert!(
                    o.knee().0 >= batch,
                    "{} {} vs {}",
                    e.model(),
                    e.slice(),
                    o.slice()
                );
            }
        }
        // Longer audio never allows a bigger batch on the same slice.
        if let Some(i) = e.bucket().filter(|&i| i > 0) {
            let shorter = b.find(e.model(), e.slice(), Some(i - 1)).unwrap();
            assert!(shorter.knee().0 >= batch, "{} {} {i}", e.model(), e.slice());
        }
    }
    for slice in [
        "a100-1g.5gb",
        "a100-2g.10gb",
        "a100-3g.20gb",
        "a100-7g.40gb",
    ] {
        for m in [
            "mobilenet_v3_small",
            "squeezenet1_1",
            "swin_t",
            "resnet50",
            "vit_b_16",
        ] {
            assert!(b.find(m, slice, None).is_some(), "{m} on {slice}");
        }
    }
}

#[test]
fn configs_from_the_table() {
    let b = ProfileTable::builtin();
    let cfg = PrebaConfig::from_table(&b, "squeezenet1_1", "a100-1g.5gb", 7, 256).unwrap();
    let (bk, tk) = b.find("squeezenet1_1", "a100-1g.5gb", None).unwrap().knee();
    assert_eq!(cfg.batch_max, vec![bk]);
    assert_eq!(cfg.time_queue, tk / 7);
    assert_eq!(cfg.bucket_width_s, None);

    let cfg = PrebaConfig::from_table(&b, "citrinet_256", "a100-1g.5gb", 7, 256).unwrap();
    assert_eq!(cfg.batch_max.len(), 6);
    assert_eq!(cfg.bucket_width_s, Some(2.5));
    let min_tk = (0..6)
        .map(|i| {
            b.find("citrinet_256", "a100-1g.5gb", Some(i))
                .unwrap()
                .knee()
                .1
        })
        .min()
        .unwrap();
    assert_eq!(cfg.time_queue, min_tk / 7);
    preba_batcher::Preba::new(cfg).unwrap();

    assert!(matches!(
        PrebaConfig::from_table(&b, "nope", "a100-1g.5gb", 1, 1),
        Err(Error::NoProfile { .. })
    ));
    let gap = table(
        "[[entry]]\nmodel = \"a\"\nslice = \"s\"\nbucket = 1\nsource = \"x\"\npoints = [{ batch = 1, p50_ms = 1.0, p95_ms = 1.0 }]\n",
    )
    .unwrap();
    assert!(matches!(
        PrebaConfig::from_table(&gap, "a", "s", 1, 1),
        Err(Error::Config(_))
    ));
}
