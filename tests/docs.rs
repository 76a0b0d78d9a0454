//! The README and the guide under docs/ stay true to the code, so a rename fails CI:
//! every relative link (and mdBook include) resolves, every `couplet` subcommand and flag
//! they show exists in the binary's help, every config key they name is accepted by the
//! config loader, and docs/reference/cli.md is the binary's own help text
//! (`COUPLET_BLESS=1 cargo test --release --test docs` rewrites it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use couplet_testkit as common;
use couplet_trainer::TrainConfig;

/// README.md, every Markdown page under docs/, and configs/README.md (the config reference
/// docs/reference/config.md includes).
fn pages() -> Vec<PathBuf> {
    let root = common::repo();
    let mut out = vec![root.join("README.md"), root.join("configs/README.md")];
    let mut stack = vec![root.join("docs")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// A page split into prose lines and code (fenced blocks with their info string, and
/// inline spans of prose lines).
struct Page {
    prose: Vec<String>,
    blocks: Vec<(String, Vec<String>)>,
}

impl Page {
    fn read(path: &Path) -> Page {
        let text = std::fs::read_to_string(path).unwrap();
        let (mut prose, mut blocks) = (Vec::new(), Vec::new());
        let mut open: Option<(String, Vec<String>)> = None;
        for line in text.lines() {
            let fence = line.trim_start().strip_prefix("```");
            match (&mut open, fence) {
                (None, Some(info)) => open = Some((info.trim().to_string(), Vec::new())),
                (Some(_), Some(_)) => blocks.push(open.take().unwrap()),
                (Some((_, body)), None) => body.push(line.to_string()),
                (None, None) => prose.push(line.to_string()),
            }
        }
        Page { prose, blocks }
    }

    /// Inline code spans of the prose.
    fn spans(&self) -> Vec<String> {
        let mut out = Vec::new();
        for line in &self.prose {
            let parts: Vec<&str> = line.split('`').collect();
            out.extend(parts.iter().skip(1).step_by(2).map(|s| s.to_string()));
        }
        out
    }

    /// Lines of shell blocks and inline spans: where commands are shown.
    fn command_texts(&self) -> Vec<String> {
        let mut out = self.spans();
        for (info, body) in &self.blocks {
            if matches!(info.as_str(), "bash" | "sh" | "shell" | "console" | "") {
                out.extend(body.iter().map(|l| strip_comment(l).to_string()));
            }
        }
        out
    }
}

/// A shell line without its trailing ` # comment`.
fn strip_comment(line: &str) -> &str {
    line.find(" #").map_or(line, |i| &line[..i])
}

#[test]
fn every_relative_link_and_include_resolves() {
    let mut broken = Vec::new();
    for path in pages() {
        let page = Page::read(&path);
        let dir = path.parent().unwrap();
        for line in &page.prose {
            for target in link_targets(line) {
                let file = target.split('#').next().unwrap();
                if file.is_empty() || file.contains("://") || file.starts_with("mailto:") {
                    continue;
                }
                if !dir.join(file).exists() {
                    broken.push(format!("{}: {target}", path.display()));
                }
            }
            if let Some(rest) = line.trim().strip_prefix("{{#include ") {
                let file = rest.trim_end_matches("}}").trim();
                if !dir.join(file).exists() {
                    broken.push(format!("{}: include {file}", path.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The targets of `[text](target)` and `![alt](target)` on a line.
fn link_targets(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        match after.find(')') {
            Some(j) => {
                out.push(after[..j].trim().to_string());
                rest = &after[j..];
            }
            None => break,
        }
    }
    out
}

/// `couplet ARGS --help`, cached.
struct Help(BTreeMap<String, String>);

impl Help {
    fn of(&mut self, path: &[&str]) -> String {
        let key = path.join(" ");
        if let Some(text) = self.0.get(&key) {
            return text.clone();
        }
        let out = Command::new(env!("CARGO_BIN_EXE_couplet"))
            .args(path)
            .arg("--help")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        self.0.insert(key, text.clone());
        text
    }

    /// The subcommands a help text lists under `Commands:`.
    fn commands(text: &str) -> Vec<String> {
        text.lines()
            .skip_while(|l| !l.starts_with("Commands:"))
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .filter(|c| c != "help")
            .collect()
    }
}

#[test]
fn every_couplet_command_and_flag_shown_exists() {
    let mut help = Help(BTreeMap::new());
    let top = Help::commands(&help.of(&[]));
    let mut wrong = Vec::new();
    for path in pages() {
        for text in Page::read(&path).command_texts() {
            for invocation in invocations(&text) {
                if let Err(e) = check_invocation(&mut help, &top, &invocation) {
                    wrong.push(format!(
                        "{}: `{}`: {e}",
                        path.display(),
                        invocation.join(" ")
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Every `couplet ...` (or `target/release/couplet ...`) in a line, as its words; the part
/// after ` -- ` of `couplet launch` is a command of its own.
fn invocations(text: &str) -> Vec<Vec<String>> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut out = Vec::new();
    for (i, w) in words.iter().enumerate() {
        let w = w.trim_start_matches('(');
        if w == "couplet" || w.ends_with("/couplet") {
            let rest: Vec<String> = words[i + 1..]
                .iter()
                .take_while(|x| !x.starts_with('|') && !x.starts_with("&&") && **x != "--")
                .map(|x| x.to_string())
                .collect();
            out.push(rest);
            if let Some(j) = words[i + 1..].iter().position(|x| *x == "--") {
                let tail: Vec<String> = words[i + 2 + j..].iter().map(|x| x.to_string()).collect();
                out.push(tail);
            }
        }
    }
    out
}

/// The subcommand (and sub-subcommand) exists and every `--flag` is in its help.
fn check_invocation(help: &mut Help, top: &[String], words: &[String]) -> Result<(), String> {
    let Some(first) = words.first() else {
        return Ok(()); // `couplet` alone: the default job
    };
    if first.starts_with('-') || !first.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
        return Ok(()); // a flag of the bare binary or prose after the name
    }
    if !top.contains(first) {
        return Err(format!("no subcommand `{first}`"));
    }
    let mut path = vec![first.as_str()];
    let nested = Help::commands(&help.of(&path));
    if let Some(second) = words.get(1) {
        if !nested.is_empty() {
            if !nested.contains(second) {
                return Err(format!("`{first}` has no subcommand `{second}`"));
            }
            path.push(second);
        }
    }
    let text = help.of(&path);
    for w in words {
        let flag = w
            .split('=')
            .next()
            .unwrap()
            .trim_end_matches([',', ')', '`', ';', '.']);
        if flag.starts_with("--") && flag.len() > 2 && !has_flag(&text, flag) {
            return Err(format!("`{}` has no flag {flag}", path.join(" ")));
        }
    }
    Ok(())
}

fn has_flag(help: &str, flag: &str) -> bool {
    help.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
        .any(|w| {
            w == flag || w.split('=').next() == Some(flag) || w.strip_suffix("...") == Some(flag)
        })
        || flag == "--help"
}

/// The config sections whose keys the docs name as `section.key`.
const SECTIONS: [&str; 14] = [
    "model",
    "data",
    "rollout",
    "reward",
    "sandbox",
    "algorithm",
    "reference",
    "optimizer",
    "schedule",
    "checkpointing",
    "eval",
    "logging",
    "distributed",
    "lora",
];

/// File extensions that make `model.safetensors`-like spans file names, not keys.
const FILE_EXTENSIONS: [&str; 12] = [
    "safetensors",
    "json",
    "jsonl",
    "rs",
    "py",
    "toml",
    "md",
    "png",
    "txt",
    "gz",
    "parquet",
    "sh",
];

#[test]
fn every_config_key_named_exists() {
    let mut named: BTreeMap<String, String> = BTreeMap::new();
    for path in pages() {
        let page = Page::read(&path);
        let at = path.display().to_string();
        for key in page.command_texts().iter().flat_map(|t| set_keys(t)) {
            named.entry(key).or_insert_with(|| at.clone());
        }
        for span in page.spans() {
            if let Some(key) = key_span(&span) {
                named.entry(key).or_insert_with(|| at.clone());
            }
        }
        for (info, body) in &page.blocks {
            if info == "toml" {
                for key in toml_keys(&body.join("\n")) {
                    named.entry(key).or_insert_with(|| at.clone());
                }
            }
        }
    }
    assert!(named.len() > 40, "the docs name config keys: {named:?}");
    let unknown: Vec<String> = named
        .iter()
        .filter(|(key, _)| !key_exists(key))
        .map(|(key, at)| format!("{at}: `{key}`"))
        .collect();
    assert!(
        unknown.is_empty(),
        "unknown config keys:\n{}",
        unknown.join("\n")
    );
}

/// Keys of `--set KEY=VALUE` in a command line.
fn set_keys(text: &str) -> Vec<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == "--set")
        .filter_map(|w| {
            w[1].trim_matches(['\'', '"'])
                .split('=')
                .next()
                .map(str::to_string)
        })
        .filter(|k| {
            k == "seed"
                || k.split_once('.')
                    .is_some_and(|(s, _)| SECTIONS.contains(&s))
        })
        .collect()
}

/// `section.key` (optionally `= value`) when a whole inline span is one.
fn key_span(span: &str) -> Option<String> {
    let key = span.split('=').next()?.trim();
    let (section, rest) = key.split_once('.')?;
    let is_word = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    (SECTIONS.contains(&section) && is_word(rest) && !FILE_EXTENSIONS.contains(&rest))
        .then(|| key.to_string())
}

/// The leaf keys of a TOML snippet (`section.key`; tables of arrays and inline tables are
/// one key).
fn toml_keys(text: &str) -> Vec<String> {
    let Ok(value) = text.parse::<toml::Table>() else {
        return Vec::new(); // a fragment that is not TOML on its own
    };
    let mut out = Vec::new();
    for (k, v) in &value {
        match v {
            toml::Value::Table(t) => out.extend(t.keys().map(|x| format!("{k}.{x}"))),
            _ => out.push(k.clone()),
        }
    }
    out
}

/// Whether the config loader knows `key`: overriding it never says "unknown field" (a
/// value of the wrong type is a different error). Algorithm knobs are tried under every
/// method.
fn key_exists(key: &str) -> bool {
    let base = common::repo().join("configs/tiny_cpu.toml");
    let accepts = |sets: Vec<String>| match TrainConfig::load(&base, &sets) {
        Ok(_) => true,
        Err(e) => !e.to_string().contains("unknown field"),
    };
    if key.starts_with("algorithm.") && key != "algorithm.name" {
        couplet_trainer::algorithm::NAMES
            .iter()
            .any(|m| accepts(vec![format!("algorithm.name=\"{m}\""), format!("{key}=0")]))
    } else {
        accepts(vec![format!("{key}=0")])
    }
}

#[test]
fn the_cli_reference_is_the_binary_help() {
    let mut help = Help(BTreeMap::new());
    let mut text = String::from(
        "# Command line\n\nEvery subcommand's `--help`, as the binary prints it (this page is generated: \
         `COUPLET_BLESS=1 cargo test --release --test docs` rewrites it, and CI fails when it is stale).\n\n",
    );
    text += &format!("## couplet\n\n```text\n{}```\n", help.of(&[]));
    for command in Help::commands(&help.of(&[])) {
        let own = help.of(&[&command]);
        text += &format!("\n## couplet {command}\n\n```text\n{own}```\n");
        for sub in Help::commands(&own) {
            let nested = help.of(&[&command, &sub]);
            text += &format!("\n### couplet {command} {sub}\n\n```text\n{nested}```\n");
        }
    }
    let path = common::repo().join("docs/reference/cli.md");
    if std::env::var_os("COUPLET_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == text,
        "{} is stale: run COUPLET_BLESS=1 cargo test --release --test docs",
        path.display()
    );
}
