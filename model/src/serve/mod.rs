//! The model server: an OpenAI-compatible HTTP API over a Unix socket (/run/ghost/model.sock)
//! and, when configured, 127.0.0.1:PORT — what `ghost model serve` runs.
//!
//! Routes: `GET /health`, `GET /v1/models`, `GET /v1/models/{id}`, `POST /v1/chat/completions`
//! (streaming or not; `tools` with `tool_choice` auto/required/named, and `response_format`
//! json_object/json_schema, all decoded under a constraint so the JSON is always valid),
//! `POST /v1/embeddings` (float or base64).
//!
//! - One generation at a time on one model (the worker thread owns it; see [`worker`]);
//!   requests wait in a bounded queue where clients take turns ([`queue`]). A client is the
//!   request's `user`, else its `X-Ghost-Client` header. Responses carry `X-Ghost-Seq` (the
//!   order in which the worker started them) and `X-Ghost-Queued-Ms`.
//! - Embeddings run on tokio's blocking pool beside the worker, so they are answered while a
//!   generation runs.
//! - Listeners come up first: while the model downloads or loads, `/health` answers 503 with
//!   the phase and progress, and the API answers 503 saying so; readiness (sd_notify
//!   `READY=1`, see [`notify`]) is sent only once the model is loaded.
//! - Errors are OpenAI's error objects, with `param` naming the field at fault.

pub mod api;
pub mod config;
pub mod http;
pub mod notify;
pub mod queue;
pub mod worker;

use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

pub use config::ServeConfig;
pub use http::{AppState, Phase};
pub use notify::Notifier;
pub use worker::Engine;

/// An id for a completion or a tool call: `prefix`, then the clock's nanoseconds and a
/// counter, so two ids of one server never repeat.
pub(crate) fn fresh_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    format!("{prefix}{:012x}{:06x}", nanos & 0xffff_ffff_ffff, N.fetch_add(1, Ordering::Relaxed) & 0xff_ffff)
}

/// Binds the Unix socket at `path`: its directory is created, a stale socket file left by a
/// crash is replaced, but a socket that a live server answers on is refused. Mode 0660.
pub fn bind_unix(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} exists and is not a socket", path.display())));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(io::ErrorKind::AddrInUse, format!("{}: another server is answering there", path.display())));
        }
        std::fs::remove_file(path)?;
    }
    let l = std::os::unix::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Serves `state` on the listeners until `shutdown` completes, then stops accepting and lets
/// open requests finish.
pub async fn serve(
    state: Arc<AppState>,
    unix: std::os::unix::net::UnixListener,
    tcp: Option<std::net::TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let app = http::router(state);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let unix = tokio::net::UnixListener::from_std(unix)?;
    let mut tasks = tokio::task::JoinSet::new();
    let on_unix = axum::serve(unix, app.clone()).with_graceful_shutdown(wait(stop_rx.clone()));
    tasks.spawn(async move { on_unix.await });
    if let Some(tcp) = tcp {
        tcp.set_nonblocking(true)?;
        let tcp = tokio::net::TcpListener::from_std(tcp)?;
        let on_tcp = axum::serve(tcp, app).with_graceful_shutdown(wait(stop_rx));
        tasks.spawn(async move { on_tcp.await });
    }
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    while let Some(r) = tasks.join_next().await {
        r.map_err(io::Error::other)??;
    }
    Ok(())
}
