//! The agent's persistent identity: a UUID v7, a name, the time it was created, and the
//! ed25519 key pair that signs its audit records.
//!
//! Files in the identity directory (`/var/lib/ghost/agent/` on the state partition, see
//! [`crate::Paths`]), directory mode 0700:
//!
//! | file | mode | contents |
//! | --- | --- | --- |
//! | `agent.key` | 0600 | `ghost-ed25519-secret-v1 <64 hex digits: the 32-byte seed>\n` |
//! | `agent.pub` | 0644 | `ghost-ed25519-public-v1 <64 hex digits>\n` |
//! | `identity.json` | 0644 | `{"id": UUIDv7, "name", "created": RFC 3339 UTC, "public_key": hex}` |
//!
//! Each file is created once, written to a temporary file, fsynced and linked into place (a
//! second creator loses the race cleanly instead of overwriting). The key is written first and
//! `identity.json` last, so an interrupted first start leaves a key that the next start reuses.
//! A damaged, missing-while-the-identity-exists or mismatching key is an error that names the
//! file: a key is never silently regenerated, since that would orphan the audit chain.

use crate::util;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

const SECRET_TAG: &str = "ghost-ed25519-secret-v1";
const PUBLIC_TAG: &str = "ghost-ed25519-public-v1";
pub const KEY_FILE: &str = "agent.key";
pub const PUB_FILE: &str = "agent.pub";
pub const IDENTITY_FILE: &str = "identity.json";

/// An identity problem, always tied to the file it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityError {
    pub path: PathBuf,
    pub reason: String,
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for IdentityError {}

fn err(path: &Path, reason: impl Into<String>) -> IdentityError {
    IdentityError { path: path.to_path_buf(), reason: reason.into() }
}

/// The public half of the agent key: what `audit verify` needs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub [u8; 32]);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl PublicKey {
    pub fn to_hex(&self) -> String {
        util::hex(&self.0)
    }

    pub fn from_hex(s: &str) -> Option<PublicKey> {
        let bytes: [u8; 32] = util::unhex(s.trim())?.try_into().ok()?;
        VerifyingKey::from_bytes(&bytes).ok()?;
        Some(PublicKey(bytes))
    }

    /// Reads an `agent.pub` file.
    pub fn load(path: &Path) -> Result<PublicKey, IdentityError> {
        let text = std::fs::read_to_string(path).map_err(|e| err(path, format!("cannot read: {e}")))?;
        parse_tagged(&text, PUBLIC_TAG)
            .and_then(|h| PublicKey::from_hex(&h))
            .ok_or_else(|| err(path, format!("damaged public key (expected `{PUBLIC_TAG} <64 hex digits>`)")))
    }

    /// Whether `sig` is this key's ed25519 signature of `msg` (strict verification).
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Ok(vk) = VerifyingKey::from_bytes(&self.0) else { return false };
        let Ok(sig) = <[u8; 64]>::try_from(sig) else { return false };
        vk.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig)).is_ok()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct IdentityFile {
    id: String,
    name: String,
    created: String,
    public_key: String,
}

/// The agent's identity with its signing key (kept in memory, zeroised on drop).
pub struct Identity {
    pub id: uuid::Uuid,
    pub name: String,
    /// RFC 3339 UTC.
    pub created: String,
    pub dir: PathBuf,
    key: SigningKey,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("created", &self.created)
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

/// What [`Identity::load_or_create`] found.
#[derive(Debug)]
pub struct Loaded {
    pub identity: Identity,
    /// True when this call created the identity.
    pub created: bool,
    /// Things that were repaired on the way (a key file readable by others was set to 0600, a
    /// missing `agent.pub` was rewritten from the key).
    pub notes: Vec<String>,
}

impl Identity {
    /// Loads the identity in `dir`, creating it (with `name`) when there is none yet.
    pub fn load_or_create(dir: &Path, name: &str) -> Result<Loaded, IdentityError> {
        let id_path = dir.join(IDENTITY_FILE);
        if id_path.exists() {
            let (identity, notes) = Self::load_with_notes(dir)?;
            return Ok(Loaded { identity, created: false, notes });
        }
        valid_name(name).map_err(|r| err(&id_path, r))?;
        util::ensure_dir(dir, 0o700).map_err(|e| err(dir, format!("cannot create: {e}")))?;
        let key_path = dir.join(KEY_FILE);
        let mut notes = Vec::new();
        // The key first: an earlier start that died before identity.json left it, and it is
        // reused, never replaced.
        let key = if key_path.exists() {
            notes.push(format!("{}: reusing the key of an unfinished first start", key_path.display()));
            read_key(&key_path, &mut notes)?
        } else {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| err(&key_path, format!("no randomness for a key: {e}")))?;
            let key = SigningKey::from_bytes(&seed);
            seed.fill(0);
            let text = format!("{SECRET_TAG} {}\n", util::hex(key.as_bytes()));
            match util::write_new(&key_path, text.as_bytes(), 0o600) {
                Ok(()) => key,
                // Another process created it between our check and our link: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_key(&key_path, &mut notes)?,
                Err(e) => return Err(err(&key_path, format!("cannot write: {e}"))),
            }
        };
        let public = PublicKey(key.verifying_key().to_bytes());
        write_pub(dir, &public)?;
        let file = IdentityFile {
            id: uuid::Uuid::now_v7().to_string(),
            name: name.to_string(),
            created: util::rfc3339(SystemTime::now()),
            public_key: public.to_hex(),
        };
        let json = serde_json::to_string_pretty(&file).expect("identity serialises") + "\n";
        match util::write_new(&id_path, json.as_bytes(), 0o644) {
            Ok(()) => {
                let identity = Identity::from_file(&id_path, file, key)?;
                Ok(Loaded { identity, created: true, notes })
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let (identity, more) = Self::load_with_notes(dir)?;
                notes.extend(more);
                Ok(Loaded { identity, created: false, notes })
            }
            Err(e) => Err(err(&id_path, format!("cannot write: {e}"))),
        }
    }

