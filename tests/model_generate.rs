//! Generation with Candle on a tiny random-weight Qwen2 model the test writes itself: the
//! fixture is reproducible, safetensors and both GGUF forms load and agree, sampling is
//! deterministic by seed, stop tokens/strings and max_tokens end generation with the right
//! reason, streaming adds up to the text, and bad input gets errors that name the cause.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ghost_model::fixture::{self, FixtureForms, FixtureModel, FixtureSpec};
use ghost_model::generate::{
    Architecture, ChatMessage, FinishReason, GenerateError, GenerateOptions, Generation, Generator,
    LoadOptions, Prompt, WeightsFormat,
};

/// The tiny fixture, written once for the whole test binary.
fn model() -> &'static FixtureModel {
    static MODEL: OnceLock<(tempfile::TempDir, FixtureModel)> = OnceLock::new();
    &MODEL
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let model =
                fixture::write(dir.path(), &FixtureSpec::tiny(), FixtureForms::ALL).unwrap();
            (dir, model)
        })
        .1
}

fn load(weights: &Path) -> Generator {
    Generator::load(
        weights,
        &LoadOptions {
            threads: 2,
            weights: None,
        },
    )
    .unwrap()
}

fn chat() -> Vec<ChatMessage> {
    vec![
        ChatMessage::system("You are a helpful assistant."),
        ChatMessage::user("Hello, how are you?"),
    ]
}

/// Options with end-of-sequence forbidden, so a random model runs to max_tokens.
fn run_without_eos(g: &mut Generator, opts: &GenerateOptions) -> Generation {
    let eos = g.eos_token_ids().to_vec();
    let mut hook = |_: &[u32], logits: &mut [f32]| {
        for &id in &eos {
            logits[id as usize] = f32::NEG_INFINITY;
        }
    };
    g.generate(
        Prompt::Chat {
            messages: &chat(),
            tools: None,
        },
        opts,
        &mut |_| ControlFlow::Continue(()),
        Some(&mut hook),
    )
    .unwrap()
}

fn greedy(max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        temperature: 0.0,
        seed: Some(0),
        ..Default::default()
    }
}

fn sampled(seed: u64, max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        temperature: 1.0,
        top_p: 0.95,
        seed: Some(seed),
        ..Default::default()
    }
}

#[test]
fn fixture_is_byte_identical_for_a_seed_and_differs_for_another() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    let spec = FixtureSpec::tiny();
    let ma = fixture::write(a.path(), &spec, FixtureForms::ALL).unwrap();
    let mb = fixture::write(b.path(), &spec, FixtureForms::ALL).unwrap();
    let names = |m: &FixtureModel| -> Vec<String> {
        m.files()
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(names(&ma), names(&mb));
    for name in names(&ma) {
        let (x, y) = (
            std::fs::read(a.path().join(&name)).unwrap(),
            std::fs::read(b.path().join(&name)).unwrap(),
        );
        assert!(
            x == y,
            "{name} differs between two writes with the same seed"
        );
    }
    let other = FixtureSpec {
        seed: spec.seed + 1,
        ..spec
    };
    let weights_only = FixtureForms {
        safetensors: true,
        gguf_q8_0: false,
        gguf_q4_k_m: false,
    };
    let mc = fixture::write(c.path(), &other, weights_only).unwrap();
    assert_ne!(
        std::fs::read(mc.safetensors.unwrap()).unwrap(),
        std::fs::read(ma.safetensors.unwrap()).unwrap(),
        "another seed must give other weights"
    );
}

#[test]
fn loads_safetensors_and_gguf_q8_0_and_q4_k_m_of_the_same_fixture() {
    let m = model();
    let cases: [(&PathBuf, WeightsFormat); 3] = [
        (m.safetensors.as_ref().unwrap(), WeightsFormat::Safetensors),
        (
            m.gguf_q8_0.as_ref().unwrap(),
            WeightsFormat::Gguf("Q8_0".into()),
        ),
        (
            m.gguf_q4_k_m.as_ref().unwrap(),
            WeightsFormat::Gguf("Q4K".into()),
        ),
    ];
    for (path, format) in cases {
        let mut g = load(path);
        assert_eq!(g.architecture(), Architecture::Qwen2);
        assert_eq!(g.format(), &format, "{}", path.display());
        assert_eq!(
            g.context_length(),
            FixtureSpec::tiny().max_position_embeddings
        );
        assert_eq!(g.threads(), 2);
        let out = run_without_eos(&mut g, &greedy(4));
        assert_eq!(
            (out.completion_tokens, out.finish_reason),
            (4, FinishReason::Length)
        );
        assert!(
            out.prompt_tokens > 10,
            "the chat prompt is {} tokens",
            out.prompt_tokens
        );
    }
    // A directory with several GGUFs and a safetensors file loads the safetensors by default.
    assert_eq!(load(&m.dir).format(), &WeightsFormat::Safetensors);
}

