//! `ghost model serve`: the supervised model service. It listens at once (so `/health` can say
//! what it is doing), fetches what model.toml lists that is not in the cache yet (first boot),
//! retrying with backoff while the hub cannot be reached, loads the models, and only then
//! tells the supervisor it is ready (sd_notify). Progress goes to stderr (the service log) and
//! to the supervisor as `STATUS=` lines, which become events the console shows.

use super::local::{self, LocalModels};
use crate::paths::GhostRoot;
use anyhow::Context;
use clap::Args;
use ghost_model::embed::Embedder;
use ghost_model::generate::{Generator, LoadOptions};
use ghost_model::hub::progress::{format_bytes, format_duration, format_line, RateMeter};
use ghost_model::hub::{self, Backoff, ConsoleProgress, HubClient, ModelCache, ModelSpec, Progress, PullOptions};
use ghost_model::serve::{self, AppState, Engine, Notifier, Phase, ServeConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct ServeArgs {
    /// The Unix socket; default /run/ghost/model.sock (under GHOST_ROOT), or [serve] socket.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Also listen on this TCP address (e.g. 127.0.0.1:8080); overrides [serve] listen.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Inference threads; overrides [serve] threads (0: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// The hub for the first-boot download; else HF_ENDPOINT, else https://huggingface.co.
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// First delay between tries while the hub cannot be reached; it doubles up to --retry-max-delay-ms.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    retry_delay_ms: u64,
    #[arg(long, value_name = "MS", default_value_t = 300_000)]
    retry_max_delay_ms: u64,
}

pub fn run(a: ServeArgs, root: &GhostRoot) -> anyhow::Result<ExitCode> {
    let manifest = root.model_toml();
    let models = LocalModels::load(&manifest)?;
    let offline = offline(&manifest)?;
    if models.generate.is_none() && models.embed.is_none() && !offline {
        anyhow::bail!("{} lists no model to serve (role = \"generate\" or \"embed\"; or `offline = true` to run without one)", manifest.display());
    }
    let config = ServeConfig::load(&manifest)?;
    let socket = a.socket.clone().or(config.socket.as_ref().map(|s| root.path(&s.to_string_lossy()))).unwrap_or_else(|| root.path("/run/ghost/model.sock"));
    let listen = a.listen.or(config.listen);
    let threads = a.threads.unwrap_or(config.threads);

    let unix = serve::bind_unix(&socket).with_context(|| format!("binding {}", socket.display()))?;
    let tcp = match listen {
        Some(addr) => Some(std::net::TcpListener::bind(addr).with_context(|| format!("listening on {addr}"))?),
        None => None,
    };
    eprintln!(
        "ghost model serve: listening on {}{}",
        socket.display(),
        tcp.as_ref().and_then(|t| t.local_addr().ok()).map(|a| format!(" and http://{a}")).unwrap_or_default()
    );
    let state = AppState::new(models.generate.as_ref().map(|s| s.repo.clone()), models.embed.as_ref().map(|s| s.repo.clone()));
    let engine = Engine::new(config.queue);
    let notifier = Arc::new(Notifier::from_env());

    let bring_up = BringUp {
        root: root.clone(),
        manifest,
        models,
        threads,
        endpoint: hub::endpoint_from(a.endpoint.as_deref(), std::env::var("HF_ENDPOINT").ok().as_deref()),
        retry: Backoff { retries: u32::MAX, base: Duration::from_millis(a.retry_delay_ms.max(1)), max: Duration::from_millis(a.retry_max_delay_ms.max(1)) },
        state: state.clone(),
        engine: engine.clone(),
        notifier: notifier.clone(),
    };
    std::thread::Builder::new().name("bring-up".into()).spawn(move || bring_up.run())?;

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let stopping = notifier.clone();
    let stop_engine = engine.clone();
    runtime.block_on(serve::serve(state, unix, tcp, async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("installing a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        eprintln!("ghost model serve: stopping");
        stopping.send("STOPPING=1");
        stop_engine.shut_down();
    }))?;
    let _ = std::fs::remove_file(&socket);
    // Open streams were ended; the worker may still be inside a token. Don't wait for it.
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(ExitCode::SUCCESS)
}

struct BringUp {
    root: GhostRoot,
    manifest: PathBuf,
    models: LocalModels,
    threads: usize,
    endpoint: String,
    retry: Backoff,
    state: Arc<AppState>,
    engine: Arc<Engine>,
    notifier: Arc<Notifier>,
}

impl BringUp {
    fn run(self) {
        let cache = ModelCache::new(self.root.models_dir());
        for spec in self.models.specs() {
            if local::snapshot_dir(&cache, spec).is_none() {
                self.fetch(&cache, spec);
            }
        }
        let mut loaded = Vec::new();
        if let Some(spec) = &self.models.generate {
            let what = format!("loading {}", spec.repo);
            self.say(&what);
            self.state.set_phase(Phase::Loading(what));
            let started = Instant::now();
            let result = local::generate_paths(&cache, &self.models, &self.manifest).and_then(|(weights, tokenizer)| {
                Generator::load_with_tokenizer(&weights, tokenizer.as_deref(), &LoadOptions { threads: self.threads, weights: None, candle_only: false }).map_err(anyhow::Error::from)
            });
            match result {
                Ok(g) => {
                    eprintln!(
                        "ghost model serve: loaded {} ({:?}, {:?}, engine {}, context {}) in {:.1} s on {} threads",
                        g.weights_path().display(),
                        g.architecture(),
                        g.format(),
                        g.engine(),
                        g.context_length(),
                        started.elapsed().as_secs_f64(),
                        g.threads()
                    );
                    let engine = self.engine.clone();
                    if let Err(e) = std::thread::Builder::new().name("generate".into()).spawn(move || serve::worker::run(engine, g)) {
                        return self.fail(&format!("cannot start the generation thread: {e}"));
                    }
                    self.state.set_engine(self.engine.clone());
                    loaded.push(spec.repo.clone());
                }
                Err(e) => return self.fail(&format!("{}: {e:#}", spec.repo)),
            }
        }
        if let Some(spec) = &self.models.embed {
            self.say(&format!("loading {}", spec.repo));
            let result = local::embed_dir(&cache, &self.models, &self.manifest).and_then(|dir| Embedder::load(&dir).map_err(anyhow::Error::from));
            match result {
                Ok(e) => {
                    self.state.set_embedder(Arc::new(e));
                    loaded.push(spec.repo.clone());
                }
                Err(e) => return self.fail(&format!("{}: {e:#}", spec.repo)),
            }
        }
        self.state.set_phase(Phase::Ready);
        let line = if loaded.is_empty() {
            format!("offline: {} lists no model (offline = true); requests are answered that none is configured", self.manifest.display())
        } else {
            format!("serving {}", loaded.join(" and "))
        };
        eprintln!("ghost model serve: {line}");
        self.notifier.ready(&line);
    }

    fn say(&self, line: &str) {
        eprintln!("ghost model serve: {line}");
        self.notifier.status(line);
    }

    fn fail(&self, reason: &str) {
        eprintln!("ghost model serve: cannot serve: {reason}");
        self.notifier.status(&format!("failed: {reason}"));
        self.state.set_phase(Phase::Failed(reason.to_string()));
    }

    /// Pulls `spec` until it is in the cache, however long the hub stays away.
    fn fetch(&self, cache: &ModelCache, spec: &ModelSpec) {
        let token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty());
        let client = HubClient::new(&self.endpoint, Duration::from_secs(30), token);
        // Within one pull: a few quick retries (a dropped connection resumes at once); across
        // pulls: the service's own backoff, without end.
        let opts = PullOptions { backoff: Backoff { retries: 3, base: Duration::from_millis(500), max: Duration::from_secs(5) }, now_unix: hub::pull::now_unix() };
        let mut delay = self.retry.base;
        for attempt in 1u64.. {
            let what = format!("downloading {}@{} from {}", spec.repo, spec.revision, self.endpoint);
            self.say(&what);
            self.state.set_phase(Phase::Downloading(what));
            let mut progress = ServiceProgress::new(&self.state, &self.notifier, &spec.repo);
            match hub::pull(&client, cache, spec, &opts, &mut progress) {
                Ok(r) => {
                    let total: u64 = r.files.iter().map(|f| f.size).sum();
                    self.say(&format!("pulled {}@{} ({}, verified)", r.repo, r.commit, format_bytes(total)));
                    return;
                }
                Err(e) => {
                    let line = format!("waiting for the hub (try {attempt}): {e}; next try in {}", format_duration(delay.as_secs().max(1)));
                    self.say(&line);
                    self.state.set_phase(Phase::Downloading(line));
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(self.retry.max);
                }
            }
        }
    }
}

