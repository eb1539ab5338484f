//! Constrained decoding (issue 5, deliverable 3): whatever the logits — random, or bent on
//! writing forever — the text parses as JSON, validates against the schema (checked by the
//! independent `jsonschema` crate) and is finished within the token budget.

#[path = "support/vocab.rs"]
mod vocab;

use ghost_model::constrain::{tool_call_schema, ConstrainError, Constraint, Grammar, Limits, ToolSpec, Vocabulary};
use serde_json::{json, Value};
use std::sync::Arc;
use vocab::Xorshift;

const SEEDS: u64 = 40;

/// How the fake model picks its logits.
#[derive(Debug, Clone, Copy)]
enum Logits {
    /// Uniform noise: a random model.
    Random,
    /// Longest tokens first: strings and arrays as long as the bounds allow.
    Longest,
    /// Spaces, quotes and commas first: tries to loop on optional and structural bytes.
    Punctuation,
}

fn fill(logits: &mut [f32], how: Logits, vocab: &Vocabulary, rng: &mut Xorshift) {
    for (id, l) in logits.iter_mut().enumerate() {
        let noise = rng.unit();
        let bytes = vocab.token_bytes(id as u32);
        *l = match how {
            Logits::Random => noise,
            Logits::Longest => bytes.len() as f32 + noise,
            Logits::Punctuation => bytes.iter().filter(|b| b" \",[{".contains(b)).count() as f32 * 4.0 + noise,
        };
    }
}

struct Run {
    text: String,
    tokens: usize,
}

fn generate(grammar: &Arc<Grammar>, vocab: &Arc<Vocabulary>, budget: usize, how: Logits, seed: u64) -> Run {
    let mut c = Constraint::new(grammar.clone(), vocab.clone(), budget).expect("budget and vocabulary fit");
    let mut rng = Xorshift(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
    let mut logits = vec![0f32; vocab.len()];
    let mut written = Vec::new();
    let mut tokens = 0;
    while !c.is_complete() {
        assert!(tokens < budget, "seed {seed} {how:?}: still open after {budget} tokens: {}", String::from_utf8_lossy(&written));
        fill(&mut logits, how, vocab, &mut rng);
        c.mask_logits(&mut logits);
        let (best, score) = logits.iter().enumerate().fold((0, f32::NEG_INFINITY), |a, (i, &l)| if l > a.1 { (i, l) } else { a });
        assert!(score.is_finite(), "seed {seed} {how:?}: no token allowed after {}", String::from_utf8_lossy(&written));
        c.advance(best as u32).unwrap_or_else(|e| panic!("seed {seed}: masked token {best} refused: {e}"));
        written.extend_from_slice(vocab.token_bytes(best as u32));
        tokens += 1;
    }
    assert_eq!(c.output(), written.as_slice());
    let text = String::from_utf8(written).unwrap_or_else(|e| panic!("seed {seed} {how:?}: not UTF-8: {e}"));
    Run { text, tokens }
}

/// Smallest budget the schema allows (the constraint says so when asked for too little).
fn min_budget(grammar: &Arc<Grammar>, vocab: &Arc<Vocabulary>) -> usize {
    match Constraint::new(grammar.clone(), vocab.clone(), 0) {
        Err(ConstrainError::BudgetTooSmall { needed, .. }) => needed,
        Ok(_) => 0,
        Err(e) => panic!("{e}"),
    }
}

fn check_schema(name: &str, schema: &Value, grammar: Grammar, vocab: &Arc<Vocabulary>) {
    let validator = jsonschema::validator_for(schema).unwrap_or_else(|e| panic!("{name}: bad test schema: {e}"));
    let grammar = Arc::new(grammar);
    let shortest = min_budget(&grammar, vocab);
    let mut rng = Xorshift(0x1234_5678);
    for seed in 0..SEEDS {
        for how in [Logits::Random, Logits::Longest, Logits::Punctuation] {
            // Budgets from the bare minimum (every token forced onto a shortest path) to roomy.
            let budget = match seed % 4 {
                0 => shortest,
                1 => shortest + 1 + rng.below(8),
                _ => shortest + 20 + rng.below(200),
            };
            let run = generate(&grammar, vocab, budget, how, seed);
            let value: Value = serde_json::from_str(&run.text)
                .unwrap_or_else(|e| panic!("{name} seed {seed} {how:?}: not JSON ({e}): {}", run.text));
            if let Err(e) = validator.validate(&value) {
                panic!("{name} seed {seed} {how:?}: invalid ({e}): {}", run.text);
            }
            assert!(run.tokens <= budget);
        }
    }
}

fn test_vocab() -> Arc<Vocabulary> {
    // Qwen's logits are wider than its vocabulary; keep some ids without bytes here too.
    Arc::new(Vocabulary::new(4200, vocab::tokens(4000)))
}

fn check(name: &str, schema: Value) {
    let grammar = Grammar::from_schema(&schema, &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
    check_schema(name, &schema, grammar, &test_vocab());
}

#[test]
fn nested_objects_always_validate() {
    check(
        "nested",
        json!({
            "type": "object",
            "properties": {
                "user": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "minLength": 1, "maxLength": 20},
                        "age": {"type": "integer", "minimum": 0, "maximum": 150},
                        "address": {
                            "type": "object",
                            "properties": {"city": {"type": "string"}, "zip": {"type": "string", "minLength": 5, "maxLength": 5}},
                            "required": ["zip"]
                        }
                    },
                    "required": ["name", "age"]
                },
                "active": {"type": "boolean"}
            },
            "required": ["user"]
        }),
    );
}

