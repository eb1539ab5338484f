//! The hub's HTTP protocol, the requests hf-hub and `huggingface_hub` make:
//!
//! - `GET  {endpoint}/api/models/{repo}/revision/{rev}` → JSON with `sha` (the commit) and
//!   `siblings[].rfilename` (the files);
//! - `HEAD {endpoint}/{repo}/resolve/{commit}/{file}` without following the redirect: for LFS
//!   files the hub answers 302 to its CDN, and the metadata is on that 302 (`X-Linked-Etag` =
//!   sha256, `X-Linked-Size`, `X-Repo-Commit`); small git files answer 200 with `ETag` = git
//!   blob sha1;
//! - `GET` of the same URL, following redirects, with `Range: bytes=N-` to resume.
//!
//! Errors carry the hub's `X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound) when
//! it sends one; the hub answers 401 rather than 404 for a repo that does not exist.

use super::error::PullError;
use std::io::Read;
use std::time::Duration;

type Response = ureq::http::Response<ureq::Body>;

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The endpoint: `--endpoint`, else `HF_ENDPOINT`, else the public hub.
pub fn endpoint_from(flag: Option<&str>, env: Option<&str>) -> String {
    let e = flag.filter(|s| !s.is_empty()).or(env.filter(|s| !s.is_empty())).unwrap_or(DEFAULT_ENDPOINT);
    e.trim_end_matches('/').to_string()
}

/// What `GET /api/models/{repo}/revision/{rev}` says about a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoInfo {
    pub commit: String,
    pub files: Vec<String>,
}

/// What `HEAD …/resolve/…` says about one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    /// Blob name in the cache: the LFS sha256 or the git blob sha1.
    pub etag: String,
    /// The sha256 the hub announces (LFS files only).
    pub sha256: Option<String>,
    pub size: u64,
    pub commit: Option<String>,
}

/// A download response: the body starts at byte `start` of the file.
pub struct Body {
    pub start: u64,
    pub reader: Box<dyn Read + Send>,
    pub url: String,
}

pub struct HubClient {
    endpoint: String,
    agent: ureq::Agent,
    token: Option<String>,
}

impl HubClient {
    /// `read_timeout` bounds each socket read, so a hub that stops sending mid-body is noticed
    /// (and retried) instead of hanging the pull forever.
    pub fn new(endpoint: &str, read_timeout: Duration, token: Option<String>) -> HubClient {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(read_timeout))
            .user_agent(concat!("ghost/", env!("CARGO_PKG_VERSION"), "; hf_hub-compatible"))
            .build()
            .into();
        HubClient { endpoint: endpoint.trim_end_matches('/').to_string(), agent, token }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn repo_info(&self, repo: &str, revision: &str) -> Result<RepoInfo, PullError> {
        let url = format!("{}/api/models/{repo}/revision/{}", self.endpoint, encode_segment(revision));
        let mut resp = self.send(self.agent.get(&url).header("Accept", "application/json"), &url)?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(self.status_error(&resp, &url, repo, revision, None));
        }
        let text = resp.body_mut().with_config().limit(64 << 20).read_to_string().map_err(|e| transport(&url, e))?;
        parse_repo_info(&text).map_err(|message| PullError::Protocol { url, message })
    }

    pub fn file_meta(&self, repo: &str, commit: &str, file: &str) -> Result<FileMeta, PullError> {
        let url = self.resolve_url(repo, commit, file);
        // The metadata of an LFS file is on the hub's 302, not on the CDN's answer.
        let req = self.agent.head(&url).header("Accept-Encoding", "identity").config().max_redirects(0).build();
        let resp = self.send(req, &url)?;
        let status = resp.status().as_u16();
        if !(200..400).contains(&status) {
            return Err(self.status_error(&resp, &url, repo, commit, Some(file)));
        }
        let h = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        parse_file_meta(h("x-linked-etag"), h("etag"), h("x-linked-size"), h("content-length"), h("x-repo-commit"))
            .map_err(|message| PullError::Protocol { url, message })
    }

    /// Starts the download of `file` from byte `from` (a Range request when `from > 0`).
    pub fn download(&self, repo: &str, commit: &str, file: &str, from: u64) -> Result<Body, PullError> {
        let url = self.resolve_url(repo, commit, file);
        let mut req = self.agent.get(&url).header("Accept-Encoding", "identity");
        if from > 0 {
            req = req.header("Range", &format!("bytes={from}-"));
        }
        let resp = self.send(req, &url)?;
        let status = resp.status().as_u16();
        let start = match status {
            200 => 0,
            206 => {
                let cr = resp.headers().get("content-range").and_then(|v| v.to_str().ok()).unwrap_or("");
                parse_content_range_start(cr).ok_or_else(|| PullError::Protocol { url: url.clone(), message: format!("206 with Content-Range {cr:?}") })?
            }
            _ => return Err(self.status_error(&resp, &url, repo, commit, Some(file))),
        };
        if status == 206 && start != from {
            return Err(PullError::Protocol { url, message: format!("asked for bytes from {from}, got a range from {start}") });
        }
        Ok(Body { start, reader: Box::new(resp.into_body().into_reader()), url })
    }

    fn resolve_url(&self, repo: &str, commit: &str, file: &str) -> String {
        let path: Vec<String> = file.split('/').map(encode_segment).collect();
        format!("{}/{repo}/resolve/{}/{}", self.endpoint, encode_segment(commit), path.join("/"))
    }

    fn send(&self, mut req: ureq::RequestBuilder<ureq::typestate::WithoutBody>, url: &str) -> Result<Response, PullError> {
        if let Some(t) = &self.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        req.call().map_err(|e| transport(url, e))
    }

    fn status_error(&self, resp: &Response, url: &str, repo: &str, revision: &str, file: Option<&str>) -> PullError {
        let status = resp.status().as_u16();
        let code = resp.headers().get("x-error-code").and_then(|v| v.to_str().ok()).unwrap_or("");
        let message = resp.headers().get("x-error-message").and_then(|v| v.to_str().ok()).unwrap_or("");
        let endpoint = self.endpoint.clone();
        let (repo, revision) = (repo.to_string(), revision.to_string());
        match (status, code, file) {
            (401 | 404, "RepoNotFound", _) => PullError::RepoNotFound { repo, endpoint },
            (404, "RevisionNotFound", _) => PullError::RevisionNotFound { repo, revision, endpoint },
            (404, _, Some(f)) => PullError::FileNotFound { repo, revision, file: f.to_string(), endpoint },
            (404, _, None) => PullError::RepoNotFound { repo, endpoint },
            _ => PullError::Http {
                url: url.to_string(),
                status,
                detail: if message.is_empty() { String::new() } else { format!(" ({message})") },
            },
        }
    }
}

