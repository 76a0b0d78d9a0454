//! The `couplet` binary end to end: init-model, generate, and its option errors.

use couplet_testkit as common;

use std::process::Command;

use common::assert_ok;

fn couplet(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_couplet"))
        .args(args)
        .current_dir(common::repo())
        .output()
        .unwrap()
}

/// `couplet generate` loads the model folder `model` and decodes a short prompt.
fn assert_generates(model: &std::path::Path) {
    let out = couplet(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "x",
        "--steps",
        "2",
        "--max-new-tokens",
        "2",
    ]);
    assert_ok(&out);
}

/// `couplet` alone: the demo model (built by setup) answers three held-out tasks with
/// non-empty code, each answer's tests run in the sandbox with a verdict per test, and the
/// screen ends with the next commands. (The old default job printed empty code blocks.)
#[test]
fn the_default_job_decodes_code_and_shows_sandbox_verdicts() {
    let out = couplet(&[]);
    assert_ok(&out);
    let screen = String::from_utf8_lossy(&out.stdout);
    let tasks = screen.matches("── task ").count();
    assert_eq!(tasks, 3, "three tasks shown:\n{screen}");
    assert!(
        !screen.contains("no code in it"),
        "every answer has code:\n{screen}"
    );
    // Every task's code block has at least one non-blank line.
    for block in screen.split("decoded code (").skip(1) {
        let body: Vec<&str> = block
            .lines()
            .skip(1)
            .take_while(|l| l.starts_with("    "))
            .collect();
        assert!(
            body.iter().any(|l| !l.trim().is_empty()),
            "an empty code block:\n{screen}"
        );
    }
    assert_eq!(screen.matches("decoded code (").count(), 3, "{screen}");
    assert_eq!(
        screen.matches("tests in the sandbox (wasm)").count(),
        3,
        "{screen}"
    );
    let verdicts = screen
        .lines()
        .filter(|l| l.starts_with("  pass ") || l.starts_with("  FAIL "))
        .count();
    assert!(verdicts >= 3 * 5, "a verdict per test:\n{screen}");
    assert_eq!(screen.matches("\nreward ").count(), 3, "{screen}");
    assert!(screen.contains("Next:\n  couplet train"), "{screen}");
}

/// A run summary's JSON: the named phases (each ≥ 0) and `other` add up to the wall time,
/// and the peak memory is known.
fn assert_run_summary(path: &std::path::Path, phases: &[&str]) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let summary: serde_json::Value = serde_json::from_str(&text).unwrap();
    let listed: Vec<(&str, f64)> = summary["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["seconds"].as_f64().unwrap()))
        .collect();
    for name in phases.iter().chain(&["other"]) {
        assert!(
            listed.iter().any(|(n, _)| n == name),
            "no phase {name} in {text}"
        );
    }
    assert!(listed.iter().all(|(_, s)| *s >= 0.0), "{text}");
    let total: f64 = listed.iter().map(|(_, s)| s).sum();
    let wall = summary["wall_seconds"].as_f64().unwrap();
    assert!(
        (total - wall).abs() <= 1e-6 * wall.max(1.0),
        "phases {total} vs wall {wall}"
    );
    assert!(
        summary["peak_resident_mib"].as_f64().unwrap() > 0.0,
        "{text}"
    );
}

