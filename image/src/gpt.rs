//! GUID partition tables: a protective MBR, the primary header and entries at the start of
//! the disk and their backup at the end, with GUIDs given by the caller so that the same
//! inputs give the same bytes.

use sha2::{Digest, Sha256};

pub const SECTOR: u64 = 512;
const ENTRIES: usize = 128;
const ENTRY_SIZE: usize = 128;
/// Sectors taken by the entry array (128 × 128 bytes).
const ENTRY_SECTORS: u64 = (ENTRIES * ENTRY_SIZE) as u64 / SECTOR;

/// A GUID in its canonical (string-order) byte layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    pub const ESP: Guid = Guid([
        0xC1, 0x2A, 0x73, 0x28, 0xF8, 0x1F, 0x11, 0xD2, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9,
        0x3B,
    ]);
    pub const LINUX_DATA: Guid = Guid([
        0x0F, 0xC6, 0x3D, 0xAF, 0x84, 0x83, 0x47, 0x72, 0x8E, 0x79, 0x3D, 0x47, 0xD8, 0xE4, 0x47,
        0x7D,
    ]);

    /// A version-4-shaped GUID derived from `seed` and a `purpose`, so that every GUID of
    /// an image is fixed by its inputs and distinct from the others.
    pub fn derive(seed: &[u8], purpose: &str) -> Guid {
        let hash = Sha256::new()
            .chain_update(seed)
            .chain_update([0])
            .chain_update(purpose)
            .finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&hash[..16]);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Guid(b)
    }

    /// On-disk order: the first three fields little-endian, the rest as is.
    pub fn to_disk(self) -> [u8; 16] {
        let c = self.0;
        [
            c[3], c[2], c[1], c[0], c[5], c[4], c[7], c[6], c[8], c[9], c[10], c[11], c[12], c[13],
            c[14], c[15],
        ]
    }
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// One partition: its place in sectors (last inclusive) and identity.
#[derive(Debug, Clone)]
pub struct Partition {
    pub type_guid: Guid,
    pub guid: Guid,
    pub first_lba: u64,
    pub last_lba: u64,
    pub name: String,
}

/// The first usable sector, after the MBR, the header and the entry array.
pub const FIRST_USABLE_LBA: u64 = 2 + ENTRY_SECTORS;
/// Sectors at the end of the disk taken by the backup entries and header.
pub const BACKUP_SECTORS: u64 = ENTRY_SECTORS + 1;

/// The bytes to write at the start (`head`, LBA 0..34) and at the end (`tail`) of a disk.
pub struct Table {
    pub head: Vec<u8>,
    pub tail: Vec<u8>,
}

pub fn table(disk_sectors: u64, disk_guid: Guid, parts: &[Partition]) -> Table {
    let last_lba = disk_sectors - 1;
    let mut entries = vec![0u8; ENTRIES * ENTRY_SIZE];
    for (i, p) in parts.iter().enumerate() {
        let e = &mut entries[i * ENTRY_SIZE..(i + 1) * ENTRY_SIZE];
        e[0..16].copy_from_slice(&p.type_guid.to_disk());
        e[16..32].copy_from_slice(&p.guid.to_disk());
        e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
        e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
        for (j, unit) in p.name.encode_utf16().take(36).enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&unit.to_le_bytes());
        }
    }
    let entries_crc = crc32fast::hash(&entries);
    let header = |current: u64, backup: u64, entries_lba: u64| {
        let mut h = vec![0u8; SECTOR as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&current.to_le_bytes());
        h[32..40].copy_from_slice(&backup.to_le_bytes());
        h[40..48].copy_from_slice(&FIRST_USABLE_LBA.to_le_bytes());
        h[48..56].copy_from_slice(&(last_lba - BACKUP_SECTORS).to_le_bytes());
        h[56..72].copy_from_slice(&disk_guid.to_disk());
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };
    let mut head = protective_mbr(disk_sectors);
    head.extend(header(1, last_lba, 2));
    head.extend(&entries);
    let mut tail = entries;
    tail.extend(header(last_lba, 1, last_lba - ENTRY_SECTORS));
    Table { head, tail }
}

/// An MBR with one partition of type 0xEE covering the disk, so MBR-only tools keep off.
fn protective_mbr(disk_sectors: u64) -> Vec<u8> {
    let mut mbr = vec![0u8; SECTOR as usize];
    let e = &mut mbr[446..462];
    e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // CHS of LBA 1
    e[4] = 0xEE;
    e[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    e[8..12].copy_from_slice(&1u32.to_le_bytes());
    let size = (disk_sectors - 1).min(u32::MAX as u64) as u32;
    e[12..16].copy_from_slice(&size.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    mbr
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn guid_text_and_disk_order() {
        assert_eq!(
            Guid::ESP.to_string(),
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
        );
        assert_eq!(&Guid::ESP.to_disk()[..4], &[0x28, 0x73, 0x2A, 0xC1]);
        let a = Guid::derive(b"seed", "esp");
        assert_eq!(a, Guid::derive(b"seed", "esp"));
        assert_ne!(a, Guid::derive(b"seed", "state"));
        assert_eq!(a.to_string().as_bytes()[14], b'4');
    }

    #[test]
    fn sgdisk_verifies_the_table_and_reads_our_partitions() {
        if Command::new("sgdisk").arg("--version").output().is_err() {
            eprintln!("skipping: no sgdisk (package gdisk)");
            return;
        }
        let sectors = 8 * 2048u64;
        let parts = [
            Partition {
                type_guid: Guid::ESP,
                guid: Guid::derive(b"t", "esp"),
                first_lba: 2048,
                last_lba: 4095,
                name: "ESP".into(),
            },
            Partition {
                type_guid: Guid::LINUX_DATA,
                guid: Guid::derive(b"t", "state"),
                first_lba: 4096,
                last_lba: 6 * 2048 - 1,
                name: "GHOST_STATE".into(),
            },
        ];
        let t = table(sectors, Guid::derive(b"t", "disk"), &parts);
        let mut disk = vec![0u8; (sectors * SECTOR) as usize];
        disk[..t.head.len()].copy_from_slice(&t.head);
        let tail_at = disk.len() - t.tail.len();
        disk[tail_at..].copy_from_slice(&t.tail);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        std::fs::write(&path, &disk).unwrap();
        let verify = Command::new("sgdisk")
            .arg("--verify")
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&verify.stdout);
        assert!(
            verify.status.success() && text.contains("No problems found"),
            "{text}"
        );
        let info = Command::new("sgdisk")
            .arg("--info=2")
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&info.stdout).to_lowercase();
        assert!(
            text.contains(&format!(
                "partition unique guid: {}",
                Guid::derive(b"t", "state")
            )),
            "{text}"
        );
        assert!(
            text.contains("first sector: 4096") && text.contains("last sector: 12287"),
            "{text}"
        );
        assert!(text.contains("partition name: 'ghost_state'"), "{text}");
        let info = Command::new("sgdisk")
            .arg("--info=1")
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&info.stdout);
        assert!(
            text.contains("C12A7328-F81F-11D2-BA4B-00A0C93EC93B (EFI system partition)"),
            "{text}"
        );
    }
}