#[test]
fn enums_and_consts_always_validate() {
    check(
        "enums",
        json!({
            "type": "object",
            "properties": {
                "level": {"enum": ["debug", "info", "warn", "error"]},
                "code": {"enum": [1, 2, 3, 10, 12, 100]},
                "mode": {"const": "fast"},
                "flag": {"enum": [true, null, "maybe"]}
            },
            "required": ["level", "code", "mode"]
        }),
    );
}

#[test]
fn integers_and_numbers_always_validate() {
    check(
        "numbers",
        json!({
            "type": "object",
            "properties": {
                "count": {"type": "integer"},
                "ratio": {"type": "number"},
                "offset": {"type": "integer", "exclusiveMinimum": -10, "exclusiveMaximum": 10},
                "score": {"type": "number", "minimum": 0.5, "maximum": 99},
                "year": {"type": "integer", "minimum": 1970, "maximum": 2100}
            },
            "required": ["count", "ratio", "offset", "score", "year"]
        }),
    );
}

#[test]
fn arrays_always_validate() {
    check(
        "arrays",
        json!({
            "type": "object",
            "properties": {
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "minItems": 1, "maxItems": 4},
                "matrix": {
                    "type": "array",
                    "items": {"type": "array", "items": {"type": "integer", "minimum": -3, "maximum": 3}, "maxItems": 3},
                    "maxItems": 3
                },
                "points": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number"}}, "required": ["x", "y"]},
                    "minItems": 2,
                    "maxItems": 3
                }
            },
            "required": ["tags", "points"]
        }),
    );
}

#[test]
fn optional_nullable_and_free_form_values_always_validate() {
    check(
        "optional",
        json!({
            "type": "object",
            "properties": {
                "a": {"type": ["string", "null"]},
                "b": {"type": "string"},
                "c": {},
                "d": {"type": "object", "additionalProperties": {"type": "integer"}},
                "e": {"type": "boolean"},
                "f": {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "maxLength": 2}]}
            },
            "required": ["e"]
        }),
    );
}

