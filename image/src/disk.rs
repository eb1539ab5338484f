//! The disk image: the ESP and the state file system spliced into a GPT disk at 1 MiB
//! aligned offsets, written sparsely so that empty space costs nothing on the host.

use crate::gpt::{self, Guid, Partition, SECTOR};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;
/// The ESP starts here; `qemu/run` relies on it to replace the UKI in place.
pub const ESP_OFFSET: u64 = MIB;

#[derive(Debug, thiserror::Error)]
#[error("writing the disk image {path}: {source}")]
pub struct DiskError {
    path: PathBuf,
    source: std::io::Error,
}

/// GUIDs of the disk and its partitions.
pub struct DiskIds {
    pub disk: Guid,
    pub esp: Guid,
    pub state: Guid,
}

/// Writes `out` with the ESP file system from `esp` and the state one from `state`.
/// Both sizes must be whole MiB. Returns the disk's size in bytes.
pub fn assemble(out: &Path, esp: &Path, state: &Path, ids: &DiskIds) -> Result<u64, DiskError> {
    let err = |source| DiskError {
        path: out.to_path_buf(),
        source,
    };
    let esp_len = std::fs::metadata(esp).map_err(err)?.len();
    let state_len = std::fs::metadata(state).map_err(err)?.len();
    let state_offset = ESP_OFFSET + esp_len.div_ceil(MIB) * MIB;
    // One spare MiB at the end holds the backup GPT and keeps the size aligned.
    let total = state_offset + state_len.div_ceil(MIB) * MIB + MIB;
    let sectors = total / SECTOR;
    let parts = [
        Partition {
            type_guid: Guid::ESP,
            guid: ids.esp,
            first_lba: ESP_OFFSET / SECTOR,
            last_lba: (ESP_OFFSET + esp_len) / SECTOR - 1,
            name: "ESP".into(),
        },
        Partition {
            type_guid: Guid::LINUX_DATA,
            guid: ids.state,
            first_lba: state_offset / SECTOR,
            last_lba: (state_offset + state_len) / SECTOR - 1,
            name: crate::ext4::LABEL.into(),
        },
    ];
    let table = gpt::table(sectors, ids.disk, &parts);
    let mut disk = File::create(out).map_err(err)?;
    disk.set_len(total).map_err(err)?;
    disk.write_all(&table.head).map_err(err)?;
    splice(&mut disk, ESP_OFFSET, esp).map_err(err)?;
    splice(&mut disk, state_offset, state).map_err(err)?;
    disk.seek(SeekFrom::Start(total - table.tail.len() as u64))
        .map_err(err)?;
    disk.write_all(&table.tail).map_err(err)?;
    disk.sync_all().map_err(err)?;
    Ok(total)
}

/// Copies `src` into `disk` at `offset`, skipping all-zero blocks (they are holes already).
fn splice(disk: &mut File, offset: u64, src: &Path) -> std::io::Result<()> {
    let mut input = File::open(src)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = offset;
    loop {
        let n = read_full(&mut input, &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        if buf[..n].iter().any(|&b| b != 0) {
            disk.seek(SeekFrom::Start(at))?;
            disk.write_all(&buf[..n])?;
        }
        at += n as u64;
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_hold_their_file_systems_at_aligned_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let (esp, state, out) = (
            dir.path().join("esp"),
            dir.path().join("state"),
            dir.path().join("disk.img"),
        );
        let mut e = vec![0u8; 2 * MIB as usize];
        e[0] = 0xEB;
        e[2 * MIB as usize - 1] = 0x55;
        std::fs::write(&esp, &e).unwrap();
        let mut s = vec![0u8; 3 * MIB as usize];
        s[1024 + 56] = 0x53;
        std::fs::write(&state, &s).unwrap();
        let ids = DiskIds {
            disk: Guid::derive(b"d", "disk"),
            esp: Guid::derive(b"d", "esp"),
            state: Guid::derive(b"d", "state"),
        };
        let total = assemble(&out, &esp, &state, &ids).unwrap();
        assert_eq!(total, 7 * MIB);
        let disk = std::fs::read(&out).unwrap();
        assert_eq!(&disk[MIB as usize..3 * MIB as usize], &e[..]);
        assert_eq!(&disk[3 * MIB as usize..6 * MIB as usize], &s[..]);
        assert_eq!(&disk[512..520], b"EFI PART");
        assert_eq!(&disk[disk.len() - 512..disk.len() - 504], b"EFI PART");
        if let Ok(o) = std::process::Command::new("sgdisk")
            .arg("--verify")
            .arg(&out)
            .output()
        {
            assert!(
                String::from_utf8_lossy(&o.stdout).contains("No problems found"),
                "{}",
                String::from_utf8_lossy(&o.stdout)
            );
        }
    }
}
