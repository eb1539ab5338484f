//! The `[router]` table of `/etc/ghost/model.toml`.
//!
//! ```toml
//! [router.operational]             # the local model server (ghost model serve)
//! socket = "/run/ghost/model.sock" # or url = "http://127.0.0.1:8080"; default: that socket
//! model = "local"                  # the model name sent in requests; default "local"
//! timeout_s = 120                  # whole request, connect to last byte; default 120
//!
//! [router.tactical]                # optional: a larger local model server, socket or url
//! url = "http://127.0.0.1:8081"
//!
//! [router.strategic]               # optional: a remote API
//! api = "openai"                   # openai (any OpenAI-compatible API) | anthropic
//! url = "https://api.example.com/v1"   # default https://api.openai.com/v1 or https://api.anthropic.com/v1
//! model = "gpt-4o-mini"
//! api_key_file = "/etc/ghost/keys/strategic"
//! daily_tokens = 200000            # per UTC day, prompt and completion together
//! daily_usd = 1.0                  # per UTC day
//! usd_per_million_input = 0.15
//! usd_per_million_output = 0.60
//! timeout_s = 60                   # default 60
//! ```
//!
//! Keys are closed: an unknown key, a wrong type or a bad value is an error naming the file and
//! the key (`/etc/ghost/model.toml: router.strategic.daily_usd: …`). The strategic layer's
//! model, key file, both daily limits and both prices are required: a remote API without a
//! budget is not configured by accident. The key file is read here; a missing, unreadable or
//! empty file is an error naming it. The key itself never appears in an error or a `Debug`.
//!
//! Paths in the file (`socket`, `api_key_file`) are paths of the running system; the caller
//! maps them (`GHOST_ROOT` in hosted mode) with the `resolve` function it passes.
//! Other top-level tables of model.toml (`[[model]]`, …) belong to other modules.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the operational layer's server listens when model.toml does not say.
pub const DEFAULT_SOCKET: &str = "/run/ghost/model.sock";

#[derive(Debug, Clone, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// The configuration file (model.toml).
    pub path: PathBuf,
    pub message: String,
}

impl ConfigError {
    fn new(path: &Path, message: String) -> ConfigError {
        ConfigError { path: path.to_path_buf(), message }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouterConfig {
    /// Always there: the local model server (by default on its usual socket).
    pub operational: LocalLayer,
    pub tactical: Option<LocalLayer>,
    pub strategic: Option<StrategicLayer>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalEndpoint {
    /// An HTTP server on a Unix socket; requests go to `/v1/chat/completions` on it.
    Socket(PathBuf),
    /// `http(s)://HOST[:PORT][/PATH]`; requests go to `{url}/v1/chat/completions`.
    Url(String),
}

impl fmt::Display for LocalEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            LocalEndpoint::Socket(p) => write!(f, "unix:{}", p.display()),
            LocalEndpoint::Url(u) => f.write_str(u),
        }
    }
}

/// A local model server (operational or tactical).
#[derive(Debug, Clone, PartialEq)]
pub struct LocalLayer {
    pub endpoint: LocalEndpoint,
    pub model: String,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    OpenAi,
    Anthropic,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::OpenAi => "openai",
            Api::Anthropic => "anthropic",
        }
    }
}

/// A remote API with its key and its daily budget.
#[derive(Debug, Clone, PartialEq)]
pub struct StrategicLayer {
    pub api: Api,
    /// Base URL without a trailing slash (`…/v1`).
    pub url: String,
    pub model: String,
    pub api_key_file: PathBuf,
    pub api_key: ApiKey,
    pub daily_tokens: u64,
    pub daily_usd: f64,
    pub usd_per_million_input: f64,
    pub usd_per_million_output: f64,
    pub timeout: Duration,
}