/// Progress of the first-boot download: lines in the log like `ghost model pull`, and at most
/// one `STATUS=` a second to the supervisor and to /health.
struct ServiceProgress<'a> {
    console: ConsoleProgress,
    state: &'a AppState,
    notifier: &'a Notifier,
    repo: String,
    meter: RateMeter,
    file: String,
    last: Option<Instant>,
}

impl<'a> ServiceProgress<'a> {
    fn new(state: &'a AppState, notifier: &'a Notifier, repo: &str) -> Self {
        ServiceProgress {
            console: ConsoleProgress::for_stderr(),
            state,
            notifier,
            repo: repo.to_string(),
            meter: RateMeter::new(Duration::from_secs(5)),
            file: String::new(),
            last: None,
        }
    }

    fn publish(&self, line: String) {
        self.notifier.status(&line);
        self.state.set_phase(Phase::Downloading(line));
    }
}

impl Progress for ServiceProgress<'_> {
    fn note(&mut self, line: &str) {
        self.console.note(line);
        self.notifier.status(&format!("{}: {line}", self.repo));
    }

    fn bytes(&mut self, file: &str, done: u64, total: u64) {
        self.console.bytes(file, done, total);
        let now = Instant::now();
        if self.file != file {
            self.file = file.to_string();
            self.meter.reset();
        }
        self.meter.update(now, done);
        if self.last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) && done < total {
            return;
        }
        self.last = Some(now);
        self.publish(format!("downloading {}: {}", self.repo, format_line(file, done, total, self.meter.rate())));
    }

    fn finished(&mut self, file: &str, total: u64) {
        self.console.finished(file, total);
        self.publish(format!("downloading {}: {file} {} verified", self.repo, format_bytes(total)));
    }
}

/// model.toml's top-level `offline = true`: the operator chose no model (the first-boot
/// wizard's "no model, stay offline"); the server then fetches and loads nothing and stays up,
/// so that the service does not crash-loop.
fn offline(manifest: &std::path::Path) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("{}", manifest.display()))?;
    match table.get("offline") {
        None => Ok(false),
        Some(toml::Value::Boolean(b)) => Ok(*b),
        Some(other) => anyhow::bail!("{}: offline: expected true or false, found {}", manifest.display(), other.type_str()),
    }
}
