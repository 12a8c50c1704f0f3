//! `cargo xtask eval --quick` in a test: the quick evaluation runs into a
//! temporary directory and its report has every section, finite numbers,
//! the SVGs it links, and the contract's last line.

use preba_sim::eval::{Config, DEFAULT_CONFIG, evaluate};

const SECTIONS: &[&str] = &[
    "# PREBA reproduction: evaluation report",
    "## Headline: paper vs ours",
    "## Assumptions and sources",
    "## Card sizing: CU count and clock",
    "## Fig 8: CPU cores needed to feed the GPU",
    "## Fig 17/18: throughput vs p95 latency",
    "## Fig 20: power and energy efficiency",
    "## Fig 21: cost efficiency",
    "## Fig 22: audio ablation",
    "## Beyond the paper: batching policies on mixed slices",
    "## Beyond the paper: capacity planning",
    "## Beyond the paper: our golden model as the CPU baseline",
    "## Beyond the paper: H100 / H200 slices",
    "## Where the reproduction differs, and why",
];

#[test]
fn quick_eval_report_has_its_structure() {
    let dir = std::env::temp_dir().join(format!("preba-eval-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = Config::parse(DEFAULT_CONFIG, "sim/eval/paper.toml").unwrap();
    let s = evaluate(&cfg, &dir, true).unwrap();
    let text = std::fs::read_to_string(&s.report).unwrap();

    let mut at = 0;
    for h in SECTIONS {
        let i = text[at..]
            .find(&format!("{h}\n"))
            .unwrap_or_else(|| panic!("section {h:?} missing or out of order"));
        at += i;
    }
    // The last line, exactly as the contract words it.
    let last = text.lines().last().unwrap();
    assert_eq!(last, s.last_line);
    let want = format!(
        "eval: report at {}; PREBA share of ideal: min ",
        s.report.display()
    );
    assert!(last.starts_with(&want), "{last}");
    assert!(
        last.ends_with(&format!("% over {} models", cfg.model.len())),
        "{last}"
    );
    let x: f64 = last[want.len()..]
        .split('%')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(x.is_finite() && x > 0.0 && x <= 150.0, "{x}");
    assert_eq!(s.models, 6);

    // No NaN / inf anywhere; tables filled.
    for tok in text.split(|c: char| c.is_whitespace() || "|()*".contains(c)) {
        let t = tok.trim_end_matches(['%', ',', '.', 'x']);
        assert!(
            !matches!(t, "NaN" | "inf" | "-inf" | "+inf"),
            "report contains {tok:?}"
        );
    }
    for r in &s.results {
        for (what, v) in [
            ("cpu", r.g1.cpu.thr()),
            ("preba", r.g1.preba.thr()),
            ("ideal", r.g1.ideal.thr()),
            ("h100", r.h100.preba.thr()),
        ] {
            assert!(v.is_finite() && v > 0.0, "{} {what}: {v}", r.name);
        }
    }
    // Every linked SVG exists and is an SVG.
    for line in text.lines().filter(|l| l.starts_with("![")) {
        let f = line.split('(').nth(1).unwrap().trim_end_matches(')');
        let svg = std::fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(svg.contains("<svg"), "{f}");
    }
    assert!(dir.join("derived-profiles.toml").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