/// An API key: printed as `[redacted]`, compared and cloned like a string.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// A key given in code (tests, or a caller with its own secret store). Rejects what cannot
    /// go into an HTTP header.
    pub fn new(key: &str) -> Result<ApiKey, String> {
        let k = key.trim();
        if k.is_empty() {
            return Err("the key is empty".into());
        }
        if k.chars().any(|c| c.is_control() || !c.is_ascii()) {
            return Err("the key has a line break, a control character or a non-ASCII character in it".into());
        }
        Ok(ApiKey(k.to_string()))
    }

    /// The key itself, for the request header only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl RouterConfig {
    /// No `[router]` table: the operational layer on its usual socket, nothing else.
    pub fn local_only(resolve: &dyn Fn(&Path) -> PathBuf) -> RouterConfig {
        RouterConfig { operational: default_operational(resolve), tactical: None, strategic: None }
    }

    /// Reads model.toml; see [`RouterConfig::parse`].
    pub fn load(path: &Path, resolve: &dyn Fn(&Path) -> PathBuf) -> Result<RouterConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::new(path, format!("cannot read: {e}")))?;
        RouterConfig::parse(&text, path, resolve)
    }

    /// Parses the `[router]` table of model.toml text (`path` names the file in errors) and
    /// reads the strategic layer's key file. `resolve` maps a path of the running system to
    /// where it is (identity unless the system runs under a root directory).
    pub fn parse(text: &str, path: &Path, resolve: &dyn Fn(&Path) -> PathBuf) -> Result<RouterConfig, ConfigError> {
        let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::new(path, e.to_string().trim_end().to_string()))?;
        let Some(router) = doc.get("router") else { return Ok(RouterConfig::local_only(resolve)) };
        let router = Fields::top(router, "router", path)?;
        router.closed(&["operational", "tactical", "strategic"])?;
        let operational = match router.table("operational")? {
            Some(t) => local_layer(&t, resolve)?.unwrap_or_else(|(model, timeout)| LocalLayer {
                endpoint: LocalEndpoint::Socket(resolve(Path::new(DEFAULT_SOCKET))),
                model,
                timeout,
            }),
            None => default_operational(resolve),
        };
        let tactical = match router.table("tactical")? {
            Some(t) => Some(local_layer(&t, resolve)?.map_err(|_| t.err_table("needs `socket` or `url`"))?),
            None => None,
        };
        let strategic = match router.table("strategic")? {
            Some(t) => Some(strategic_layer(&t, resolve)?),
            None => None,
        };
        Ok(RouterConfig { operational, tactical, strategic })
    }
}

fn default_operational(resolve: &dyn Fn(&Path) -> PathBuf) -> LocalLayer {
    LocalLayer { endpoint: LocalEndpoint::Socket(resolve(Path::new(DEFAULT_SOCKET))), model: "local".into(), timeout: Duration::from_secs(120) }
}

/// A local layer's table; `Err((model, timeout))` when it names neither a socket nor a url.
#[allow(clippy::type_complexity)]
fn local_layer(t: &Fields, resolve: &dyn Fn(&Path) -> PathBuf) -> Result<Result<LocalLayer, (String, Duration)>, ConfigError> {
    t.closed(&["socket", "url", "model", "timeout_s"])?;
    let model = t.string("model")?.unwrap_or_else(|| "local".into());
    let timeout = t.timeout("timeout_s", 120)?;
    let endpoint = match (t.string("socket")?, t.string("url")?) {
        (Some(_), Some(_)) => return Err(t.err("url", "give `socket` or `url`, not both".into())),
        (Some(s), None) => {
            if !s.starts_with('/') {
                return Err(t.err("socket", format!("{s:?} is not an absolute path")));
            }
            LocalEndpoint::Socket(resolve(Path::new(&s)))
        }
        (None, Some(u)) => LocalEndpoint::Url(t.url("url", &u)?),
        (None, None) => return Ok(Err((model, timeout))),
    };
    Ok(Ok(LocalLayer { endpoint, model, timeout }))
}