#[test]
fn init_model_options_reach_the_folder_and_sft_checks_pad_weight() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let tok = common::cpu_tokenizer();
    let out = couplet(&[
        "init-model",
        "--tokenizer",
        tok.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
        "--no-shift",
        "--init-std",
        "0.1",
        "--embedding-std",
        "1.0",
    ]);
    assert_ok(&out);
    let model = couplet_model::load_model(&dir, couplet_model::LoadOptions::default()).unwrap();
    assert!(
        !model.shifted(),
        "--no-shift must write shift_logits = false"
    );
    assert_eq!(model.config().initializer_range, 0.1);
    let std_of = |name: &str| {
        let vars = model.var_store().variables();
        vars[name].std(true).double_value(&[])
    };
    // ~10⁵ draws: the sample std is within a few percent of the requested one.
    let emb = std_of("model.embed_tokens.weight");
    let q = std_of("model.layers.0.self_attn.q_proj.weight");
    assert!((emb - 1.0).abs() < 0.05, "embedding std {emb}");
    assert!((q - 0.1).abs() < 0.01, "q_proj std {q}");
    assert_generates(&dir);
    for bad in ["0", "1.5"] {
        let out = couplet(&[
            "sft",
            "--model",
            dir.to_str().unwrap(),
            "--data",
            "data/tasks/val.jsonl",
            "--out",
            tmp.path().join("sft").to_str().unwrap(),
            "--pad-weight",
            bad,
        ]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("--pad-weight"));
    }
}

#[test]
fn init_model_then_generate_json() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let tok = common::cpu_tokenizer();
    let out = couplet(&[
        "init-model",
        "--preset",
        "tiny",
        "--tokenizer",
        tok.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_ok(&out);
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "generation_config.json",
    ] {
        assert!(dir.join(f).exists(), "{f}");
    }
    let out = couplet(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        "def add(a, b):",
        "--prompt",
        "x",
        "--steps",
        "8",
        "--max-new-tokens",
        "8",
        "--json",
    ]);
    assert_ok(&out);
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for l in &lines {
        let ids = l["completion_ids"].as_array().unwrap();
        assert!(!ids.is_empty() && ids.len() <= 8);
        assert_eq!(
            l["decode_order"].as_array().unwrap().len(),
            8,
            "all K positions revealed"
        );
        assert_eq!(l["arness"]["local"].as_array().unwrap().len(), 9);
        assert_eq!(l["arness"]["global"].as_array().unwrap().len(), 4);
    }
}

