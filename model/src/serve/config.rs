//! The `[serve]` table of /etc/ghost/model.toml: how `ghost model serve` runs.
//!
//! ```toml
//! [serve]
//! threads = 2                 # inference threads; 0 = one per core (default)
//! listen = "127.0.0.1:8080"   # also serve on this TCP address (default: the Unix socket only)
//! queue = 64                  # most chat requests waiting; more are refused with 503
//! socket = "/run/ghost/model.sock"  # default; under GHOST_ROOT when hosted
//! ```
//!
//! Keys are closed: a typo is an error naming the file and the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::hub::ManifestError;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServeConfig {
    pub threads: usize,
    pub listen: Option<SocketAddr>,
    pub queue: usize,
    pub socket: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
struct RawFile {
    #[serde(default)]
    serve: Option<RawServe>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServe {
    #[serde(default)]
    threads: usize,
    listen: Option<String>,
    queue: Option<usize>,
    socket: Option<PathBuf>,
}

pub const DEFAULT_QUEUE: usize = 64;

impl ServeConfig {
    /// The `[serve]` table of `path`; defaults when the file or the table is absent.
    pub fn load(path: &Path) -> Result<ServeConfig, ManifestError> {
        match std::fs::read_to_string(path) {
            Ok(text) => ServeConfig::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ServeConfig { queue: DEFAULT_QUEUE, ..Default::default() }),
            Err(e) => Err(ManifestError { path: path.to_path_buf(), message: e.to_string() }),
        }
    }

    pub fn parse(text: &str, path: &Path) -> Result<ServeConfig, ManifestError> {
        let err = |message: String| ManifestError { path: path.to_path_buf(), message };
        // Only the [serve] table is read here; the rest belongs to the manifest and the router.
        let value: toml::Table = toml::from_str(text).map_err(|e| err(e.to_string().trim_end().to_string()))?;
        let raw: RawFile = match value.get("serve") {
            None => RawFile::default(),
            Some(t) => {
                let serve = RawServe::deserialize(t.clone()).map_err(|e| err(format!("serve: {}", e.to_string().trim_end())))?;
                RawFile { serve: Some(serve) }
            }
        };
        let Some(s) = raw.serve else { return Ok(ServeConfig { queue: DEFAULT_QUEUE, ..Default::default() }) };
        let listen = match s.listen {
            None => None,
            Some(a) => Some(a.parse::<SocketAddr>().map_err(|e| err(format!("serve.listen: {a:?} is not ADDRESS:PORT ({e})")))?),
        };
        let queue = s.queue.unwrap_or(DEFAULT_QUEUE);
        if queue == 0 {
            return Err(err("serve.queue: must be at least 1".into()));
        }
        Ok(ServeConfig { threads: s.threads, listen, queue, socket: s.socket })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_config_reads_the_table_and_names_bad_keys() {
        let p = Path::new("/etc/ghost/model.toml");
        let c = ServeConfig::parse("[serve]\nthreads = 2\nlisten = \"127.0.0.1:8080\"\n[[model]]\nrepo = \"a/b\"\n", p).unwrap();
        assert_eq!((c.threads, c.listen.unwrap().port(), c.queue), (2, 8080, DEFAULT_QUEUE));
        assert_eq!(ServeConfig::parse("", p).unwrap().queue, DEFAULT_QUEUE);
        let e = ServeConfig::parse("[serve]\nthread = 2\n", p).unwrap_err().to_string();
        assert!(e.contains("/etc/ghost/model.toml") && e.contains("thread"), "{e}");
        let e = ServeConfig::parse("[serve]\nlisten = \"localhost\"\n", p).unwrap_err().to_string();
        assert!(e.contains("serve.listen"), "{e}");
        let e = ServeConfig::parse("[serve]\nqueue = 0\n", p).unwrap_err().to_string();
        assert!(e.contains("serve.queue"), "{e}");
    }
}
