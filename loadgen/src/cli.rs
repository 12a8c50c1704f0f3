//! The `preba bench` command line.

use std::path::PathBuf;
use std::time::Duration;

use crate::{LoadgenError, RunConfig};

/// Help text of `preba bench`.
pub const USAGE: &str = "\
preba bench URL --model M INPUT... [options]   open-loop KServe v2 load
preba bench plot OUT.svg A.csv [B.csv ...]      p95 latency against throughput

  --rate R           offered requests per second (default 10)
  --rates A:B:STEP   sweep offered rates from A to B
  --poisson          exponential inter-arrival gaps (default: constant)
  --duration S       seconds of arrivals per rate (default 10)
  --concurrency C    most requests outstanding; arrivals over it are dropped (default 256)
  --batch B          elements per request (default 1)
  --ideal            INPUTs are preprocessed .npy float32 tensors, sent as the FP32 input
  --timeout S        a request unanswered after S seconds is an error (default 30)
  --seed N           seed of the Poisson schedule
  --csv OUT          one row per rate
  --plot OUT.svg     throughput against p95 latency
  --label NAME       run label in CSV and plot (default: the model)
  --fail-on-error    exit 1 when any request failed
INPUTs are JPEG files for IMAGE models, WAV files for AUDIO models, used round-robin.
";

/// Where `preba bench` writes, beyond the table on stdout.
#[derive(Clone, Debug, Default)]
pub struct OutputOptions {
    pub csv: Option<PathBuf>,
    pub plot: Option<PathBuf>,
    pub label: Option<String>,
    pub fail_on_error: bool,
}

/// A parsed `preba bench` command line.
#[derive(Clone, Debug)]
pub enum Command {
    Run(RunConfig, OutputOptions),
    Plot { out: PathBuf, csvs: Vec<PathBuf> },
    Help,
}

fn usage(m: impl Into<String>) -> LoadgenError {
    LoadgenError::Usage(m.into())
}

fn number(flag: &str, v: &str) -> Result<f64, LoadgenError> {
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(usage(format!(
            "{flag} wants a non-negative number, got {v:?}"
        ))),
    }
}

fn positive(flag: &str, v: &str) -> Result<f64, LoadgenError> {
    let x = number(flag, v)?;
    if x > 0.0 {
        Ok(x)
    } else {
        Err(usage(format!("{flag} must be above 0, got {v:?}")))
    }
}

fn count(flag: &str, v: &str) -> Result<usize, LoadgenError> {
    match v.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(usage(format!("{flag} wants a positive integer, got {v:?}"))),
    }
}

/// `A:B:STEP`, inclusive of B (within rounding).
fn rates(v: &str) -> Result<Vec<f64>, LoadgenError> {
    let parts: Vec<&str> = v.split(':').collect();
    let [a, b, step] = parts[..] else {
        return Err(usage(format!("--rates wants A:B:STEP, got {v:?}")));
    };
    let (a, b, step) = (
        positive("--rates", a)?,
        positive("--rates", b)?,
        positive("--rates", step)?,
    );
    if b < a {
        return Err(usage(format!("--rates {v}: B is below A")));
    }
    let n = ((b - a) / step + 1e-9).floor() as usize;
    if n >= 1000 {
        return Err(usage(format!("--rates {v}: more than 1000 rates")));
    }
    Ok((0..=n).map(|i| a + step * i as f64).collect())
}

/// Checks the URL's shape (`http://host:port[/prefix]` or `host:port`).
pub(crate) fn check_url(url: &str) -> Result<(), LoadgenError> {
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => {
            return Err(usage(format!(
                "URL {url:?}: only http:// is supported, not {scheme}://"
            )));
        }
        None => url,
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() || authority.contains(char::is_whitespace) {
        return Err(usage(format!("URL {url:?} has no host")));
    }
    Ok(())
}

