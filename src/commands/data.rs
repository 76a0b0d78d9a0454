//! `couplet data prepare`: the recipe's difficulty split and question rewrite.

use std::path::PathBuf;

use anyhow::{Context, Result};
use couplet_reward::{prepare, BadRows, Difficulty, LoadOptions};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Select the hard / medium / easy rows of an AceCode file (with `inferences`), add the
    /// "Please complete the following problem" rewrites, drop `inferences`.
    Prepare(PrepareArgs),
}

#[derive(clap::Args)]
pub struct PrepareArgs {
    #[arg(long)]
    input: PathBuf,
    #[arg(long, default_value = "hard")]
    difficulty: Difficulty,
    #[arg(long)]
    output: PathBuf,
    /// Column holding the question.
    #[arg(long, default_value = "question")]
    prompt_column: String,
    /// Stop at the first bad row instead of skipping it.
    #[arg(long)]
    strict: bool,
}

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Prepare(args) => {
            let options = LoadOptions {
                prompt_column: args.prompt_column,
                bad_rows: if args.strict {
                    BadRows::Fatal
                } else {
                    BadRows::Skip
                },
                require_inferences: true,
            };
            let report = prepare(&args.input, &args.output, args.difficulty, &options)
                .with_context(|| format!("preparing {}", args.input.display()))?;
            eprintln!("rows read:             {}", report.rows_read);
            eprintln!("rows valid:            {}", report.rows_valid);
            eprintln!(
                "thresholds:            P20(mean) {:.4}  P25(mean) {:.4}  P75(mean) {:.4}  P40(std) {:.4}",
                report.p20_mean, report.p25_mean, report.p75_mean, report.p40_std
            );
            eprintln!("selected ({:?}):      {}", args.difficulty, report.selected);
            eprintln!("rewrites added:        {}", report.rewritten_added);
            eprintln!(
                "rows written:          {} → {}",
                report.written,
                args.output.display()
            );
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
    }
}
