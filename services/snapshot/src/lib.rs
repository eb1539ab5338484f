//! ghost-snapshot: snapshots of the state that matters, stored content-addressed so that an
//! unchanged file costs nothing, and restored atomically.
//!
//! ## What a snapshot holds
//!
//! The files under its roots (system paths, under `GHOST_ROOT` in hosted mode): by default
//! `/etc/ghost` (services, rules, constitution, ghost.toml), the wizard's overlay
//! `/var/lib/ghost/etc` and the agent's goals, plus the `paths` of ghost.toml's `[snapshots]`
//! table; and the databases — the agent's memory (`/var/lib/ghost/memory.db`) — copied
//! consistently with SQLite's backup API while the agent keeps writing.
//!
//! ## On disk (`/var/lib/ghost/snapshots/`)
//!
//! ```text
//! objects/ab/abcdef…    a file's bytes, named by their SHA-256 (written once, never changed)
//! manifests/ID.json     a snapshot: id (ULID), description, trigger, time, every entry
//!                       (path, kind, mode, owner, size, sha256 or link target)
//! (and /var/lib/ghost/.snapshot-restore/: this machine's journal of a restore under way)
//! ```
//!
//! ## Restore
//!
//! Every object is read and checked against its hash first (a damaged snapshot is refused with
//! the file named, and nothing changes); a snapshot of the current state is taken; every file to
//! write is staged beside the store and fsynced; then the journal — the list of operations — is
//! written atomically. That is the commit point: a crash before it leaves the old state (the
//! staged files are dropped at the next run), a crash after it is finished by the next run of
//! any snapshot command ([`Store::recover`]), each operation being idempotent. So a power cut
//! mid-restore leaves the old state or the new one, never a mix.

mod store;
mod ulid;

pub use store::{Diff, Entry, Kind, Manifest, Policy, Store, Trigger};
pub use ulid::ulid;