#[test]
fn sampling_is_deterministic_by_seed() {
    let mut g = load(model().gguf_q8_0.as_ref().unwrap());
    let a = run_without_eos(&mut g, &sampled(7, 12));
    let b = run_without_eos(&mut g, &sampled(7, 12));
    let c = run_without_eos(&mut g, &sampled(8, 12));
    assert_eq!(a.tokens, b.tokens, "same seed, same tokens");
    assert_eq!(a.text, b.text);
    assert_ne!(
        a.tokens, c.tokens,
        "another seed at temperature 1 must sample differently"
    );
    // Greedy ignores the seed.
    let g1 = run_without_eos(
        &mut g,
        &GenerateOptions {
            seed: Some(1),
            ..greedy(6)
        },
    );
    let g2 = run_without_eos(
        &mut g,
        &GenerateOptions {
            seed: Some(2),
            ..greedy(6)
        },
    );
    assert_eq!(g1.tokens, g2.tokens);
}

/// First-step logits of the chat prompt, captured through the logits hook.
fn first_logits(path: &Path) -> (Vec<f32>, Vec<u32>) {
    let mut g = load(path);
    let mut captured = Vec::new();
    let mut hook = |generated: &[u32], logits: &mut [f32]| {
        if generated.is_empty() {
            captured = logits.to_vec();
        }
    };
    let out = g
        .generate(
            Prompt::Chat {
                messages: &chat(),
                tools: None,
            },
            &greedy(3),
            &mut |_| ControlFlow::Continue(()),
            Some(&mut hook),
        )
        .unwrap();
    (captured, out.tokens)
}

/// Largest absolute difference between two logit vectors, relative to the spread (standard
/// deviation) of the reference.
fn relative_max_diff(reference: &[f32], other: &[f32]) -> f32 {
    let n = reference.len() as f32;
    let mean = reference.iter().sum::<f32>() / n;
    let std = (reference.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n).sqrt();
    let max = reference
        .iter()
        .zip(other)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    max / std
}

#[test]
fn greedy_safetensors_and_quantized_agree_within_quantization_error() {
    let m = model();
    let (f32_logits, f32_tokens) = first_logits(m.safetensors.as_ref().unwrap());
    let (q8_logits, q8_tokens) = first_logits(m.gguf_q8_0.as_ref().unwrap());
    let (q4_logits, _) = first_logits(m.gguf_q4_k_m.as_ref().unwrap());
    assert_eq!(f32_logits.len(), FixtureSpec::tiny().vocab_size);
    // Measured on this fixture: Q8_0 moves the largest of the 512 first-step logits by 0.086
    // standard deviations, Q4_K_M by 0.47 (Candle also quantizes the activations to 8 bits in
    // quantized matmuls). The bounds leave ~1.7x room for other CPUs' summation order.
    let q8 = relative_max_diff(&f32_logits, &q8_logits);
    let q4 = relative_max_diff(&f32_logits, &q4_logits);
    eprintln!("first-step logits vs f32: Q8_0 max diff {q8:.4} std, Q4_K_M {q4:.4} std; greedy f32 {f32_tokens:?} Q8_0 {q8_tokens:?}");
    assert!(
        q8 < 0.15,
        "Q8_0 logits differ by {q8} standard deviations (Q4_K_M: {q4})"
    );
    assert!(
        q4 < 0.8,
        "Q4_K_M logits differ by {q4} standard deviations (Q8_0: {q8})"
    );
    assert_eq!(
        f32_tokens[0], q8_tokens[0],
        "greedy first token, f32 vs Q8_0"
    );
}

