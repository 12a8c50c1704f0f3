//! `cargo run -p preba-sim --release --example sim -- --scenario FILE`: the
//! same as `preba sim` without building the server.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(preba_sim::main(&args));
}