fn transport(url: &str, e: impl std::fmt::Display) -> PullError {
    PullError::Transport { url: url.to_string(), message: e.to_string() }
}

fn parse_repo_info(text: &str) -> Result<RepoInfo, String> {
    #[derive(serde::Deserialize)]
    struct Sibling {
        rfilename: String,
    }
    #[derive(serde::Deserialize)]
    struct Info {
        sha: Option<String>,
        #[serde(default)]
        siblings: Vec<Sibling>,
    }
    let info: Info = serde_json::from_str(text).map_err(|e| format!("repo info is not the hub's JSON: {e}"))?;
    let commit = info.sha.ok_or("repo info has no commit sha")?;
    if !super::cache::is_commit_hash(&commit) {
        return Err(format!("repo info's sha {commit:?} is not a commit hash"));
    }
    Ok(RepoInfo { commit, files: info.siblings.into_iter().map(|s| s.rfilename).collect() })
}

/// `"abc"`, `W/"abc"` → `abc`.
pub fn normalize_etag(raw: &str) -> String {
    raw.trim().trim_start_matches("W/").trim_matches('"').to_string()
}

fn parse_file_meta(linked_etag: Option<String>, etag: Option<String>, linked_size: Option<String>, content_length: Option<String>, commit: Option<String>) -> Result<FileMeta, String> {
    let linked = linked_etag.map(|e| normalize_etag(&e));
    let etag = linked.clone().or(etag.map(|e| normalize_etag(&e))).filter(|e| !e.is_empty()).ok_or("no ETag header")?;
    if etag.contains(['/', '\\', '.']) || etag.len() > 128 {
        return Err(format!("ETag {etag:?} cannot name a blob"));
    }
    let size_text = linked_size.or(content_length).ok_or("no X-Linked-Size or Content-Length header")?;
    let size = size_text.trim().parse::<u64>().map_err(|_| format!("file size {size_text:?} is not a number"))?;
    let sha256 = linked.filter(|e| super::manifest::is_sha256_hex(e));
    Ok(FileMeta { etag, sha256, size, commit: commit.map(|c| c.trim().to_string()) })
}

/// `bytes 100-199/200` → 100.
pub fn parse_content_range_start(v: &str) -> Option<u64> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, _total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    start.trim().parse().ok()
}

/// Percent-encodes one URL path segment (RFC 3986 unreserved characters stay).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_client_endpoint_precedence() {
        assert_eq!(endpoint_from(Some("http://127.0.0.1:9/"), Some("http://env")), "http://127.0.0.1:9");
        assert_eq!(endpoint_from(None, Some("http://env/")), "http://env");
        assert_eq!(endpoint_from(None, Some("")), DEFAULT_ENDPOINT);
        assert_eq!(endpoint_from(None, None), DEFAULT_ENDPOINT);
    }

    #[test]
    fn hub_client_file_meta_prefers_lfs_headers() {
        let sha = "a".repeat(64);
        let m = parse_file_meta(Some(format!("\"{sha}\"")), Some("\"gitsha\"".into()), Some("1048576".into()), Some("1111".into()), Some("c".repeat(40))).unwrap();
        assert_eq!(m, FileMeta { etag: sha.clone(), sha256: Some(sha), size: 1048576, commit: Some("c".repeat(40)) });
        let m = parse_file_meta(None, Some("W/\"0123abcd\"".into()), None, Some("12".into()), None).unwrap();
        assert_eq!((m.etag.as_str(), m.sha256, m.size), ("0123abcd", None, 12));
        assert!(parse_file_meta(None, None, None, Some("1".into()), None).is_err());
        assert!(parse_file_meta(None, Some("\"../x\"".into()), None, Some("1".into()), None).is_err());
        assert!(parse_file_meta(None, Some("\"e\"".into()), None, Some("big".into()), None).is_err());
    }

    #[test]
    fn hub_client_range_and_info_parsing() {
        assert_eq!(parse_content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(parse_content_range_start("bytes */200"), None);
        assert_eq!(encode_segment("refs/pr/1"), "refs%2Fpr%2F1");
        let info = parse_repo_info(&format!(r#"{{"id":"a/b","sha":"{}","siblings":[{{"rfilename":"config.json"}}]}}"#, "f".repeat(40))).unwrap();
        assert_eq!(info.files, vec!["config.json"]);
        assert!(parse_repo_info(r#"{"sha":"main"}"#).is_err());
        assert!(parse_repo_info("<html>").is_err());
    }
}