#[test]
fn stop_token_ends_with_stop_and_max_tokens_with_length() {
    let mut g = load(model().gguf_q8_0.as_ref().unwrap());
    let im_end = g.tokenizer().token_to_id("<|im_end|>").unwrap();
    assert!(
        g.eos_token_ids().contains(&im_end),
        "eos ids {:?}",
        g.eos_token_ids()
    );
    // Force <|im_end|> as the fourth token: the model ends there, with reason "stop".
    let mut hook = |generated: &[u32], logits: &mut [f32]| {
        for (id, l) in logits.iter_mut().enumerate() {
            let is_end = id as u32 == im_end;
            if (generated.len() == 3) != is_end {
                *l = f32::NEG_INFINITY;
            }
        }
    };
    let out = g
        .generate(
            Prompt::Chat {
                messages: &chat(),
                tools: None,
            },
            &sampled(3, 50),
            &mut |_| ControlFlow::Continue(()),
            Some(&mut hook),
        )
        .unwrap();
    assert_eq!(out.finish_reason, FinishReason::Stop);
    assert_eq!(out.completion_tokens, 4);
    assert_eq!(out.tokens[3], im_end);
    assert_eq!(
        out.text,
        g.tokenizer().decode(&out.tokens[..3], true).unwrap()
    );

    let out = run_without_eos(&mut g, &sampled(3, 9));
    assert_eq!(
        (out.finish_reason, out.completion_tokens),
        (FinishReason::Length, 9)
    );
    assert_eq!(out.finish_reason.as_str(), "length");

    // A stop string that is one special token is matched as that token.
    let mut force_end = |generated: &[u32], logits: &mut [f32]| {
        if generated.len() == 2 {
            logits[im_end as usize] = 1e9;
        }
    };
    let opts = GenerateOptions {
        stop: vec!["<|im_end|>".into()],
        ..sampled(5, 20)
    };
    let out = g
        .generate(
            Prompt::Text("hello"),
            &opts,
            &mut |_| ControlFlow::Continue(()),
            Some(&mut force_end),
        )
        .unwrap();
    assert_eq!(
        (out.finish_reason, out.completion_tokens),
        (FinishReason::Stop, 3)
    );
}

#[test]
fn stop_string_cuts_the_text_before_it() {
    let mut g = load(model().gguf_q8_0.as_ref().unwrap());
    let full = run_without_eos(&mut g, &greedy(24));
    let chars: Vec<(usize, char)> = full.text.char_indices().collect();
    assert!(
        chars.len() > 8,
        "greedy text too short to cut: {:?}",
        full.text
    );
    // Three characters from the middle of what the model writes anyway.
    let (start, end) = (
        chars[chars.len() / 2].0,
        chars
            .get(chars.len() / 2 + 3)
            .map_or(full.text.len(), |c| c.0),
    );
    let stop = full.text[start..end].to_string();
    eprintln!("greedy text {:?}, stop string {stop:?}", full.text);
    let expected = &full.text[..full.text.find(&stop).unwrap()];
    let mut streamed = String::new();
    let eos = g.eos_token_ids().to_vec();
    let mut hook = |_: &[u32], logits: &mut [f32]| {
        for &id in &eos {
            logits[id as usize] = f32::NEG_INFINITY;
        }
    };
    let opts = GenerateOptions {
        stop: vec![stop.clone()],
        ..greedy(24)
    };
    let out = g
        .generate(
            Prompt::Chat {
                messages: &chat(),
                tools: None,
            },
            &opts,
            &mut |p| {
                streamed.push_str(p);
                ControlFlow::Continue(())
            },
            Some(&mut hook),
        )
        .unwrap();
    assert_eq!(
        out.finish_reason,
        FinishReason::Stop,
        "stop {stop:?} in {:?}",
        full.text
    );
    assert_eq!(out.text, expected);
    assert_eq!(
        streamed, expected,
        "the stream must not show any part of the stop string"
    );
}