#[test]
fn bad_options_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), false, 0);
    let d = dir.to_str().unwrap();
    for (args, needle) in [
        (vec!["--temperature", "-1"], "temperature"),
        (vec!["--top-p", "1.5"], "top_p"),
        (vec!["--top-p", "0"], "top_p"),
        (vec!["--alg", "magic"], "unknown algorithm"),
        (vec!["--steps", "0"], "steps"),
        (vec!["--device", "tpu"], "--device"),
        (
            vec!["--max-new-tokens", "64", "--block-length", "24"],
            "block_length",
        ),
        (
            vec![
                "--max-new-tokens",
                "64",
                "--block-length",
                "16",
                "--steps",
                "6",
            ],
            "steps",
        ),
        (
            vec!["--block-length", "16", "--remasking", "psychic"],
            "remasking",
        ),
    ] {
        let mut full = vec!["generate", "--model", d, "--prompt", "x"];
        full.extend(args.iter().copied());
        let out = couplet(&full);
        // A usage error: exit code 2, like clap's own.
        assert_eq!(out.status.code(), Some(2), "{args:?} should fail as usage");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let out = couplet(&["generate", "--model", "/nonexistent/model", "--prompt", "x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--model /nonexistent/model: no such"), "{err}");
    // A folder without config.json: the file is named, the OS error said once.
    let out = couplet(&[
        "generate",
        "--model",
        tmp.path().to_str().unwrap(),
        "--prompt",
        "x",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("config.json"), "{err}");
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
}

/// A GPU that is not there is a usage error (exit 2) naming the flag or key and what
/// exists, at every entry point that takes a device — never a libtorch panic.
#[test]
fn a_missing_gpu_is_a_clear_error_at_every_entry_point() {
    if couplet_model::cuda_devices() > 0 {
        eprintln!("CUDA is visible: this test checks a machine without it");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), false, 0);
    let d = dir.to_str().unwrap();
    let input = tmp.path().join("rows.jsonl");
    std::fs::write(&input, "{\"prompt\": \"x\", \"completion\": \"y\"}\n").unwrap();
    let (run, sft) = (tmp.path().join("run"), tmp.path().join("sft"));
    let (run, sft, input) = (run.display(), sft.display(), input.display());
    // Train-side entry points share the model and run directory.
    let train = format!("train --set model.path=\"{d}\" --set checkpointing.run_dir=\"{run}\"");
    let cases = [
        (
            format!("generate --model {d} --prompt x --device cuda"),
            "--device cuda",
        ),
        (
            format!("eval --model {d} --benchmark data/tasks/val.jsonl --device cuda:1"),
            "--device cuda:1",
        ),
        (
            format!("sft --model {d} --data data/tasks/val.jsonl --out {sft} --device cuda"),
            "--device cuda",
        ),
        (
            format!("logprobs --model {d} --input {input} --device cuda"),
            "--device cuda",
        ),
        (
            format!("{train} --set model.device=\"cuda\""),
            "`model.device`",
        ),
        (
            format!("{train} --set algorithm.beta=0.1 --set reference.device=\"cuda\""),
            "`reference.device`",
        ),
        (
            format!(
                "launch --nproc 2 -- {train} --set distributed.backend=\"gloo\" \
                 --set schedule.micro_batch_size=8 --set model.device=\"cuda\""
            ),
            "`model.device`",
        ),
        (
            format!(
                "ablate --algorithms coupled --seeds 1 --out {run} \
                 --set model.path=\"{d}\" --set model.device=\"cuda\""
            ),
            "`model.device`",
        ),
    ];
    for (command, needle) in cases {
        // Paths of the temporary folder hold no spaces: the words are the arguments.
        let args: Vec<&str> = command.split_whitespace().collect();
        let out = couplet(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(
            err.contains("CUDA is not available here"),
            "{args:?}: {err}"
        );
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn logprobs_estimates_and_pinned_masks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), false, 0);
    let input = tmp.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"prompt_ids\": [5, 6, 7], \"completion_ids\": [8, 9, 10, 11]}\n{\"prompt\": \"def f(x):\", \"completion\": \" return x\", \"sample\": 7}\n",
    )
    .unwrap();
    let run = |extra: &[&str]| -> Vec<serde_json::Value> {
        let mut args = vec![
            "logprobs",
            "--model",
            dir.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = couplet(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let coupled = run(&["--estimator", "coupled", "--seed", "3"]);
    assert_eq!(coupled.len(), 2);
    assert_eq!(coupled[0]["estimates"].as_array().unwrap().len(), 4);
    assert_eq!(coupled[1]["sample"], 7);
    assert!(coupled[0]["ratios"][0]
        .as_f64()
        .is_some_and(|t| (0.2..0.8).contains(&t)));
    // Same seed, same estimates; another seed, other masks.
    assert_eq!(coupled, run(&["--estimator", "coupled", "--seed", "3"]));
    assert_ne!(
        coupled[0]["estimates"],
        run(&["--estimator", "coupled", "--seed", "4"])[0]["estimates"]
    );
    // Masks pinned to the full-mask pattern reproduce the full_mask estimator (row 1).
    let full = run(&["--estimator", "full_mask"]);
    let masks = tmp.path().join("masks.jsonl");
    let row1 =
        serde_json::json!({"masked": [[0, 0, 0, 1, 1, 1, 1]], "weights": [[1.0, 1.0, 1.0, 1.0]]});
    let k2 = full[1]["completion_ids"].as_array().unwrap().len();
    let row2_len = coupled[1]["completion_ids"].as_array().unwrap().len();
    assert_eq!(k2, row2_len);
    // Row 2: half weights on the full-mask version → half the full-mask estimate.
    let out = couplet(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        "def f(x):",
        "--steps",
        "1",
        "--max-new-tokens",
        "1",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let p2 = v["prompt_ids"].as_array().unwrap().len();
    let masked2: Vec<i64> = (0..p2 + k2).map(|i| i64::from(i >= p2)).collect();
    let row2 = serde_json::json!({"masked": [masked2], "weights": [vec![0.5; k2]]});
    std::fs::write(&masks, format!("{row1}\n{row2}\n")).unwrap();
    let pinned = run(&["--masks", masks.to_str().unwrap()]);
    assert_eq!(pinned[0]["estimates"], full[0]["estimates"]);
    for (a, b) in pinned[1]["estimates"]
        .as_array()
        .unwrap()
        .iter()
        .zip(full[1]["estimates"].as_array().unwrap())
    {
        assert!((a.as_f64().unwrap() - 0.5 * b.as_f64().unwrap()).abs() < 1e-5);
    }
    // Wrong shapes are clear errors naming the file and line.
    std::fs::write(
        &masks,
        "{\"masked\": [[1]], \"weights\": [[1.0]]}\n{\"masked\": [[1]], \"weights\": [[1.0]]}\n",
    )
    .unwrap();
    let out = couplet(&[
        "logprobs",
        "--model",
        dir.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--masks",
        masks.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("masks.jsonl:1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A LLaDA-layout model goes through every stage unchanged: both decoders, a d1-style
/// training step with the block decoder, and a checkpoint written in LLaDA's layout.
#[test]
fn a_llada_model_generates_trains_and_checkpoints_in_its_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("llada");
    let tok = common::cpu_tokenizer();
    let out = couplet(&[
        "init-model",
        "--arch",
        "llada",
        "--tokenizer",
        tok.to_str().unwrap(),
        "--out",
        model.to_str().unwrap(),
    ]);
    assert_ok(&out);
    assert_generates(&model);
    let m = model.to_str().unwrap();
    let out = couplet(&[
        "generate",
        "--model",
        m,
        "--prompt",
        "x",
        "--steps",
        "4",
        "--max-new-tokens",
        "4",
        "--block-length",
        "2",
        "--cache",
        "prefix",
    ]);
    assert_ok(&out);
    let run = tmp.path().join("run");
    let out = train_command(&model, &run, 1, false)
        .args([
            "--set",
            "rollout.decoder=\"block\"",
            "--set",
            "rollout.block_length=8",
            "--set",
            "algorithm.name=\"d1\"",
        ])
        .output()
        .unwrap();
    assert_ok(&out);
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("checkpoint-1/policy/config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["model_type"], "llada");
    assert!(config["d_model"].is_i64());
    let policy = couplet_model::load_model(
        &run.join("checkpoint-1/policy"),
        couplet_model::LoadOptions::default(),
    )
    .unwrap();
    assert!(policy.config().is_llada() && !policy.shifted());
}

#[test]
fn train_then_resume_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::tiny_model(tmp.path(), false, 0);
    let run = tmp.path().join("run");
    let out = train_command(&model, &run, 1, false).output().unwrap();
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("step     1"));
    assert!(run.join("checkpoint-1/policy/model.safetensors").exists());
    // The run ends with where its time went, on screen and in summary.json.
    assert!(String::from_utf8_lossy(&out.stderr).contains("── train summary: 1 steps in"));
    assert_run_summary(
        &run.join("summary.json"),
        &[
            "rollout",
            "old/reference scoring",
            "update",
            "checkpointing",
        ],
    );
    assert!(
        run.join("config.toml").exists()
            && run.join("metrics.jsonl").exists()
            && run.join("completions.jsonl").exists()
    );
    let scalars = common::read_tensorboard_scalars(&run.join("tensorboard"));
    for tag in [
        "reward/total",
        "train/loss",
        "train/kl",
        "train/grad_norm",
        "train/lr",
        "arness/local@1",
        "arness/global@4",
        "sandbox/tests_per_second",
        "time/rollout",
    ] {
        assert!(
            scalars.iter().any(|(t, step, _)| t == tag && *step == 1),
            "no {tag} at step 1 in {scalars:?}"
        );
    }
    let out = train_command(&model, &run, 2, false)
        .args(["--resume", run.to_str().unwrap()])
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("at step 1"));
    // The checkpoint's policy is a model folder `generate` loads directly; the checkpoint
    // and the run directory (its latest checkpoint) name the same model.
    assert_generates(&run.join("checkpoint-2/policy"));
    assert_generates(&run.join("checkpoint-1"));
    assert_generates(&run);
    // A run directory whose only checkpoint is half-written: the warning names it.
    let half = tmp.path().join("half");
    std::fs::create_dir_all(half.join("checkpoint-9/policy")).unwrap();
    let out = couplet(&[
        "generate",
        "--model",
        half.to_str().unwrap(),
        "--prompt",
        "x",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("checkpoint-9"),
        "{err}"
    );
    // Config errors name the key; unknown keys are rejected.
    let out = couplet(&[
        "train",
        "--config",
        "configs/tiny_cpu.toml",
        "--set",
        "optimizer.lr=-1",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("optimizer.lr"));
    let out = couplet(&[
        "train",
        "--config",
        "configs/tiny_cpu.toml",
        "--set",
        "rollout.temprature=1",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("temprature"));
    // A stratification column the rows lack: the error names the file, a row and the column.
    let out = train_command(&model, &run, 3, false)
        .args(["--set", "data.stratify_by=\"difficulty\""])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("data/tasks/train.jsonl")
            && err.contains("row `train-")
            && err.contains("`difficulty`"),
        "{err}"
    );
    let out = train_command(&model, &run, 3, false)
        .args(["--set", "data.stratify_by=\" \""])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("data.stratify_by"));
}

/// `couplet train` on a tiny model (tiny_cpu.toml with short rollouts), optionally resuming.
fn train_command(
    model: &std::path::Path,
    run: &std::path::Path,
    steps: u32,
    resume: bool,
) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_couplet"));
    cmd.args([
        "train",
        "--config",
        "configs/tiny_cpu.toml",
        "--set",
        &format!("model.path=\"{}\"", model.display()),
        "--set",
        &format!("checkpointing.run_dir=\"{}\"", run.display()),
        "--set",
        &format!("schedule.max_steps={steps}"),
        "--set",
        "checkpointing.save_every=1",
        "--set",
        "rollout.max_new_tokens=16",
        "--set",
        "rollout.steps=8",
    ])
    .current_dir(common::repo());
    if resume {
        cmd.args(["--resume", "latest"]);
    }
    cmd
}

fn spawn_train(model: &std::path::Path, run: &std::path::Path, steps: u32) -> std::process::Child {
    train_command(model, run, steps, false)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for_checkpoint(run: &std::path::Path, secs: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if couplet_trainer::latest_checkpoint(run).is_some() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("no checkpoint appeared in {}", run.display());
}

#[test]
fn ctrl_c_saves_and_exits_130_and_kill_9_keeps_a_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::tiny_model(tmp.path(), false, 0);
    // SIGINT: finish the step, save, exit 130.
    let run = tmp.path().join("int");
    let child = spawn_train(&model, &run, 200);
    wait_for_checkpoint(&run, 120);
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted at step"));
    // kill -9 while it saves every step: whatever was half-written, the newest complete
    // checkpoint loads and training resumes from it.
    let run = tmp.path().join("kill");
    let mut child = spawn_train(&model, &run, 200);
    wait_for_checkpoint(&run, 120);
    std::thread::sleep(std::time::Duration::from_millis(700));
    child.kill().unwrap();
    let _ = child.wait();
    let latest = couplet_trainer::latest_checkpoint(&run).unwrap();
    let step: u32 = latest
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("checkpoint-")
        .parse()
        .unwrap();
    let out = spawn_train_resume(&model, &run, step + 1);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("at step {step}")));
}

fn spawn_train_resume(
    model: &std::path::Path,
    run: &std::path::Path,
    steps: u32,
) -> std::process::Output {
    train_command(model, run, steps, true).output().unwrap()
}

#[test]
fn sft_writes_a_model_that_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::tiny_model(tmp.path(), false, 0);
    let out = tmp.path().join("sft");
    let o = couplet(&[
        "sft",
        "--model",
        model.to_str().unwrap(),
        "--data",
        "data/tasks/val.jsonl",
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "4",
        "--batch-size",
        "2",
        "--log-every",
        "2",
    ]);
    assert_ok(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("sft step     4/4"));
    assert!(String::from_utf8_lossy(&o.stderr).contains("── sft summary: 4 steps in"));
    assert_run_summary(
        &out.join("summary.json"),
        &["loading (model, data)", "training", "checkpointing"],
    );
    assert_generates(&out);
    // Rows without the solution column are named.
    let o = couplet(&[
        "sft",
        "--model",
        model.to_str().unwrap(),
        "--data",
        "data/acecoder/sample.jsonl",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("field `solution`"));
}

#[test]
fn a_failed_save_keeps_the_previous_checkpoint() {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    let model = common::tiny_model(tmp.path(), false, 0);
    let run = tmp.path().join("run");
    let out = train_command(&model, &run, 1, false).output().unwrap();
    assert_ok(&out);
    // Resume with every file capped at 64 KiB: the logs still fit, the next checkpoint's
    // weights do not, so its save fails part-way, as on a full disk.
    let mut cmd = train_command(&model, &run, 3, true);
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 64 << 10,
                rlim_max: 64 << 10,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("saving the checkpoint of step 2 failed")
            && stderr.contains("checkpoint-1 is intact"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(run.join("latest")).unwrap().trim(),
        "checkpoint-1"
    );
    let names: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("checkpoint-"))
        .collect();
    assert_eq!(names, vec!["checkpoint-1".to_string()], "{names:?}");
    // With space back, the run resumes from the kept checkpoint.
    let out = train_command(&model, &run, 2, true).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("at step 1"),
        "{stderr}"
    );
}

