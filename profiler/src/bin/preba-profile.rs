//! A stand-in for the `preba` binary in this crate's tests and for trying
//! the profiler alone: `preba-profile profile ARGS` runs `preba profile`,
//! `preba-profile worker ARGS` is the worker it spawns (itself).
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("worker") => preba_slice::worker_main(&args[1..]),
        Some("profile") => preba_profiler::main(&args[1..]),
        _ => {
            eprintln!("usage: preba-profile profile ARGS | worker ARGS");
            2
        }
    };
    std::process::exit(code);
}
