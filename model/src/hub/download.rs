//! One file from the hub into `blobs/`: written to `ETAG.incomplete`, resumed from that
//! file's length with a Range request (also after a kill or a power cut: the partial file is
//! synced every few MiB), hashed as it streams, and renamed into place only when its hash
//! matches. A file that fails verification is deleted, never moved.

use super::cache::{sync_dir, RepoCache};
use super::client::HubClient;
use super::error::PullError;
use super::hashing::{Digests, Expected, FileHasher};
use super::progress::Progress;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// How much a power cut may cost: the partial file is synced after this many bytes.
const SYNC_EVERY: u64 = 32 << 20;
const CHUNK: usize = 256 << 10;

/// One file to fetch.
pub struct BlobJob<'a> {
    pub repo: &'a RepoCache,
    pub file: &'a str,
    pub commit: &'a str,
    pub etag: &'a str,
    pub size: u64,
    pub expected: &'a Expected,
}

/// Where a download starts, given the partial file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Nothing usable on disk: from byte 0.
    Fresh,
    /// Keep the first N bytes and ask for the rest.
    Resume(u64),
    /// Every byte is there (a run stopped between the last write and the rename): only check.
    Complete,
}

pub fn plan(partial_len: u64, size: u64) -> Start {
    match partial_len {
        0 => Start::Fresh,
        n if n < size => Start::Resume(n),
        n if n == size => Start::Complete,
        // Longer than the file: not ours to trust.
        _ => Start::Fresh,
    }
}

/// Fetches `job` into `blobs/ETAG`; returns the digests it was verified with.
pub fn fetch_blob(client: &HubClient, job: &BlobJob, progress: &mut dyn Progress) -> Result<Digests, PullError> {
    let part = job.repo.incomplete(job.etag);
    let blobs = job.repo.blobs_dir();
    std::fs::create_dir_all(&blobs).map_err(|e| PullError::io(&blobs, e))?;
    let mut f = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&part).map_err(|e| PullError::io(&part, e))?;
    // Two pulls of the same blob would interleave their writes; the second one stops.
    if rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        return Err(PullError::Busy { path: part });
    }
    let mut allow_restart = true;
    loop {
        let have = f.metadata().map_err(|e| PullError::io(&part, e))?.len();
        let resumed = match plan(have, job.size) {
            Start::Fresh => 0,
            Start::Resume(n) => n,
            Start::Complete => have,
        };
        let digests = match write_rest(client, job, &mut f, &part, resumed, progress) {
            Ok(d) => d,
            Err(e) => {
                if matches!(e, PullError::DiskFull { .. } | PullError::Protocol { .. }) {
                    let _ = std::fs::remove_file(&part);
                }
                return Err(e);
            }
        };
        match job.expected.mismatch(&digests) {
            None => {
                std::fs::rename(&part, job.repo.blob(job.etag)).map_err(|e| PullError::io(&part, e))?;
                sync_dir(&blobs)?;
                return Ok(digests);
            }
            Some((algo, expected, actual)) => {
                f.set_len(0).map_err(|e| PullError::io(&part, e))?;
                if resumed > 0 && allow_restart {
                    // The kept part may be what was damaged (a power cut can leave garbage
                    // at the end of a file): one more try from byte 0 settles it.
                    progress.note(&format!("{}: {}: {algo} mismatch after resuming at byte {resumed}; downloading it again from byte 0", job.repo.repo, job.file));
                    allow_restart = false;
                    continue;
                }
                let _ = std::fs::remove_file(&part);
                return Err(PullError::HashMismatch { repo: job.repo.repo.clone(), file: job.file.to_string(), algo, expected, actual });
            }
        }
    }
}

/// Hashes the first `have` bytes already on disk, downloads the rest after them, and syncs.
fn write_rest(client: &HubClient, job: &BlobJob, f: &mut File, part: &Path, mut have: u64, progress: &mut dyn Progress) -> Result<Digests, PullError> {
    let git_size = job.expected.git_sha1.as_ref().map(|_| job.size);
    let mut hasher = FileHasher::new(git_size);
    if have > 0 {
        f.seek(SeekFrom::Start(0)).map_err(|e| PullError::io(part, e))?;
        if hasher.update_from(f, have).is_err() {
            have = 0;
            hasher = FileHasher::new(git_size);
        } else if have < job.size {
            progress.note(&format!("{}: {}: resuming at byte {have} of {}", job.repo.repo, job.file, job.size));
        }
    }
    if have == 0 {
        f.set_len(0).map_err(|e| PullError::io(part, e))?;
    }
    if have < job.size {
        let mut body = client.download(&job.repo.repo, job.commit, job.file, have)?;
        if body.start != have {
            progress.note(&format!("{}: {}: the hub ignored the Range request; downloading from byte 0", job.repo.repo, job.file));
            have = 0;
            hasher = FileHasher::new(git_size);
            f.set_len(0).map_err(|e| PullError::io(part, e))?;
        }
        f.seek(SeekFrom::Start(have)).map_err(|e| PullError::io(part, e))?;
        let mut buf = vec![0u8; CHUNK];
        let mut since_sync = 0u64;
        progress.bytes(job.file, have, job.size);
        loop {
            let n = match body.reader.read(&mut buf) {
                Ok(0) if have < job.size => {
                    return Err(PullError::Transport { url: body.url, message: format!("connection closed after {have} of {} bytes", job.size) });
                }
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(PullError::Transport { url: body.url, message: format!("connection lost after {have} of {} bytes: {e}", job.size) });
                }
            };
            if have + n as u64 > job.size {
                return Err(PullError::Protocol { url: body.url, message: format!("the hub sent more than the {} bytes it announced", job.size) });
            }
            f.write_all(&buf[..n]).map_err(|e| write_error(job, part, e, have))?;
            hasher.update(&buf[..n]);
            have += n as u64;
            since_sync += n as u64;
            if since_sync >= SYNC_EVERY {
                f.sync_data().map_err(|e| write_error(job, part, e, have))?;
                since_sync = 0;
            }
            progress.bytes(job.file, have, job.size);
        }
    }
    f.sync_all().map_err(|e| write_error(job, part, e, have))?;
    Ok(hasher.finish())
}

fn write_error(job: &BlobJob, part: &Path, e: std::io::Error, written: u64) -> PullError {
    if e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) || e.raw_os_error() == Some(rustix::io::Errno::DQUOT.raw_os_error()) {
        PullError::DiskFull { repo: job.repo.repo.clone(), file: job.file.to_string(), path: part.to_path_buf(), written, total: job.size }
    } else {
        PullError::io(part, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_download_resume_plan() {
        assert_eq!(plan(0, 100), Start::Fresh);
        assert_eq!(plan(40, 100), Start::Resume(40));
        assert_eq!(plan(100, 100), Start::Complete);
        assert_eq!(plan(101, 100), Start::Fresh);
        assert_eq!(plan(0, 0), Start::Fresh);
    }
}
