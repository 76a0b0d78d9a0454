//! Chat templates: the Jinja `chat_template` a Hugging Face model folder ships (in
//! `tokenizer_config.json`, or `chat_template.jinja` beside it), rendered with `minijinja`
//! the way transformers renders it, or the built-in Qwen template when the folder has none.
//!
//! transformers' `apply_chat_template` renders in a sandboxed Jinja environment with
//! `trim_blocks` and `lstrip_blocks` on, the variables `messages`, `add_generation_prompt`,
//! `bos_token`, `eos_token` (and `tools`, unset), and the function `raise_exception`; Python
//! string methods (`.strip()`, `.startswith()`, ...) come from minijinja's pycompat layer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use minijinja::{context, Environment, Error, ErrorKind};
use serde::Serialize;

use crate::error::{ModelError, Result};
use crate::tokenizer::chat_prompt;

const TEMPLATE: &str = "chat";

/// How a model's prompts are wrapped for chat.
#[derive(Debug, Clone)]
pub enum ChatTemplate {
    /// The Qwen template (SPEC section 8), for folders without one of their own.
    Builtin,
    /// The folder's Jinja template.
    Jinja(JinjaTemplate),
}

/// A compiled Jinja chat template and the special-token strings it may use.
#[derive(Clone)]
pub struct JinjaTemplate {
    env: Arc<Environment<'static>>,
    bos_token: String,
    eos_token: String,
    /// Where it came from (errors name it).
    source: PathBuf,
}

impl std::fmt::Debug for JinjaTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JinjaTemplate")
            .field("source", &self.source)
            .finish()
    }
}

/// One chat message.
#[derive(Debug, Clone, Serialize)]
pub struct Message<'a> {
    /// `system`, `user` or `assistant`.
    pub role: &'a str,
    /// The text.
    pub content: &'a str,
}

impl ChatTemplate {
    /// The template of the model folder `dir`: `chat_template.jinja`, else the
    /// `chat_template` of `tokenizer_config.json` (a string, or a list of named templates of
    /// which `default` is used), else [`ChatTemplate::Builtin`].
    pub fn from_model_dir(dir: &Path) -> Result<Self> {
        let config_path = dir.join("tokenizer_config.json");
        let config: serde_json::Value = match std::fs::read_to_string(&config_path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| ModelError::field(&config_path, "(file)", e.to_string()))?,
            Err(_) => serde_json::Value::Null,
        };
        let token = |field: &str| match &config[field] {
            serde_json::Value::String(s) => s.clone(),
            other => other["content"].as_str().unwrap_or_default().to_string(),
        };
        let jinja_path = dir.join("chat_template.jinja");
        let (source, field, text) = if let Ok(text) = std::fs::read_to_string(&jinja_path) {
            (jinja_path, "(file)", text)
        } else {
            match named_template(&config["chat_template"])
                .map_err(|m| ModelError::field(&config_path, "chat_template", m))?
            {
                Some(text) => (config_path, "chat_template", text),
                None => return Ok(ChatTemplate::Builtin),
            }
        };
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<String, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template_owned(TEMPLATE, text).map_err(|e| {
            ModelError::field(&source, field, format!("not a valid Jinja template: {e:#}"))
        })?;
        Ok(ChatTemplate::Jinja(JinjaTemplate {
            env: Arc::new(env),
            bos_token: token("bos_token"),
            eos_token: token("eos_token"),
            source,
        }))
    }

    /// One system and one user turn, ending with the assistant's prefix.
    pub fn prompt(&self, system: &str, user: &str) -> Result<String> {
        match self {
            ChatTemplate::Builtin => Ok(chat_prompt(system, user)),
            ChatTemplate::Jinja(t) => t.render(
                &[
                    Message {
                        role: "system",
                        content: system,
                    },
                    Message {
                        role: "user",
                        content: user,
                    },
                ],
                true,
            ),
        }
    }
}

impl JinjaTemplate {
    /// Renders `messages` as transformers' `apply_chat_template(messages, tokenize=False,
    /// add_generation_prompt=...)` does.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let template = self
            .env
            .get_template(TEMPLATE)
            .map_err(|e| ModelError::field(&self.source, "chat_template", e.to_string()))?;
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(|e| {
                ModelError::field(
                    &self.source,
                    "chat_template",
                    format!("rendering failed: {e:#}"),
                )
            })
    }
}

/// The template text of a `chat_template` value: a string, or `[{name, template}]` (the
/// one named `default`); `None` when absent.
fn named_template(value: &serde_json::Value) -> std::result::Result<Option<String>, String> {
    match value {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s.clone())),
        serde_json::Value::Array(list) => list
            .iter()
            .find(|t| t["name"] == "default")
            .and_then(|t| t["template"].as_str())
            .map(|s| Some(s.to_string()))
            .ok_or_else(|| "a list of templates without one named `default`".to_string()),
        other => Err(format!(
            "expected a string or a list of named templates, got {other}"
        )),
    }
}