fn strategic_layer(t: &Fields, resolve: &dyn Fn(&Path) -> PathBuf) -> Result<StrategicLayer, ConfigError> {
    t.closed(&["api", "url", "model", "api_key_file", "daily_tokens", "daily_usd", "usd_per_million_input", "usd_per_million_output", "timeout_s"])?;
    let api = match t.string("api")?.as_deref() {
        None | Some("openai") => Api::OpenAi,
        Some("anthropic") => Api::Anthropic,
        Some(other) => return Err(t.err("api", format!("{other:?} is not an API this router speaks (openai or anthropic)"))),
    };
    let url = match t.string("url")? {
        Some(u) => t.url("url", &u)?,
        None => match api {
            Api::OpenAi => "https://api.openai.com/v1".into(),
            Api::Anthropic => "https://api.anthropic.com/v1".into(),
        },
    };
    let model = t.required(t.string("model")?, "model", "the model to ask for")?;
    let daily_tokens = t.required(t.u64("daily_tokens")?, "daily_tokens", "the most tokens a UTC day may use")?;
    let daily_usd = t.required(t.money("daily_usd")?, "daily_usd", "the most US dollars a UTC day may cost")?;
    let usd_per_million_input = t.required(t.money("usd_per_million_input")?, "usd_per_million_input", "the price of a million prompt tokens")?;
    let usd_per_million_output = t.required(t.money("usd_per_million_output")?, "usd_per_million_output", "the price of a million completion tokens")?;
    let timeout = t.timeout("timeout_s", 60)?;
    let key_file = t.required(t.string("api_key_file")?, "api_key_file", "the file that holds the API key")?;
    if !key_file.starts_with('/') {
        return Err(t.err("api_key_file", format!("{key_file:?} is not an absolute path")));
    }
    let api_key_file = resolve(Path::new(&key_file));
    let bytes = std::fs::read(&api_key_file).map_err(|e| t.err("api_key_file", format!("cannot read {}: {e}", api_key_file.display())))?;
    let text = String::from_utf8(bytes).map_err(|_| t.err("api_key_file", format!("{} is not text", api_key_file.display())))?;
    let api_key = ApiKey::new(&text).map_err(|e| t.err("api_key_file", format!("{}: {e}", api_key_file.display())))?;
    Ok(StrategicLayer { api, url, model, api_key_file, api_key, daily_tokens, daily_usd, usd_per_million_input, usd_per_million_output, timeout })
}

/// One table of the configuration with its dotted name, for errors that name the key.
struct Fields<'a> {
    table: &'a toml::Table,
    name: String,
    file: &'a Path,
}