fn tools() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "read_file".into(),
            parameters: json!({
                "type": "object",
                "properties": {"path": {"type": "string", "minLength": 1}, "max_bytes": {"type": "integer", "minimum": 1}},
                "required": ["path"]
            }),
        },
        ToolSpec {
            name: "run_command".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "command": {"type": "string", "minLength": 1},
                    "args": {"type": "array", "items": {"type": "string"}, "maxItems": 6},
                    "timeout_s": {"type": "integer", "minimum": 1, "maximum": 600}
                },
                "required": ["command", "timeout_s"]
            }),
        },
        ToolSpec {
            name: "restart_service".into(),
            parameters: json!({
                "type": "object",
                "properties": {"name": {"enum": ["nginx", "redis", "sshd"]}, "force": {"type": "boolean"}},
                "required": ["name"]
            }),
        },
        ToolSpec { name: "poweroff".into(), parameters: json!({"type": "object", "properties": {}, "additionalProperties": false}) },
    ]
}

#[test]
fn tool_calls_always_name_a_tool_with_valid_arguments() {
    let tools = tools();
    let schema = tool_call_schema(&tools);
    let grammar = Grammar::tool_calls(&tools, &Limits::default()).unwrap();
    let vocab = test_vocab();
    check_schema("tools", &schema, grammar, &vocab);

    // The name comes first, and every tool gets called by some seed.
    let grammar = Arc::new(Grammar::tool_calls(&tools, &Limits::default()).unwrap());
    let mut called = std::collections::BTreeSet::new();
    for seed in 0..60 {
        let run = generate(&grammar, &vocab, 300, Logits::Random, 1000 + seed);
        assert!(run.text.starts_with("{\"name\":"), "{}", run.text);
        let v: Value = serde_json::from_str(&run.text).unwrap();
        called.insert(v["name"].as_str().unwrap().to_owned());
    }
    assert_eq!(called.len(), tools.len(), "called: {called:?}");
}

#[test]
fn the_prefix_tree_walk_allows_exactly_what_trying_every_token_allows() {
    // The fast mask (prefix tree, plain-text shortcut inside strings) against the reference
    // that feeds each token on its own, at every step of generations over several schemas,
    // with budgets tight enough that the budget check decides too.
    let vocab = test_vocab();
    let schemas = [
        json!({"type": "object", "properties": {"s": {"type": "string", "minLength": 3, "maxLength": 12}, "n": {"type": "number"}}, "required": ["s"]}),
        json!({"type": "array", "items": {"enum": ["日本", "ab", 12, 1]}, "minItems": 1, "maxItems": 5}),
        json!({"type": "object", "properties": {"free": {}, "i": {"type": "integer", "minimum": 10, "maximum": 2000}}, "required": ["i"]}),
    ];
    let mut grammars: Vec<Arc<Grammar>> =
        schemas.iter().map(|s| Arc::new(Grammar::from_schema(s, &Limits::default()).unwrap())).collect();
    grammars.push(Arc::new(Grammar::tool_calls(&tools(), &Limits::default()).unwrap()));
    for (gi, grammar) in grammars.iter().enumerate() {
        let shortest = min_budget(grammar, &vocab);
        for seed in 0..6u64 {
            let budget = shortest + seed as usize * 3;
            let mut c = Constraint::new(grammar.clone(), vocab.clone(), budget).unwrap();
            let mut rng = Xorshift(seed + 77);
            while !c.is_complete() {
                let reference = c.allowed_by_scanning();
                let fast = c.allowed().clone();
                assert_eq!(
                    fast.iter().collect::<Vec<_>>(),
                    reference.iter().collect::<Vec<_>>(),
                    "schema {gi} seed {seed} after {:?}",
                    String::from_utf8_lossy(c.output())
                );
                let ids: Vec<u32> = fast.iter().collect();
                c.advance(ids[rng.below(ids.len())]).unwrap();
            }
        }
    }
}