/// Parses the arguments after `bench`.
pub fn parse_args(args: &[String]) -> Result<Command, LoadgenError> {
    if args.is_empty() {
        return Err(usage(
            "preba bench URL --model M INPUT... (see preba bench --help)",
        ));
    }
    if args.iter().any(|a| a == "--help" || a == "-h") {
        return Ok(Command::Help);
    }
    if args[0] == "plot" {
        let Some((out, csvs)) = args[1..].split_first() else {
            return Err(usage("preba bench plot OUT.svg A.csv [B.csv ...]"));
        };
        if csvs.is_empty() {
            return Err(usage("preba bench plot OUT.svg needs at least one CSV"));
        }
        if let Some(f) = csvs.iter().find(|c| c.starts_with("--")) {
            return Err(usage(format!("preba bench plot takes no options, got {f}")));
        }
        return Ok(Command::Plot {
            out: out.into(),
            csvs: csvs.iter().map(PathBuf::from).collect(),
        });
    }
    let mut url = None;
    let mut model = None;
    let mut inputs = Vec::new();
    let mut cfg = RunConfig::new("", "", Vec::new());
    let mut opts = OutputOptions::default();
    let mut rate_set = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let flag = a.as_str();
        let mut value = || {
            it.next()
                .ok_or_else(|| usage(format!("{flag} needs a value")))
        };
        match flag {
            "--model" => model = Some(value()?.clone()),
            "--rate" | "--rates" if rate_set => {
                return Err(usage("give one of --rate and --rates, once"));
            }
            "--rate" => {
                cfg.rates = vec![positive(flag, value()?)?];
                rate_set = true;
            }
            "--rates" => {
                cfg.rates = rates(value()?)?;
                rate_set = true;
            }
            "--poisson" => cfg.poisson = true,
            "--duration" => cfg.duration = Duration::from_secs_f64(positive(flag, value()?)?),
            "--timeout" => cfg.timeout = Duration::from_secs_f64(positive(flag, value()?)?),
            "--concurrency" => cfg.concurrency = count(flag, value()?)?,
            "--batch" => cfg.batch = count(flag, value()?)?,
            "--seed" => {
                let v = value()?;
                cfg.seed = v
                    .parse()
                    .map_err(|_| usage(format!("--seed wants an integer, got {v:?}")))?;
            }
            "--ideal" => cfg.ideal = true,
            "--csv" => opts.csv = Some(value()?.into()),
            "--plot" => opts.plot = Some(value()?.into()),
            "--label" => opts.label = Some(value()?.clone()),
            "--fail-on-error" => opts.fail_on_error = true,
            _ if flag.starts_with("--") => return Err(usage(format!("unknown option {flag}"))),
            _ if url.is_none() => url = Some(a.clone()),
            _ => inputs.push(PathBuf::from(a)),
        }
    }
    let url = url.ok_or_else(|| usage("no server URL"))?;
    check_url(&url)?;
    cfg.url = url;
    cfg.model = model.ok_or_else(|| usage("--model M is required"))?;
    if inputs.is_empty() {
        return Err(usage("no INPUT files"));
    }
    cfg.inputs = inputs;
    Ok(Command::Run(cfg, opts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Command, LoadgenError> {
        parse_args(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn full_command_line() {
        let Command::Run(cfg, opts) = parse(
            "http://h:8000 --model sq a.jpg --rates 10:30:10 --poisson --duration 2.5 \
             --concurrency 8 --batch 4 --csv o.csv --plot o.svg --label x --fail-on-error b.jpg",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(cfg.url, "http://h:8000");
        assert_eq!(cfg.model, "sq");
        assert_eq!(
            cfg.inputs,
            vec![PathBuf::from("a.jpg"), PathBuf::from("b.jpg")]
        );
        assert_eq!(cfg.rates, vec![10.0, 20.0, 30.0]);
        assert!(cfg.poisson && !cfg.ideal);
        assert_eq!(cfg.duration, Duration::from_millis(2500));
        assert_eq!((cfg.concurrency, cfg.batch), (8, 4));
        assert_eq!(opts.csv, Some("o.csv".into()));
        assert_eq!(opts.label.as_deref(), Some("x"));
        assert!(opts.fail_on_error);
    }

    #[test]
    fn usage_errors() {
        for bad in [
            "http://h --model m",
            "http://h a.jpg",
            "http://h --model m a.jpg --rate -3",
            "http://h --model m a.jpg --rates 10:5:1",
            "http://h --model m a.jpg --rates 1:2",
            "http://h --model m a.jpg --bogus",
            "http://h --model m a.jpg --batch 0",
            "https://h --model m a.jpg",
            "http:// --model m a.jpg",
            "http://h --model m a.jpg --rate 1 --rates 1:2:1",
            "plot out.svg",
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}: {e}");
        }
    }

    #[test]
    fn plot_subcommand() {
        let Command::Plot { out, csvs } = parse("plot o.svg a.csv b.csv").unwrap() else {
            panic!()
        };
        assert_eq!(out, PathBuf::from("o.svg"));
        assert_eq!(csvs.len(), 2);
    }
}
