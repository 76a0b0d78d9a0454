//! Helpers shared by every crate's tests (one copy, so a fix lands everywhere): repository
//! paths, tiny model folders, the plain-PyTorch reference run by the project's `.venv`
//! python, a TensorBoard reader that does not trust the writer, and f32 tolerances derived
//! from the arithmetic rather than from one machine.
#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;

use couplet_model::{init_model_folder, DreamConfig, Preset};

/// The workspace root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The project's `.venv` python (with torch), for reference implementations.
pub fn python() -> PathBuf {
    let p = repo().join(".venv/bin/python");
    assert!(p.exists(), "{} missing: run scripts/setup.sh", p.display());
    p
}

/// The bundled 4k-vocabulary CPU tokenizer.
pub fn cpu_tokenizer() -> PathBuf {
    repo().join("data/tokenizer-cpu/tokenizer.json")
}

/// The Qwen2.5 tokenizer fetched by setup.
pub fn qwen_tokenizer() -> PathBuf {
    let p = repo().join(".cache/assets/qwen2.5-tokenizer/tokenizer.json");
    assert!(p.exists(), "{} missing: run scripts/setup.sh", p.display());
    p
}

/// The tiny preset with weights large enough (std 0.3) that attention is far from uniform,
/// so a mistake in rotary embeddings, masking or head grouping changes the logits visibly.
pub fn tiny_config(tied: bool) -> DreamConfig {
    let mut cfg = Preset::Tiny.config(4096);
    cfg.tie_word_embeddings = tied;
    cfg.initializer_range = 0.3;
    cfg
}

/// Writes a tiny random model with the CPU tokenizer into `dir`.
pub fn tiny_model(dir: &Path, tied: bool, seed: i64) -> PathBuf {
    let out = dir.join(if tied { "tiny-tied" } else { "tiny" });
    init_model_folder(tiny_config(tied), &cpu_tokenizer(), &out, seed).expect("init tiny model");
    out
}

/// Runs `tests/reference/dream_ref.py ARGS...`, panicking with its stderr on failure.
pub fn reference(args: &[&str]) {
    reference_script("dream_ref.py", args)
}

/// Runs `tests/reference/SCRIPT ARGS...`, panicking with its stderr on failure.
pub fn reference_script(script: &str, args: &[&str]) {
    let script = repo().join("tests/reference").join(script);
    let out = Command::new(python())
        .arg(&script)
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .expect("run python reference");
    assert!(
        out.status.success(),
        "reference {:?} failed:\n{}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A file of little-endian f32 values (what the references write).
pub fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).expect("read reference output");
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Scalars `(tag, step, value)` of the TensorBoard event files in `dir`: a reader of the
/// TFRecord framing and of the few protobuf fields involved (Event.step = 2, Event.summary
/// = 5, Summary.value = 1, Value.tag = 1, Value.simple_value = 2), written here so the test
/// does not trust the writer's own code.
pub fn read_tensorboard_scalars(dir: &Path) -> Vec<(String, i64, f32)> {
    fn varint(buf: &[u8], pos: &mut usize) -> u64 {
        let mut out = 0u64;
        let mut shift = 0;
        while *pos < buf.len() {
            let b = buf[*pos];
            *pos += 1;
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        out
    }
    /// (field, wire type, payload) of each field of a message.
    fn fields(buf: &[u8]) -> Vec<(u64, u64, Vec<u8>)> {
        let mut pos = 0;
        let mut out = Vec::new();
        while pos < buf.len() {
            let key = varint(buf, &mut pos);
            let (field, wire) = (key >> 3, key & 7);
            let payload = match wire {
                0 => varint(buf, &mut pos).to_le_bytes().to_vec(),
                1 => {
                    pos += 8;
                    buf[pos - 8..pos].to_vec()
                }
                2 => {
                    let len = varint(buf, &mut pos) as usize;
                    pos += len;
                    buf[pos - len..pos].to_vec()
                }
                5 => {
                    pos += 4;
                    buf[pos - 4..pos].to_vec()
                }
                _ => break,
            };
            out.push((field, wire, payload));
        }
        out
    }
    let mut scalars = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let mut pos = 0;
        while pos + 12 <= data.len() {
            let len = u64::from_le_bytes(data[pos..pos + 8].try_into().unwrap()) as usize;
            let record = &data[pos + 12..pos + 12 + len];
            pos += 12 + len + 4;
            let event = fields(record);
            let step = event
                .iter()
                .find(|f| f.0 == 2)
                .map(|f| i64::from_le_bytes(f.2[..8].try_into().unwrap()))
                .unwrap_or(0);
            for (_, _, summary) in event.iter().filter(|f| f.0 == 5) {
                for (_, _, value) in fields(summary).iter().filter(|f| f.0 == 1) {
                    let v = fields(value);
                    let tag = v
                        .iter()
                        .find(|f| f.0 == 1)
                        .map(|f| String::from_utf8_lossy(&f.2).into_owned());
                    let simple = v
                        .iter()
                        .find(|f| f.0 == 2 && f.1 == 5)
                        .map(|f| f32::from_le_bytes(f.2[..4].try_into().unwrap()));
                    if let (Some(tag), Some(x)) = (tag, simple) {
                        scalars.push((tag, step, x));
                    }
                }
            }
        }
    }
    scalars
}

/// Fails the test with the command's stderr unless it exited 0.
pub fn assert_ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Unit roundoff of f32 (2⁻²⁴): the largest relative error of one rounded operation.
pub const F32_UNIT_ROUNDOFF: f64 = 5.960_464_477_539_063e-8;

/// How far two f32 evaluations of the same expression may differ when only their summation
/// order differs (another SIMD width, blocking or thread split: CPUs and kernels differ).
///
/// A length-`n` sum carries at most γₙ ≈ n·u relative error of the sum of |terms| (Higham,
/// *Accuracy and Stability*, §3.1), each of the two evaluations independently, and a
/// network chains `depth` such reductions whose errors add to first order. `magnitude`
/// bounds the compared values (floored at 1, since normalised activations are O(1) and a
/// sum that cancels keeps the rounding of its terms). A real bug (a wrong mask, a missing
/// shift) moves values by O(magnitude), far above this.
pub fn f32_order_tolerance(magnitude: f64, n: usize, depth: usize) -> f64 {
    2.0 * (n * depth) as f64 * F32_UNIT_ROUNDOFF * magnitude.max(1.0)
}

/// The f32 bound on the logits of two implementations of a whole forward pass of `config`:
/// the longest chained reduction is the MLP's (`intermediate_size` terms), once per layer
/// plus the LM head.
pub fn forward_tolerance(magnitude: f64, config: &DreamConfig) -> f64 {
    f32_order_tolerance(
        magnitude,
        config.intermediate_size as usize,
        config.num_hidden_layers as usize + 1,
    )
}

/// A stub denoiser whose logits depend only on the scored position: row `pos` of
/// `table [L, V]`, so decoders and estimators can be checked by hand.
pub struct FixedLogits {
    /// `[L, V]` logits per position.
    pub table: tch::Tensor,
}

impl couplet_rollout::Denoiser for FixedLogits {
    fn score(
        &self,
        _x: &tch::Tensor,
        _mask: Option<&tch::Tensor>,
        select: &tch::Tensor,
    ) -> tch::Tensor {
        self.table.index_select(0, &select.nonzero().select(1, 1))
    }

    fn device(&self) -> tch::Device {
        tch::Device::Cpu
    }
}
