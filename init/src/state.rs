//! The state partition: find the ext4 filesystem labelled `GHOST_STATE`, check it, mount it at
//! /var/lib/ghost; when that is impossible, a tmpfs there and a loud warning that nothing will
//! persist. Device discovery reads superblocks directly: there is no udev and no blkid.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub const LABEL: &str = "GHOST_STATE";

/// What the ext4 superblock says about a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Super {
    pub label: String,
    /// `s_state`: bit 0 clean unmount, bit 1 errors detected.
    pub clean: bool,
    pub has_errors: bool,
}

/// Reads the superblock (1024 bytes at offset 1024); `None` when it is not ext2/3/4.
pub fn parse_superblock(sb: &[u8]) -> Option<Ext4Super> {
    if sb.len() < 0x88 {
        return None;
    }
    let magic = u16::from_le_bytes([sb[0x38], sb[0x39]]);
    if magic != 0xEF53 {
        return None;
    }
    let state = u16::from_le_bytes([sb[0x3A], sb[0x3B]]);
    let name = &sb[0x78..0x88];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Some(Ext4Super {
        label: String::from_utf8_lossy(&name[..end]).into_owned(),
        clean: state & 1 != 0,
        has_errors: state & 2 != 0,
    })
}

pub fn read_superblock(dev: &Path) -> std::io::Result<Option<Ext4Super>> {
    let mut f = std::fs::File::open(dev)?;
    f.seek(SeekFrom::Start(1024))?;
    let mut sb = [0u8; 1024];
    let n = f.read(&mut sb)?;
    Ok(parse_superblock(&sb[..n]))
}

/// Block devices the kernel knows, partitions included (from /sys/class/block).
pub fn block_devices(sys_class_block: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(sys_class_block)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    // RAM disks and loop devices never hold the state partition; skipping them saves reads.
    names.retain(|n| !n.starts_with("ram") && !n.starts_with("loop"));
    names.sort();
    names
}

/// The device whose ext4 label is `label`, looking at /dev/NAME for each block device.
pub fn find_by_label(dev_dir: &Path, names: &[String], label: &str) -> Option<(PathBuf, Ext4Super)> {
    names.iter().find_map(|n| {
        let dev = dev_dir.join(n);
        match read_superblock(&dev) {
            Ok(Some(sb)) if sb.label == label => Some((dev, sb)),
            _ => None,
        }
    })
}

/// e2fsck in the image, if there is one.
pub fn fsck_binary(root: &Path) -> Option<PathBuf> {
    ["sbin/e2fsck", "usr/sbin/e2fsck", "sbin/fsck.ext4", "usr/sbin/fsck.ext4"].iter().map(|p| root.join(p)).find(|p| p.exists())
}

/// What e2fsck's exit code means (e2fsck(8): 0 clean, 1 fixed, 2 fixed and reboot, 4+ errors left).
pub fn fsck_verdict(code: i32) -> Result<&'static str, String> {
    match code {
        0 => Ok("clean"),
        1 => Ok("errors corrected"),
        2 => Ok("errors corrected (the kernel should reboot)"),
        c => Err(format!("e2fsck exit code {c}: errors left uncorrected")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb(label: &str, state: u16) -> Vec<u8> {
        let mut b = vec![0u8; 1024];
        b[0x38..0x3A].copy_from_slice(&0xEF53u16.to_le_bytes());
        b[0x3A..0x3C].copy_from_slice(&state.to_le_bytes());
        b[0x78..0x78 + label.len()].copy_from_slice(label.as_bytes());
        b
    }

    #[test]
    fn superblock_label_and_state() {
        assert_eq!(parse_superblock(&sb("GHOST_STATE", 1)), Some(Ext4Super { label: LABEL.into(), clean: true, has_errors: false }));
        assert!(parse_superblock(&sb("x", 3)).unwrap().has_errors);
        let mut not_ext = sb("x", 1);
        not_ext[0x38] = 0;
        assert_eq!(parse_superblock(&not_ext), None);
        assert_eq!(parse_superblock(&[0; 10]), None);
    }

    #[test]
    fn finds_the_labelled_device_among_others() {
        let d = tempfile::tempdir().unwrap();
        let write = |name: &str, body: &[u8]| {
            let mut img = vec![0u8; 1024];
            img.extend_from_slice(body);
            std::fs::write(d.path().join(name), img).unwrap();
        };
        write("vda", &[0; 1024]);
        write("vda1", &sb("ESP", 1));
        write("vda2", &sb(LABEL, 1));
        let names: Vec<String> = ["vda", "vda1", "vda2", "vdb"].iter().map(|s| s.to_string()).collect();
        let (dev, s) = find_by_label(d.path(), &names, LABEL).unwrap();
        assert_eq!(dev, d.path().join("vda2"));
        assert!(s.clean);
        assert!(find_by_label(d.path(), &names, "OTHER").is_none());
    }

    #[test]
    fn a_real_mke2fs_image_is_recognised() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("state.img");
        let ok = std::process::Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-L", LABEL])
            .arg(&img)
            .arg("4M")
            .status();
        match ok {
            Ok(s) if s.success() => {
                let sb = read_superblock(&img).unwrap().unwrap();
                assert_eq!(sb.label, LABEL);
                assert!(sb.clean);
            }
            other => eprintln!("SKIP a_real_mke2fs_image_is_recognised: mke2fs not runnable here ({other:?}); install e2fsprogs"),
        }
    }

    #[test]
    fn fsck_codes() {
        assert!(fsck_verdict(0).is_ok() && fsck_verdict(1).is_ok());
        assert!(fsck_verdict(4).unwrap_err().contains("4"));
    }
}
