//! Placeholder until the bench lands.

pub fn run(_rest: &[&str]) -> crate::util::Result<()> {
    Err("bench card is not written yet".into())
}