    /// Loads an existing identity; every problem names its file.
    pub fn load(dir: &Path) -> Result<Identity, IdentityError> {
        Self::load_with_notes(dir).map(|(i, _)| i)
    }

    fn load_with_notes(dir: &Path) -> Result<(Identity, Vec<String>), IdentityError> {
        let id_path = dir.join(IDENTITY_FILE);
        let key_path = dir.join(KEY_FILE);
        let mut notes = Vec::new();
        let text = std::fs::read_to_string(&id_path).map_err(|e| err(&id_path, format!("cannot read: {e}")))?;
        let file: IdentityFile =
            serde_json::from_str(&text).map_err(|e| err(&id_path, format!("damaged identity: {e}")))?;
        if !key_path.exists() {
            return Err(err(
                &key_path,
                "missing, but the identity exists: refusing to make a new key (the audit trail is signed with the old one); restore the key or move the identity directory aside",
            ));
        }
        let key = read_key(&key_path, &mut notes)?;
        let public = PublicKey(key.verifying_key().to_bytes());
        let pub_path = dir.join(PUB_FILE);
        match PublicKey::load(&pub_path) {
            Ok(p) if p == public => {}
            Ok(_) => {
                return Err(err(&pub_path, format!("does not match the key in {}", key_path.display())));
            }
            Err(_) if !pub_path.exists() => {
                write_pub(dir, &public)?;
                notes.push(format!("{}: was missing; rewritten from the key", pub_path.display()));
            }
            Err(e) => return Err(e),
        }
        let identity = Identity::from_file(&id_path, file, key)?;
        Ok((identity, notes))
    }

    fn from_file(id_path: &Path, file: IdentityFile, key: SigningKey) -> Result<Identity, IdentityError> {
        let id = uuid::Uuid::parse_str(&file.id).map_err(|e| err(id_path, format!("id: not a UUID: {e}")))?;
        if id.get_version_num() != 7 {
            return Err(err(id_path, format!("id: {id} is not a UUID v7")));
        }
        valid_name(&file.name).map_err(|r| err(id_path, format!("name: {r}")))?;
        let public = PublicKey(key.verifying_key().to_bytes());
        if PublicKey::from_hex(&file.public_key) != Some(public) {
            return Err(err(id_path, format!("public_key: does not match the key in {KEY_FILE}")));
        }
        Ok(Identity {
            id,
            name: file.name,
            created: file.created,
            dir: id_path.parent().unwrap_or(Path::new(".")).into(),
            key,
        })
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.key.verifying_key().to_bytes())
    }

    /// The ed25519 signature of `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }
}

fn read_key(path: &Path, notes: &mut Vec<String>) -> Result<SigningKey, IdentityError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| err(path, format!("cannot read: {e}")))?;
    if meta.len() > 4096 {
        return Err(err(path, "damaged key: file is too large"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(path, format!("damaged key: {e}")))?;
    let seed: [u8; 32] =
        parse_tagged(&text, SECRET_TAG).and_then(|h| util::unhex(&h)).and_then(|b| b.try_into().ok()).ok_or_else(
            || err(path, format!("damaged key (expected `{SECRET_TAG} <64 hex digits>`); not regenerating it")),
        )?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| err(path, format!("readable by others and cannot be restricted: {e}")))?;
        notes.push(format!("{}: was mode {:o}; set to 600", path.display(), meta.permissions().mode() & 0o777));
    }
    Ok(SigningKey::from_bytes(&seed))
}