impl<'a> Fields<'a> {
    fn top(v: &'a toml::Value, name: &str, file: &'a Path) -> Result<Fields<'a>, ConfigError> {
        match v {
            toml::Value::Table(table) => Ok(Fields { table, name: name.to_string(), file }),
            other => Err(ConfigError::new(file, format!("{name}: expected a table, found {}", describe(other)))),
        }
    }

    fn err(&self, key: &str, message: String) -> ConfigError {
        ConfigError::new(self.file, format!("{}.{key}: {message}", self.name))
    }

    fn err_table(&self, message: &str) -> ConfigError {
        ConfigError::new(self.file, format!("{}: {message}", self.name))
    }

    /// Every key of the table is one of `known`.
    fn closed(&self, known: &[&str]) -> Result<(), ConfigError> {
        match self.table.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(self.err(k, format!("unknown key (expected one of: {})", known.join(", ")))),
            None => Ok(()),
        }
    }

    fn table(&self, key: &str) -> Result<Option<Fields<'a>>, ConfigError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(v) => Fields::top(v, &format!("{}.{key}", self.name), self.file).map(Some),
        }
    }

    fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) if s.trim().is_empty() => Err(self.err(key, "is empty".into())),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.err(key, format!("expected a string, found {}", describe(other)))),
        }
    }

    fn u64(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::Integer(i)) if *i >= 0 => Ok(Some(*i as u64)),
            Some(toml::Value::Integer(i)) => Err(self.err(key, format!("{i} is negative"))),
            Some(other) => Err(self.err(key, format!("expected a whole number, found {}", describe(other)))),
        }
    }

    /// A non-negative amount of US dollars (integer or float), below a billion.
    fn money(&self, key: &str) -> Result<Option<f64>, ConfigError> {
        let v = match self.table.get(key) {
            None => return Ok(None),
            Some(toml::Value::Integer(i)) => *i as f64,
            Some(toml::Value::Float(f)) => *f,
            Some(other) => return Err(self.err(key, format!("expected a number, found {}", describe(other)))),
        };
        if !v.is_finite() || !(0.0..1e9).contains(&v) {
            return Err(self.err(key, format!("{v} is not an amount from 0 to 1e9")));
        }
        Ok(Some(v))
    }

    fn timeout(&self, key: &str, default: u64) -> Result<Duration, ConfigError> {
        match self.u64(key)? {
            None => Ok(Duration::from_secs(default)),
            Some(s) if (1..=3600).contains(&s) => Ok(Duration::from_secs(s)),
            Some(s) => Err(self.err(key, format!("{s} is not 1 to 3600 seconds"))),
        }
    }

    fn url(&self, key: &str, u: &str) -> Result<String, ConfigError> {
        let rest = u.strip_prefix("http://").or_else(|| u.strip_prefix("https://"));
        match rest {
            Some(r) if !r.is_empty() && !r.starts_with('/') && !u.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                Ok(u.trim_end_matches('/').to_string())
            }
            _ => Err(self.err(key, format!("{u:?} is not an http:// or https:// URL"))),
        }
    }

    fn required<T>(&self, v: Option<T>, key: &str, what: &str) -> Result<T, ConfigError> {
        v.ok_or_else(|| self.err(key, format!("missing: {what}")))
    }
}

