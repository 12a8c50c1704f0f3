//! A bare `worker` entry for this crate's tests (the product's is `preba
//! worker`): `preba-profile-worker worker ARGS`.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match args.first().map(String::as_str) {
        Some("worker") => &args[1..],
        _ => &args[..],
    };
    std::process::exit(preba_slice::worker_main(args));
}
