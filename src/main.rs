//! `couplet`: the command-line front of Couplet. Thin glue: each subcommand parses its
//! options, calls the stage crates and prints. Nothing algorithmic lives here.

use clap::{Parser, Subcommand};

mod commands;

#[derive(Parser)]
#[command(
    name = "couplet",
    version,
    about = "Coupled-GRPO post-training for masked-diffusion code LLMs"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Write a randomly initialised Dream model folder (config, safetensors, tokenizer).
    InitModel(commands::init_model::Args),
    /// Sample completions from a model with diffusion decoding.
    Generate(Box<commands::generate::Args>),
    /// Supervised fine-tuning with the masked-diffusion objective.
    Sft(commands::sft::Args),
    /// pass@k of a model on HumanEval or a task file (tests in the sandbox).
    Eval(Box<commands::eval::Args>),
    /// Run or resume an RL training job (coupled-GRPO or any `algorithm.name`).
    Train(commands::train::Args),
    /// Start N ranks of a couplet command on this machine (torchrun's variables).
    Launch(commands::launch::Args),
    /// Run the same config once per algorithm and seed, then write a report.
    Ablate(commands::ablate::AblateArgs),
    /// Make report.md and PNG plots from existing run directories.
    Report(commands::ablate::ReportArgs),
    /// The paper's decoding analyses: AR-ness, temperature and pass@k, the entropy sink.
    #[command(subcommand)]
    Analyze(commands::analyze::Command),
    /// Likelihood estimates of given completions under any algorithm's estimator.
    Logprobs(commands::logprobs::Args),
    /// Fold LoRA adapters into their base model and write a full model folder.
    MergeLora(commands::merge_lora::Args),
    /// Per-rank memory budget of a training config, by component (no weights needed).
    Memory(commands::memory::Args),
    /// Prepare AceCoder data (difficulty split).
    #[command(subcommand)]
    Data(commands::data::Command),
    /// Run untrusted Python tests in the sandbox.
    #[command(subcommand)]
    Sandbox(commands::sandbox::Command),
    /// Say whether CUDA is visible and which devices `--device auto` would use.
    Devices,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        None => commands::demo::run(),
        Some(Command::InitModel(args)) => commands::init_model::run(args),
        Some(Command::Generate(args)) => commands::generate::run(*args),
        Some(Command::Sandbox(command)) => commands::sandbox::run(command),
        Some(Command::Data(command)) => commands::data::run(command),
        Some(Command::Logprobs(args)) => commands::logprobs::run(args),
        Some(Command::Train(args)) => commands::train::run(args),
        Some(Command::Sft(args)) => commands::sft::run(args),
        Some(Command::Eval(args)) => commands::eval::run(*args),
        Some(Command::Launch(args)) => commands::launch::run(args),
        Some(Command::Ablate(args)) => commands::ablate::ablate(args),
        Some(Command::Report(args)) => commands::ablate::report(args),
        Some(Command::Analyze(command)) => commands::analyze::run(command),
        Some(Command::MergeLora(args)) => commands::merge_lora::run(args),
        Some(Command::Memory(args)) => commands::memory::run(args),
        Some(Command::Devices) => commands::devices(),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(if commands::is_usage(&err) { 2 } else { 1 });
    }
}