#[test]
fn a_random_qwen2_model_writes_valid_tool_calls_through_the_generator() {
    use ghost_model::fixture::{self, FixtureForms, FixtureSpec};
    use ghost_model::generate::{GenerateOptions, Generator, LoadOptions, Prompt, FinishReason};

    let dir = tempfile::tempdir().unwrap();
    let forms = FixtureForms { safetensors: true, gguf_q8_0: false, gguf_q4_k_m: false };
    fixture::write(dir.path(), &FixtureSpec::tiny(), forms).unwrap();
    let mut model = Generator::load(dir.path(), &LoadOptions { threads: 2, weights: None, candle_only: false }).unwrap();
    let vocab = Arc::new(Vocabulary::from_tokenizer(model.tokenizer(), None));
    let eos = model.eos_token_ids().to_vec();
    let tools = tools();
    let schema = tool_call_schema(&tools);
    let validator = jsonschema::validator_for(&schema).unwrap();
    let grammar = Arc::new(Grammar::tool_calls(&tools, &Limits::default()).unwrap());
    let budget = 80;
    for seed in 0..8u64 {
        let mut c = Constraint::new(grammar.clone(), vocab.clone(), budget).unwrap();
        let mut hook = |generated: &[u32], logits: &mut [f32]| c.mask_generated(generated, &eos, logits);
        // Hotter for later seeds: the random model favours one tool name at temperature 1.
        let temperature = 1.0 + seed as f32 * 0.5;
        let opts = GenerateOptions { max_tokens: budget + 1, temperature, top_p: 1.0, seed: Some(seed), ..Default::default() };
        let out = model
            .generate(Prompt::Text("Restart nginx. Call one tool:"), &opts, &mut |_| std::ops::ControlFlow::Continue(()), Some(&mut hook))
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(out.finish_reason, FinishReason::Stop, "seed {seed}: {}", out.text);
        let value: Value = serde_json::from_str(&out.text).unwrap_or_else(|e| panic!("seed {seed}: not JSON ({e}): {}", out.text));
        if let Err(e) = validator.validate(&value) {
            panic!("seed {seed}: invalid ({e}): {}", out.text);
        }
        assert!(out.completion_tokens <= budget + 1, "seed {seed}: {} tokens", out.completion_tokens);
    }
}

#[test]
fn tool_lists_in_openai_form_are_read() {
    let openai = json!([{"type": "function", "function": {"name": "ls", "parameters": {"type": "object", "properties": {"dir": {"type": "string"}}}}}]);
    let spec = ToolSpec::from_openai(&openai[0]).unwrap();
    assert_eq!(spec.name, "ls");
    assert_eq!(spec.parameters["properties"]["dir"]["type"], "string");
}

#[test]
fn a_budget_below_the_shortest_value_is_refused() {
    let grammar = Arc::new(Grammar::tool_calls(&tools(), &Limits::default()).unwrap());
    let vocab = test_vocab();
    let shortest = min_budget(&grammar, &vocab);
    // {"name":"poweroff","arguments":{}} is the shortest call: 34 bytes.
    assert_eq!(shortest, 34);
    assert!(matches!(
        Constraint::new(grammar.clone(), vocab.clone(), shortest - 1),
        Err(ConstrainError::BudgetTooSmall { needed: 34, .. })
    ));
    assert!(Constraint::new(grammar, vocab, shortest).is_ok());
}

#[test]
fn a_vocabulary_without_single_bytes_is_refused() {
    let grammar = Arc::new(Grammar::tool_calls(&tools(), &Limits::default()).unwrap());
    let words: Vec<(u32, Vec<u8>)> = ["{\"name\":", "\"poweroff\"", "hello"].iter().enumerate().map(|(i, t)| (i as u32, t.as_bytes().to_vec())).collect();
    let err = Constraint::new(grammar, Arc::new(Vocabulary::new(3, words)), 100).err().expect("must be refused");
    assert!(matches!(err, ConstrainError::MissingByte(_)), "{err}");
}