#[test]
fn eval_plus_reports_base_and_plus_side_by_side() {
    let tmp = tempfile::tempdir().unwrap();
    let mbpp = tmp.path().join("mbpp.jsonl");
    let row = serde_json::json!({
        "task_id": 7, "text": "Write a function to double a number.",
        "code": "def double(x):\n    return 2 * x",
        "test_list": ["assert double(2) == 4", "assert double(0) == 0"],
        "test_setup_code": "", "challenge_test_list": ["assert double(-3) == -6"],
    });
    std::fs::write(&mbpp, row.to_string()).unwrap();
    let out_dir = tmp.path().join("out");
    let args = |plus: bool| {
        let mut a = vec![
            "eval",
            "--canonical",
            "--benchmark",
            mbpp.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ];
        if plus {
            a.push("--plus");
        }
        a.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let run = |plus: bool| {
        let a = args(plus);
        couplet(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let out = run(true);
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("base+plus") && stdout.contains("100.00%   100.00%"),
        "{stdout}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["pass_at_k_plus"]["pass@1"], 1.0);
    assert!(
        summary["run"]["tests_run"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("── eval summary:"));
    let samples = std::fs::read_to_string(out_dir.join("samples.jsonl")).unwrap();
    assert!(samples.contains("\"task_id\":\"Mbpp/7\""), "{samples}");
    // Without --plus: one column, no plus score.
    let out = run(false);
    assert_ok(&out);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("base+plus"));
    // --plus on a benchmark without plus tests is refused by name.
    let out = couplet(&[
        "eval",
        "--canonical",
        "--benchmark",
        "data/tasks/val.jsonl",
        "--plus",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no plus tests"));
}

#[test]
fn eval_canonical_solutions_pass_and_model_samples_are_judged() {
    let tmp = tempfile::tempdir().unwrap();
    // Wiring: HumanEval's canonical solutions fed as completions pass every problem. A
    // generous per-test timeout: this checks wiring, and the other tests of this binary load
    // the 2 cores at the same time (one canonical solution timed out at the default 5 s
    // while an ablation also ran).
    let out_dir = tmp.path().join("he");
    let out = couplet(&[
        "eval",
        "--canonical",
        "--benchmark",
        "humaneval",
        "--timeout",
        "30",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_ok(&out);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out_dir.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let failed: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| !(l["correct"] == 1 && l["passed"][0] == true))
        .map(|l| &l["id"])
        .collect();
    assert!(
        stdout.contains("problems 164") && stdout.contains("pass@1   100.00%"),
        "{stdout}\nfailed: {failed:?}"
    );
    assert_eq!(lines.len(), 164);
    assert!(failed.is_empty(), "{failed:?}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["pass_at_k"]["pass@1"], 1.0);
    // EvalPlus's samples.jsonl beside the results, for rescoring with the official tool.
    let samples = std::fs::read_to_string(out_dir.join("samples.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(samples.lines().next().unwrap()).unwrap();
    assert_eq!(samples.lines().count(), 164);
    assert_eq!(first["task_id"], "HumanEval/0");
    assert!(first["solution"]
        .as_str()
        .unwrap()
        .contains("def has_close_elements"));
    // A random tiny model's samples on the bundled tasks: judged, per-problem lines, AR-ness.
    let model = common::tiny_model(tmp.path(), false, 0);
    let out_dir = tmp.path().join("tiny");
    let out = couplet(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--benchmark",
        "data/tasks/val.jsonl",
        "--limit",
        "5",
        "--samples",
        "4",
        "--k",
        "1,4",
        "--temperature",
        "1.0",
        "--steps",
        "4",
        "--max-new-tokens",
        "8",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_ok(&out);
    assert!(
        stdout.contains("problems 5  samples/problem 4")
            && stdout.contains("pass@1 ")
            && stdout.contains("pass@4 ")
            && stdout.contains("AR-ness local@1..9"),
        "{stdout}"
    );
    let results = std::fs::read_to_string(out_dir.join("results.jsonl")).unwrap();
    assert_eq!(results.lines().count(), 5);
    // k larger than n is refused by name.
    let out = couplet(&[
        "eval",
        "--canonical",
        "--benchmark",
        "data/tasks/val.jsonl",
        "--samples",
        "2",
        "--k",
        "5",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--k 5"));
}

#[test]
fn ablate_runs_each_estimator_and_report_remakes_the_files() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::tiny_model(tmp.path(), false, 0);
    let out_dir = tmp.path().join("ablate");
    let out = couplet(&[
        "ablate",
        "--config",
        "configs/tiny_cpu.toml",
        "--estimators",
        "coupled,d1,full_mask,decoupled",
        "--seeds",
        "1",
        "--set",
        &format!("model.path=\"{}\"", model.display()),
        "--set",
        "schedule.max_steps=2",
        "--set",
        "eval.every=1",
        "--set",
        "eval.max_problems=2",
        "--set",
        "rollout.max_new_tokens=16",
        "--set",
        "rollout.steps=8",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_ok(&out);
    let report = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    for e in ["coupled", "d1", "full_mask", "decoupled"] {
        assert!(
            report.contains(&format!("| {e} | 1 | 2 |")),
            "{e}:\n{report}"
        );
        let evals = std::fs::read_to_string(out_dir.join(format!("{e}-seed0/eval.jsonl"))).unwrap();
        assert_eq!(evals.lines().count(), 3, "evaluations at steps 0, 1, 2");
    }
    let is_png = |p: &std::path::Path| {
        let bytes = std::fs::read(p).unwrap();
        bytes.len() > 1000 && bytes.starts_with(b"\x89PNG\r\n\x1a\n")
    };
    for png in ["reward.png", "pass_at_1.png", "arness.png"] {
        assert!(is_png(&out_dir.join(png)), "{png}");
    }
    // `report` remakes the same files from existing runs.
    let again = tmp.path().join("again");
    let out = couplet(&[
        "report",
        out_dir.join("coupled-seed0").to_str().unwrap(),
        out_dir.join("d1-seed0").to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
    ]);
    assert_ok(&out);
    assert!(std::fs::read_to_string(again.join("report.md"))
        .unwrap()
        .contains("2 runs in 2 variants: coupled, d1"));
    assert!(is_png(&again.join("reward.png")));
    // Something that is not a run directory is named.
    let out = couplet(&[
        "report",
        tmp.path().to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("config.toml"));
}
