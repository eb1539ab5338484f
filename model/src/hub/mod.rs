//! Fetching models from a Hugging Face hub into the hub's cache layout under
//! /var/lib/ghost/models, verified before anything is moved into place.
//!
//! `pull` resolves a revision to a commit, reads each file's metadata, checks free space,
//! then downloads, verifies and links each file; `inventory` lists the cache; `verify`
//! re-hashes it.
//!
//! ## Why not the hf-hub crate
//!
//! hf-hub 1.0 speaks this protocol and writes this layout, and we stay compatible with both
//! (the test mirror serves what hf-hub requests; hf-hub and `huggingface_hub` read our cache).
//! Its download path does not do what first boot needs, though: it truncates the
//! `.incomplete` file on every attempt (no resume after a dropped connection or a power
//! cut), renames into `blobs/` without checking any hash, and has no free-space check; its
//! only resumable primitive (`download_file_stream` with a range) HEADs the file again on
//! every call. It also brings reqwest, tokio, hf-xet and aws-lc (about 400 crates, with C)
//! into a binary that is built static for musl and runs on a 2 GiB machine. So the HTTP
//! side here is ureq (blocking, rustls with ring) and the protocol is the few requests in
//! `client`. Xet-backed files are fetched through the same resolve URL (the hub redirects it
//! to a plain download), without Xet's chunk deduplication.

pub mod cache;
pub mod client;
pub mod download;
pub mod error;
pub mod hashing;
pub mod inventory;
pub mod ledger;
pub mod manifest;
pub mod progress;
pub mod pull;
pub mod retry;
pub mod space;
pub mod verify;

pub use cache::ModelCache;
pub use client::{endpoint_from, HubClient};
pub use error::PullError;
pub use manifest::{FileSpec, Manifest, ManifestError, ModelSpec};
pub use progress::{ConsoleProgress, Progress, Quiet};
pub use pull::{pull, PullOptions, PullReport};
pub use retry::Backoff;
