//! `couplet analyze`: the DiffuCoder paper's decoding analyses on any model — AR-ness
//! against temperature, pass@k against temperature on the same samples, the first step's
//! confidence by position (the entropy sink) with decode-order pictures, and two models
//! side by side. Numbers come from the evaluation and the rollout worker
//! (`couplet_trainer::analysis`); each command writes JSON next to its PNGs.
//! Definitions and protocol: docs/guide/analysis.md.

mod arness;
mod compare;
mod figures;
mod sink;
mod temperature;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use couplet_model::LoadedModel;
use couplet_rollout::{progress_bar, DreamAlg, FirstStepProfile};
use couplet_sandbox::{BackendKind, BackendSpec, Limits, SandboxPool};
use couplet_trainer::analysis::{sample_orders, temperature_sweep, SampleOrder, TemperaturePoint};
use couplet_trainer::{load_benchmark, EvalProblem, EvalSettings};

use super::decode_args::DecodeArgs;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Local AR-ness@k (k = 1..9) and global AR-ness@k (k = 1..4) per sampling temperature.
    Arness(arness::Args),
    /// pass@1..N against temperature (best temperature per k) with the same samples' AR-ness.
    Temperature(temperature::Args),
    /// The first denoising step's confidence and entropy by position, and decode orders.
    EntropySink(sink::Args),
    /// The same figures for two models (e.g. before and after `couplet train`).
    Compare(compare::Args),
}

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Arness(args) => arness::run(args),
        Command::Temperature(args) => temperature::run(args),
        Command::EntropySink(args) => sink::run(args),
        Command::Compare(args) => compare::run(args),
    }
}

/// What every analysis is measured on: the benchmark, the decoder and the sandbox.
#[derive(clap::Args, Clone)]
pub struct Setup {
    /// `humaneval`, or a benchmark file, directory or glob (as `couplet eval --benchmark`).
    #[arg(long, default_value = "humaneval")]
    benchmark: String,
    /// Only the first N problems.
    #[arg(long)]
    limit: Option<usize>,
    /// System prompt of the chat template.
    #[arg(long, default_value = couplet_model::tokenizer::DEFAULT_SYSTEM_PROMPT)]
    system: String,
    #[command(flatten)]
    decode: DecodeArgs,
    /// Sandbox: wasm or process.
    #[arg(long, default_value = "wasm")]
    backend: BackendKind,
    /// Sandbox workers (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Seconds per test.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
}

/// A [`Setup`] made ready: problems loaded, the sandbox open, the paper's decode
/// protocol filled in where the user left it open.
pub struct Bench {
    problems: Vec<EvalProblem>,
    pool: SandboxPool,
    limits: Limits,
    decode: DecodeArgs,
    system: String,
    benchmark: String,
}

impl Setup {
    /// Loads the benchmark and opens the sandbox. Unless given, `--steps` is
    /// `--max-new-tokens` (one token per step) and `--alg` is `maskgit_plus` (low-confidence
    /// remasking), the paper's protocol.
    fn open(&self) -> Result<Bench> {
        let repo = std::env::current_dir()?;
        let mut problems = load_benchmark(&self.benchmark, &repo).map_err(anyhow::Error::msg)?;
        if let Some(n) = self.limit {
            problems.truncate(n);
        }
        if problems.is_empty() {
            usage!("--benchmark {}: no problems to analyse", self.benchmark);
        }
        if !(self.timeout > 0.0 && self.timeout.is_finite()) {
            usage!("--timeout must be a positive number of seconds");
        }
        let mut decode = self.decode.clone();
        decode.steps.get_or_insert(decode.max_new_tokens);
        decode.alg.get_or_insert(DreamAlg::MaskgitPlus);
        decode.decoder()?;
        let backend = BackendSpec::new(self.backend, &repo).open()?;
        let workers = self
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        Ok(Bench {
            problems,
            pool: SandboxPool::new(backend, workers)?,
            limits: Limits {
                per_test: Duration::from_secs_f64(self.timeout),
                ..Limits::default()
            },
            decode,
            system: self.system.clone(),
            benchmark: self.benchmark.clone(),
        })
    }
}

