//! Placeholder until the bench lands.

pub fn run(_rest: &[&str]) -> crate::util::Result<()> {
    Err("bench_preprocess is not written yet".into())
}