#[test]
fn streamed_pieces_concatenate_to_the_returned_text() {
    let mut g = load(model().safetensors.as_ref().unwrap());
    for seed in [1, 2, 3] {
        let mut pieces: Vec<String> = Vec::new();
        let eos = g.eos_token_ids().to_vec();
        let mut hook = |_: &[u32], logits: &mut [f32]| {
            for &id in &eos {
                logits[id as usize] = f32::NEG_INFINITY;
            }
        };
        let out = g
            .generate(
                Prompt::Text("The quick brown fox"),
                &sampled(seed, 30),
                &mut |p| {
                    pieces.push(p.to_string());
                    ControlFlow::Continue(())
                },
                Some(&mut hook),
            )
            .unwrap();
        assert!(pieces.iter().all(|p| !p.is_empty()));
        assert_eq!(pieces.concat(), out.text);
        assert_eq!(out.text, g.tokenizer().decode(&out.tokens, true).unwrap());
    }
    // Cancelling from the callback ends generation at once.
    let mut n = 0;
    let out = g
        .generate(
            Prompt::Text("The quick brown fox"),
            &greedy(30),
            &mut |_| {
                n += 1;
                if n == 2 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
            None,
        )
        .unwrap();
    assert_eq!(out.finish_reason, FinishReason::Cancelled);
    assert!(out.completion_tokens < 30);
}

#[test]
fn chat_template_renders_the_qwen_prompt() {
    let g = load(model().gguf_q4_k_m.as_ref().unwrap());
    let text = g
        .render_chat(
            &[
                ChatMessage::system("You are terse."),
                ChatMessage::user("What is 2+2?"),
            ],
            None,
        )
        .unwrap();
    assert_eq!(
        text,
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    );
    // Without a system message Qwen2.5's template supplies its default one.
    let text = g.render_chat(&[ChatMessage::user("Hi")], None).unwrap();
    assert!(
        text.starts_with("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud."),
        "{text}"
    );
    // The special tokens are single tokens in the prompt.
    let ids = g
        .encode(Prompt::Chat {
            messages: &[ChatMessage::user("Hi")],
            tools: None,
        })
        .unwrap();
    let im_start = g.tokenizer().token_to_id("<|im_start|>").unwrap();
    assert_eq!(ids[0], im_start);
    assert_eq!(ids.iter().filter(|&&t| t == im_start).count(), 3);
}

/// A copy of the fixture's config and tokenizer files in a fresh directory.
fn copy_of_fixture_files(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in names {
        std::fs::copy(model().dir.join(name), dir.path().join(name)).unwrap();
    }
    dir
}

fn load_err(path: &Path) -> String {
    match Generator::load(
        path,
        &LoadOptions {
            threads: 1,
            weights: None,
        },
    ) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn truncated_weights_are_refused_naming_the_file() {
    let dir = copy_of_fixture_files(&["tokenizer.json", "tokenizer_config.json", "config.json"]);
    let gguf = std::fs::read(model().gguf_q8_0.as_ref().unwrap()).unwrap();
    let cut = dir.path().join("model-q8_0.gguf");
    std::fs::write(&cut, &gguf[..gguf.len() * 2 / 3]).unwrap();
    let err = load_err(&cut);
    assert!(
        err.contains("model-q8_0.gguf") && err.contains("truncated"),
        "{err}"
    );
    // Cut inside the header (metadata) too.
    std::fs::write(&cut, &gguf[..1000]).unwrap();
    let err = load_err(&cut);
    assert!(err.contains("model-q8_0.gguf"), "{err}");

    let st = std::fs::read(model().safetensors.as_ref().unwrap()).unwrap();
    let cut = dir.path().join("model.safetensors");
    std::fs::write(&cut, &st[..st.len() / 2]).unwrap();
    let err = load_err(dir.path());
    assert!(
        err.contains("model.safetensors") && err.contains("corrupt or truncated"),
        "{err}"
    );
}

#[test]
fn unsupported_architecture_and_missing_tokenizer_are_named() {
    let dir = copy_of_fixture_files(&["tokenizer.json", "tokenizer_config.json"]);
    std::fs::copy(
        model().safetensors.as_ref().unwrap(),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let config = serde_json::json!({"architectures": ["MambaForCausalLM"], "model_type": "mamba"});
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let err = load_err(dir.path());
    assert!(
        err.contains("unsupported model architecture") && err.contains("MambaForCausalLM"),
        "{err}"
    );
    assert!(err.contains("config.json"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        model().gguf_q8_0.as_ref().unwrap(),
        dir.path().join("m.gguf"),
    )
    .unwrap();
    let err = load_err(dir.path());
    assert!(
        err.contains("missing tokenizer") && err.contains("tokenizer.json"),
        "{err}"
    );
}

#[test]
fn prompt_longer_than_the_context_is_refused_with_both_lengths() {
    let mut g = load(model().gguf_q8_0.as_ref().unwrap());
    let context = g.context_length();
    let long: Vec<u32> = (0..context as u32 + 5).map(|i| i % 200).collect();
    let err = g
        .generate(
            Prompt::Tokens(&long),
            &greedy(4),
            &mut |_| ControlFlow::Continue(()),
            None,
        )
        .unwrap_err();
    assert!(
        matches!(err, GenerateError::PromptTooLong { prompt_tokens, context: c } if prompt_tokens == context + 5 && c == context)
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&(context + 5).to_string()) && msg.contains(&context.to_string()),
        "{msg}"
    );
    // A prompt that leaves room ends with "length" when the context is full.
    let near: Vec<u32> = (0..context as u32 - 3).map(|i| i % 200).collect();
    let eos = g.eos_token_ids().to_vec();
    let mut no_eos = |_: &[u32], logits: &mut [f32]| {
        for &id in &eos {
            logits[id as usize] = f32::NEG_INFINITY;
        }
    };
    let out = g
        .generate(
            Prompt::Tokens(&near),
            &greedy(50),
            &mut |_| ControlFlow::Continue(()),
            Some(&mut no_eos),
        )
        .unwrap();
    assert_eq!(
        (out.finish_reason, out.completion_tokens),
        (FinishReason::Length, 3)
    );
}
