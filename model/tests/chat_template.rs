//! Chat templates from model folders: the Qwen2.5 / Dream template renders byte for byte as
//! the built-in one, a LLaMA-3-style template (LLaDA-8B-Instruct's) renders as transformers
//! renders it, and broken templates are errors that name the file and the field.

use couplet_testkit as common;

use couplet_model::{chat_prompt, ChatTemplate, Message};
use serde_json::json;

fn folder_with_config(config: serde_json::Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
    dir
}

const CASES: [(&str, &str); 4] = [
    ("You are a helpful assistant.", "Write f."),
    (
        "",
        "Write a function `g(x)` that returns x * 2.\n\nUse {braces} and \"quotes\".",
    ),
    (
        "Système: réponds en Python.",
        "  leading and trailing spaces  \n",
    ),
    ("sys", "{{ not a template }} {% raw %}"),
];

#[test]
fn the_qwen_template_of_dreams_tokenizer_config_is_the_builtin_byte_for_byte() {
    let asset = common::qwen_tokenizer();
    let dir = asset.parent().unwrap();
    let template = ChatTemplate::from_model_dir(dir).unwrap();
    assert!(
        matches!(template, ChatTemplate::Jinja(_)),
        "the asset ships a template"
    );
    for (system, user) in CASES {
        assert_eq!(
            template.prompt(system, user).unwrap(),
            chat_prompt(system, user),
            "system {system:?} user {user:?}"
        );
    }
}

/// LLaDA-8B-Instruct's template (LLaMA-3 style): BOS once, header-wrapped roles, trimmed
/// contents, `<|eot_id|>` after each turn.
const LLAMA3: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

#[test]
fn a_llama3_style_template_renders_as_transformers_does() {
    let dir = folder_with_config(json!({
        "chat_template": LLAMA3,
        "bos_token": {"content": "<|startoftext|>", "lstrip": false},
        "eos_token": "<|eot_id|>",
    }));
    let template = ChatTemplate::from_model_dir(dir.path()).unwrap();
    // `| trim` binds to message['content'] only (filters bind tighter than `+`).
    let want = "<|startoftext|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\
                <|start_header_id|>user<|end_header_id|>\n\nWrite f.<|eot_id|>\
                <|start_header_id|>assistant<|end_header_id|>\n\n";
    assert_eq!(template.prompt("Be brief.", "  Write f.\n").unwrap(), want);
    let ChatTemplate::Jinja(jinja) = &template else {
        panic!("a Jinja template")
    };
    let messages = [Message {
        role: "user",
        content: "hi",
    }];
    assert_eq!(
        jinja.render(&messages, false).unwrap(),
        "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
    );
}

#[test]
fn trim_blocks_lstrip_blocks_and_python_methods_follow_transformers() {
    // Block tags on their own lines leave no newlines or indentation behind (trim_blocks,
    // lstrip_blocks), and `.strip()` / `.startswith()` work as in Python.
    let source = "{% for m in messages %}\n    {% if m.role.startswith('sys') %}\n[S:{{ m.content.strip() }}]\n    {% else %}\n[{{ m.role | upper }}:{{ m.content }}]\n    {% endif %}\n{% endfor %}\n{% if add_generation_prompt %}\n<go>\n{% endif %}\n";
    let dir = folder_with_config(json!({ "chat_template": source }));
    let template = ChatTemplate::from_model_dir(dir.path()).unwrap();
    assert_eq!(
        template.prompt(" s ", "u").unwrap(),
        "[S:s]\n[USER:u]\n<go>\n"
    );
}

#[test]
fn chat_template_jinja_and_named_templates_are_found() {
    let dir = folder_with_config(json!({
        "chat_template": [
            {"name": "tool_use", "template": "tools"},
            {"name": "default", "template": "{{ messages[1].content }}!"},
        ]
    }));
    let template = ChatTemplate::from_model_dir(dir.path()).unwrap();
    assert_eq!(template.prompt("s", "u").unwrap(), "u!");
    // A chat_template.jinja beside it wins (newer transformers save it there).
    std::fs::write(
        dir.path().join("chat_template.jinja"),
        "<{{ messages[0].content }}>",
    )
    .unwrap();
    let template = ChatTemplate::from_model_dir(dir.path()).unwrap();
    assert_eq!(template.prompt("s", "u").unwrap(), "<s>");
    // No template at all: the built-in one.
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        ChatTemplate::from_model_dir(empty.path()).unwrap(),
        ChatTemplate::Builtin
    ));
}

#[test]
fn broken_templates_are_errors_naming_the_file_and_field() {
    let cases = [
        (
            json!({"chat_template": "{% for m in messages %}"}),
            "not a valid Jinja template",
        ),
        (json!({"chat_template": 7}), "expected a string"),
        (
            json!({"chat_template": [{"name": "x", "template": "y"}]}),
            "`default`",
        ),
    ];
    for (config, want) in cases {
        let dir = folder_with_config(config);
        let err = ChatTemplate::from_model_dir(dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tokenizer_config.json")
                && err.contains("chat_template")
                && err.contains(want),
            "{err}"
        );
    }
    // raise_exception aborts rendering with the template's message.
    let dir = folder_with_config(json!({
        "chat_template": "{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    }));
    let template = ChatTemplate::from_model_dir(dir.path()).unwrap();
    let err = template.prompt("s", "u").unwrap_err().to_string();
    assert!(
        err.contains("System role not supported") && err.contains("chat_template"),
        "{err}"
    );
    // Not JSON at all.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer_config.json"), "{oops").unwrap();
    let err = ChatTemplate::from_model_dir(dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("tokenizer_config.json"), "{err}");
}