impl Bench {
    /// The model at `path` (folder, checkpoint or run directory) with the decode options'
    /// device, precision and adapter.
    fn load(&self, path: &Path) -> Result<LoadedModel> {
        let d = &self.decode;
        super::load_with_adapter(path, d.adapter.as_deref(), d.device, d.dtype)
    }

    /// The decode options at `temperature`.
    fn at(&self, temperature: f64) -> DecodeArgs {
        DecodeArgs {
            temperature: Some(temperature),
            ..self.decode.clone()
        }
    }

    /// pass@1..samples and AR-ness at each temperature, with a progress bar.
    fn sweep(
        &self,
        model: &LoadedModel,
        temperatures: &[f64],
        samples: usize,
        label: &str,
    ) -> Result<Vec<TemperaturePoint>> {
        let sweep = temperatures
            .iter()
            .map(|&t| {
                let decode = self.at(t);
                Ok((
                    t,
                    EvalSettings {
                        samples,
                        ks: (1..=samples).collect(),
                        rollout: decode.rollout(samples)?,
                        seed: decode.seed,
                        system_prompt: self.system.clone(),
                        limits: self.limits,
                    },
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let total = (self.problems.len() * temperatures.len()) as u64;
        let bar = progress_bar(total, label, "problems", true);
        let points = temperature_sweep(model, &self.problems, &sweep, &self.pool, |done, _| {
            bar.set_position(done as u64)
        })
        .map_err(anyhow::Error::msg)?;
        bar.finish_and_clear();
        Ok(points)
    }

    /// The decode settings, for the screen and the JSON.
    fn describe(&self) -> serde_json::Value {
        let d = &self.decode;
        serde_json::json!({
            "benchmark": self.benchmark,
            "problems": self.problems.len(),
            "decoder": if d.block_length.is_some() { "block" } else { "dream" },
            "max_new_tokens": d.max_new_tokens,
            "steps": d.steps,
            "alg": d.alg.map(DreamAlg::name),
            "block_length": d.block_length,
            "remasking": d.remasking,
            "top_p": d.top_p,
            "top_k": d.top_k,
            "cache": d.cache,
            "threshold": d.threshold,
            "seed": d.seed,
            "device": d.device.to_string(),
            "dtype": d.dtype,
        })
    }

    /// One line saying how decoding was done.
    fn say_protocol(&self) {
        let d = &self.decode;
        let steps = d.steps.unwrap_or(d.max_new_tokens);
        let per_step = d.max_new_tokens as f64 / steps.max(1) as f64;
        let how = match d.block_length {
            Some(b) => format!(
                "block decoder (blocks of {b}, {} remasking)",
                name(&d.remasking)
            ),
            None => format!(
                "Dream decoder, alg {}",
                d.alg.map_or("entropy", DreamAlg::name)
            ),
        };
        eprintln!(
            "analysis on {} ({} problems): {how}, {} tokens in {steps} steps ({per_step:.2} per step), top_p {}, cache {}, seed {}",
            self.benchmark,
            self.problems.len(),
            d.max_new_tokens,
            d.top_p.map_or("off".into(), |p| p.to_string()),
            name(&d.cache),
            d.seed,
        );
    }
}

impl Setup {
    /// The start of every sweeping command: checks `--temperatures` (finite, ≥ 0, at least
    /// one; the sweep replaces `--temperature`) and `--samples`, opens the bench and prints
    /// the decode protocol.
    fn open_sweep(&self, temperatures: &[f64], samples: usize) -> Result<Bench> {
        if temperatures.is_empty() {
            usage!("--temperatures: give at least one");
        }
        if let Some(t) = temperatures.iter().find(|t| !(t.is_finite() && **t >= 0.0)) {
            usage!("--temperatures: {t} is not a temperature (finite, ≥ 0)");
        }
        if self.decode.temperature.is_some() {
            usage!("--temperature: this analysis sweeps --temperatures (comma-separated)");
        }
        if samples == 0 {
            usage!("--samples must be at least 1");
        }
        let bench = self.open()?;
        bench.say_protocol();
        Ok(bench)
    }
}

/// Creates `out` and writes `value` to `out/name`.
fn write_json(out: &Path, name: &str, value: &serde_json::Value) -> Result<PathBuf> {
    let path = out_file(out, name)?;
    std::fs::write(&path, serde_json::to_string_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// A short name for a model path (its folder name, or the run directory's).
fn model_label(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// A config enum's name as it is written in flags and JSON.
fn name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The k of local AR-ness to show: `A..B` or a comma-separated list, each in 1..=9.
#[derive(Debug, Clone)]
pub struct Ks(pub Vec<usize>);

impl std::str::FromStr for Ks {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let ks: Vec<usize> = match s.split_once("..") {
            Some((a, b)) => {
                let (a, b) = (parse_k(a)?, parse_k(b)?);
                if a > b {
                    return Err(format!("{s}: the range is empty"));
                }
                (a..=b).collect()
            }
            None => s.split(',').map(parse_k).collect::<Result<_, _>>()?,
        };
        Ok(Ks(ks))
    }
}

fn parse_k(s: &str) -> Result<usize, String> {
    let k: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number"))?;
    if !(1..=couplet_rollout::order::LOCAL_K).contains(&k) {
        return Err(format!(
            "k = {k}: AR-ness is measured for k = 1..={}",
            couplet_rollout::order::LOCAL_K
        ));
    }
    Ok(k)
}

impl Bench {
    /// The first denoising step's confidence and entropy by position, per problem.
    fn profile(&self, model: &LoadedModel) -> Result<FirstStepProfile> {
        let prompts = self
            .problems
            .iter()
            .map(|p| model.tokenizer.chat_prompt(&self.system, &p.question))
            .collect::<Result<Vec<_>, _>>()?;
        let cfg = self.decode.rollout(1)?;
        Ok(FirstStepProfile::measure(
            &model.model,
            &model.tokenizer,
            &prompts,
            &cfg,
        )?)
    }

    /// The decode orders of one sample for each of the first `n` problems, decoded at
    /// `temperature` (default: `--temperature`, else greedy).
    fn orders(&self, model: &LoadedModel, n: usize) -> Result<Vec<SampleOrder>> {
        let cfg = self.decode.rollout(1)?;
        sample_orders(
            model,
            &self.problems,
            n,
            &cfg,
            &self.system,
            self.decode.seed,
        )
        .map_err(anyhow::Error::msg)
    }
}

/// `temperature  pass@1  local@k…  global@k…` per point, for the screen.
fn arness_table(points: &[TemperaturePoint], ks: &[usize]) -> String {
    let global: Vec<usize> = ks
        .iter()
        .copied()
        .filter(|&k| k <= couplet_rollout::order::GLOBAL_K)
        .collect();
    let mut s = String::from("temperature  pass@1 ");
    ks.iter().for_each(|k| s += &format!(" local@{k}"));
    global.iter().for_each(|k| s += &format!(" global@{k}"));
    s.push('\n');
    for p in points {
        s += &format!(
            "{:>11.2}  {:>5.1}%",
            p.temperature,
            100.0 * p.pass_at(1).unwrap_or(f64::NAN)
        );
        for &k in ks {
            s += &format!(
                " {:>7.3}",
                p.arness.local.get(k - 1).copied().unwrap_or(f64::NAN)
            );
        }
        for &k in &global {
            s += &format!(" {:>8.3}", p.arness.global[k - 1]);
        }
        s.push('\n');
    }
    s
}

/// Draws `panels` to `out/name` and says where.
fn draw(out: &Path, name: &str, panels: &[couplet_report::figure::Panel]) -> Result<PathBuf> {
    let path = out_file(out, name)?;
    couplet_report::figure::panels(panels, &path)?;
    Ok(path)
}

/// Draws decode-order maps to `out/name`.
fn draw_orders(
    out: &Path,
    name: &str,
    maps: &[couplet_report::figure::OrderMap],
) -> Result<PathBuf> {
    let path = out_file(out, name)?;
    couplet_report::figure::order_maps(maps, &path)?;
    Ok(path)
}

/// `out/name`, with `out` created.
fn out_file(out: &Path, name: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    Ok(out.join(name))
}

/// Lists the files an analysis wrote.
fn say_written(paths: &[PathBuf]) {
    for p in paths {
        eprintln!("wrote {}", p.display());
    }
}