fn describe(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("string {s:?}"),
        toml::Value::Integer(i) => format!("integer {i}"),
        toml::Value::Float(f) => format!("float {f}"),
        toml::Value::Boolean(b) => format!("boolean {b}"),
        toml::Value::Datetime(d) => format!("datetime {d}"),
        toml::Value::Array(_) => "an array".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/etc/ghost/model.toml";

    fn keydir() -> tempfile_lite::Dir {
        let d = tempfile_lite::Dir::new("router-config");
        std::fs::write(d.path().join("key"), "sk-test-123\n").unwrap();
        std::fs::write(d.path().join("empty"), "  \n").unwrap();
        d
    }

    fn parse_in(dir: &Path, text: &str) -> Result<RouterConfig, String> {
        let root = dir.to_path_buf();
        let resolve = move |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
        RouterConfig::parse(text, Path::new(FILE), &resolve).map_err(|e| e.to_string())
    }

    const STRATEGIC: &str = r#"
[router.strategic]
api = "anthropic"
model = "claude-x"
api_key_file = "/key"
daily_tokens = 1000
daily_usd = 2
usd_per_million_input = 3.0
usd_per_million_output = 15.0
"#;

    #[test]
    fn router_config_defaults_and_full_table() {
        let d = keydir();
        let c = parse_in(d.path(), "[[model]]\nrepo = \"a/b\"\n").unwrap();
        assert_eq!(c.operational.endpoint, LocalEndpoint::Socket(d.path().join("run/ghost/model.sock")));
        assert_eq!(c.operational.model, "local");
        assert!(c.tactical.is_none() && c.strategic.is_none());

        let c = parse_in(
            d.path(),
            &format!("[router.operational]\nmodel = \"qwen\"\n[router.tactical]\nurl = \"http://127.0.0.1:8081/\"\ntimeout_s = 5\n{STRATEGIC}"),
        )
        .unwrap();
        assert_eq!(c.operational.model, "qwen");
        assert!(matches!(c.operational.endpoint, LocalEndpoint::Socket(_)));
        let t = c.tactical.unwrap();
        assert_eq!(t.endpoint, LocalEndpoint::Url("http://127.0.0.1:8081".into()));
        assert_eq!(t.timeout, Duration::from_secs(5));
        let s = c.strategic.unwrap();
        assert_eq!(s.api, Api::Anthropic);
        assert_eq!(s.url, "https://api.anthropic.com/v1");
        assert_eq!(s.api_key.expose(), "sk-test-123", "the key is trimmed");
        assert_eq!(s.daily_usd, 2.0);
        assert_eq!(s.timeout, Duration::from_secs(60));
        assert!(!format!("{s:?}").contains("sk-test"), "Debug never shows the key");
    }

    #[test]
    fn router_config_errors_name_the_file_and_the_key() {
        let d = keydir();
        let cases: Vec<(String, &str)> = vec![
            ("[router]\noperational = 3\n".into(), "router.operational: expected a table, found integer 3"),
            ("[router.operatonal]\nmodel = \"x\"\n".into(), "router.operatonal: unknown key"),
            ("[router.operational]\nsocket = \"/a\"\nurl = \"http://x\"\n".into(), "router.operational.url: give `socket` or `url`"),
            ("[router.operational]\nsocket = \"run/x.sock\"\n".into(), "router.operational.socket: \"run/x.sock\" is not an absolute path"),
            ("[router.tactical]\nmodel = \"big\"\n".into(), "router.tactical: needs `socket` or `url`"),
            ("[router.tactical]\nurl = \"ftp://x\"\n".into(), "router.tactical.url: \"ftp://x\" is not an http"),
            ("[router.tactical]\nurl = \"http://x\"\ntimeout_s = 0\n".into(), "router.tactical.timeout_s: 0 is not 1 to 3600"),
            (STRATEGIC.replace("daily_usd = 2", "daily_usd = \"2\""), "router.strategic.daily_usd: expected a number, found string \"2\""),
            (STRATEGIC.replace("daily_tokens = 1000", "daily_tokens = -1"), "router.strategic.daily_tokens: -1 is negative"),
            (STRATEGIC.replace("daily_tokens = 1000\n", ""), "router.strategic.daily_tokens: missing"),
            (STRATEGIC.replace("api = \"anthropic\"", "api = \"gemini\""), "router.strategic.api: \"gemini\" is not an API"),
            (STRATEGIC.replace("model = ", "modle = "), "router.strategic.modle: unknown key"),
            (STRATEGIC.replace("/key", "/nope"), "router.strategic.api_key_file: cannot read "),
            (STRATEGIC.replace("/key", "/empty"), "router.strategic.api_key_file: "),
            (STRATEGIC.replace("/key", "key"), "router.strategic.api_key_file: \"key\" is not an absolute path"),
            ("[router\n".into(), "TOML parse error"),
        ];
        for (text, needle) in cases {
            let e = parse_in(d.path(), &text).expect_err(&text);
            assert!(e.starts_with(&format!("{FILE}: ")), "{e}");
            assert!(e.contains(needle), "{text:?}:\n{e}\nshould contain {needle:?}");
        }
        let e = parse_in(d.path(), &STRATEGIC.replace("/key", "/nope")).unwrap_err();
        assert!(e.contains(&d.path().join("nope").display().to_string()), "the key file is named: {e}");
        let e = parse_in(d.path(), &STRATEGIC.replace("/key", "/empty")).unwrap_err();
        assert!(e.contains("empty") && e.contains(&d.path().join("empty").display().to_string()), "{e}");
    }

    #[test]
    fn router_config_key_must_fit_a_header() {
        assert!(ApiKey::new("a\nb").is_err());
        assert!(ApiKey::new("").is_err());
        assert_eq!(ApiKey::new(" k \n").unwrap().expose(), "k");
    }
}

/// A temporary directory for unit tests (the crate has no tempfile dependency).
#[cfg(test)]
pub(crate) mod tempfile_lite {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, Ordering};

    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new(tag: &str) -> Dir {
            static N: AtomicU64 = AtomicU64::new(0);
            let p = std::env::temp_dir().join(format!("ghost-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