fn write_pub(dir: &Path, public: &PublicKey) -> Result<(), IdentityError> {
    let path = dir.join(PUB_FILE);
    let text = format!("{PUBLIC_TAG} {}\n", public.to_hex());
    util::write_atomic(&path, text.as_bytes(), 0o644).map_err(|e| err(&path, format!("cannot write: {e}")))
}

fn parse_tagged(text: &str, tag: &str) -> Option<String> {
    let mut words = text.split_whitespace();
    (words.next()? == tag).then_some(())?;
    let h = words.next()?;
    words.next().is_none().then(|| h.to_string())
}

/// 1..=64 characters, no control characters.
pub fn valid_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        Err(format!("`{}` is not a valid agent name (1-64 printable characters)", util::clip(name, 70)))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_then_loaded_with_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("agent");
        let first = Identity::load_or_create(&d, "ghost").unwrap();
        assert!(first.created);
        assert_eq!(first.identity.id.get_version_num(), 7);
        assert_eq!(first.identity.name, "ghost");
        assert!(first.identity.created.ends_with('Z'));
        let mode = |f: &str| std::fs::metadata(d.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(KEY_FILE), 0o600);
        assert_eq!(mode("."), 0o700);
        let again = Identity::load_or_create(&d, "another name").unwrap();
        assert!(!again.created);
        assert_eq!(again.identity.id, first.identity.id);
        assert_eq!(again.identity.name, "ghost", "the name is kept, not replaced");
        assert_eq!(again.identity.public_key(), first.identity.public_key());
        let sig = again.identity.sign(b"hello");
        assert!(first.identity.public_key().verify(b"hello", &sig));
        assert!(!first.identity.public_key().verify(b"hellO", &sig));
        assert_eq!(PublicKey::load(&d.join(PUB_FILE)).unwrap(), first.identity.public_key());
    }

    #[test]
    fn damaged_key_is_an_error_naming_the_file_and_is_not_regenerated() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        Identity::load_or_create(d, "ghost").unwrap();
        let key_path = d.join(KEY_FILE);
        std::fs::write(&key_path, "ghost-ed25519-secret-v1 nothex\n").unwrap();
        let e = Identity::load_or_create(d, "ghost").unwrap_err();
        assert_eq!(e.path, key_path);
        assert!(e.to_string().contains("agent.key: damaged key"), "{e}");
        assert_eq!(std::fs::read_to_string(&key_path).unwrap(), "ghost-ed25519-secret-v1 nothex\n");
    }

    #[test]
    fn missing_or_foreign_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        Identity::load_or_create(&a, "a").unwrap();
        Identity::load_or_create(&b, "b").unwrap();
        // A key from another identity: agent.pub no longer matches.
        std::fs::copy(b.join(KEY_FILE), a.join(KEY_FILE)).unwrap();
        let e = Identity::load(&a).unwrap_err();
        assert!(e.to_string().contains("agent.pub: does not match"), "{e}");
        // ... and with agent.pub gone, identity.json's public_key catches it.
        std::fs::remove_file(a.join(PUB_FILE)).unwrap();
        let e = Identity::load(&a).unwrap_err();
        assert!(e.to_string().contains("identity.json: public_key: does not match"), "{e}");
        std::fs::remove_file(a.join(KEY_FILE)).unwrap();
        let e = Identity::load_or_create(&a, "a").unwrap_err();
        assert_eq!(e.path, a.join(KEY_FILE));
        assert!(e.reason.contains("refusing to make a new key"), "{e}");
        assert!(!a.join(KEY_FILE).exists());
    }

    #[test]
    fn unfinished_first_start_reuses_its_key_and_loose_modes_are_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let first = Identity::load_or_create(d, "ghost").unwrap().identity.public_key();
        std::fs::remove_file(d.join(IDENTITY_FILE)).unwrap();
        std::fs::set_permissions(d.join(KEY_FILE), std::fs::Permissions::from_mode(0o644)).unwrap();
        let again = Identity::load_or_create(d, "ghost").unwrap();
        assert!(again.created);
        assert_eq!(again.identity.public_key(), first);
        assert!(again.notes.iter().any(|n| n.contains("set to 600")), "{:?}", again.notes);
        assert_eq!(std::fs::metadata(d.join(KEY_FILE)).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn damaged_identity_file_and_bad_name_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(Identity::load_or_create(d, "").unwrap_err().reason.contains("not a valid agent name"));
        Identity::load_or_create(d, "ghost").unwrap();
        std::fs::write(d.join(IDENTITY_FILE), "{\"id\": 3}").unwrap();
        let e = Identity::load(d).unwrap_err();
        assert_eq!(e.path, d.join(IDENTITY_FILE));
        assert!(e.reason.starts_with("damaged identity"), "{e}");
    }
}
