//! `cargo xtask`: every project chore in one place, so a fresh clone needs
//! nothing but cargo. `cargo xtask test` is exactly what CI runs.
//!
//! Must not: be built by the tests themselves (it is a tool, not a product).
#![forbid(unsafe_code)]

mod bench_audio;
mod bench_card;
mod bench_preprocess;
mod bench_serve;
mod bench_softcore;
mod eval;
mod flash;
mod flash_pcie;
mod fuzz;
mod logs;
mod qemu;
mod served;
mod setup;
mod soak;
mod util;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  run ARGS...          build firmware, preba and preba-card (release), then run `preba ARGS...`
                       (`run serve ...` also sets up the model fixtures and onnxruntime)
  test                 everything CI runs: fmt, clippy, firmware, host tests, QEMU guest test
  test jtag            only the JTAG step: probe-rs (flash/) against preba-card's debug port
  test logs            only the logs step: logs/ tests and preba card info's decoded log tail
  build-fw [--salt S]  build the firmware ELF (release) and print its path
                       (--salt: same code, another build id, for flashing tests)
  flash --card SPEC [--rollback] [ELF]
                       flash firmware over PCIe into the slot that is not running, activate,
                       reset, check the new build id runs (SPEC: emulated:FLASH_FILE,
                       vfio-user:SOCKET, vfio:BDF); --rollback switches back to the other slot
  logs --card SPEC [--elf ELF] [--follow]
                       the card's defmt log through BAR2, decoded with the ELF of the build the
                       card runs (a mismatched --elf is refused); lost bytes are counted
  venv                 create/update the Python venvs (reference, clients) and the model fixtures
  fixtures             regenerate fixtures and golden tensors with the venv
  bench preprocess     CPU pipeline vs Pillow / OpenCV / libjpeg-turbo+OpenCV, audio vs librosa
  bench audio          the audio half of bench preprocess only (in-process and end to end vs librosa)
  bench softcore       soft-core interpreter speed; last line is `N MIPS`
  bench card           card model (firmware on the soft core) vs the golden model alone
  bench serve          preba serve: emulated card vs CPU preprocessing vs ideal, Poisson sweep; server cost
  bench flash [--runs N]
                       firmware download + verify over JTAG (probe-rs) into preba-card: time, bytes/s
  flash --probe SELECTOR [--reset run|halt|none] [--no-verify] [ELF]
                       download ELF (default: the build-fw output) into the soft core over JTAG
                       with probe-rs, verify, reset and run; preba-card --debug-bmp HOST:PORT is
                       --probe 1d50:6018:HOST:PORT
  eval [--quick] [--validate]
                       the PREBA paper's evaluation in preba sim: eval/report.md + SVGs;
                       --validate also checks preba sim against preba serve + bench here
  fuzz [TARGET...] [--seconds N] [--sanitizer address|none] [--fast]
                       libFuzzer targets of fuzz/ (default: all, 20 s each), corpora
                       seeded from the fixtures; fails on a crash naming the artifact;
                       --fast (long runs): no sanitizer, no comparison tracing
  soak [--minutes N] [--seed S]
                       random mixed traffic into emulated cards killed, stopped, reset and
                       given injected faults at random
                       (release, default 30 min); CI runs 1 min of it in the test suite
  qemu setup           QEMU guest testbed (trixie root, QEMU 10.1+, guest kernel), cached
  qemu test            boot a guest with preba-card over vfio-user-pci; run the guest checks
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["run", rest @ ..] => setup::run_preba(rest),
        ["test", "jtag"] => flash::test(),
        ["test", "logs"] => setup::build_fw().and_then(|fw| logs::test(&fw)),
        ["test", rest @ ..] => setup::test(rest),
        ["build-fw"] => setup::build_fw().map(|p| println!("{}", p.display())),
        ["build-fw", "--salt", salt] => {
            setup::build_fw_variant(salt).map(|p| println!("{}", p.display()))
        }
        ["flash", rest @ ..] if rest.contains(&"--card") => flash_pcie::run_flash(rest),
        ["logs", rest @ ..] => logs::run_logs(rest),
        ["venv"] => setup::venv()
            .and_then(|_| setup::serving_env())
            .map(|env| env.iter().for_each(|(k, v)| println!("{k}={v}"))),
        ["fixtures"] => setup::fixtures(),
        ["bench", "audio", rest @ ..] => bench_audio::run(rest),
        ["bench", "preprocess", rest @ ..] => {
            bench_preprocess::run(rest).and_then(|()| bench_audio::run(rest))
        }
        ["bench", "softcore", rest @ ..] => bench_softcore::run(rest),
        ["bench", "card", rest @ ..] => bench_card::run(rest),
        ["bench", "serve", rest @ ..] => bench_serve::run(rest),
        ["bench", "flash", rest @ ..] => flash::bench(rest),
        ["flash", rest @ ..] => flash::run_cli(rest),
        ["eval", rest @ ..] => eval::run(rest),
        ["fuzz", rest @ ..] => fuzz::run_cli(rest),
        ["soak", rest @ ..] => soak::run_cli(rest),
        ["qemu", rest @ ..] => qemu::main(rest),
        ["help" | "--help" | "-h"] => {
            print!("{USAGE}");
            Ok(())
        }
        _ => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
