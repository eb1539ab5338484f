//! The EFI system partition: a FAT32 file system made by `mkfs.fat` in a plain file, with
//! the UKI put at the removable-media boot path by mtools (no mount, no root).

use crate::command::{self, ToolError};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where UEFI firmware looks on a disk with no boot entries.
pub const BOOT_PATH: &str = "::EFI/BOOT/BOOTX64.EFI";

#[derive(Debug, thiserror::Error)]
pub enum FatError {
    #[error("creating the ESP file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tool(#[from] ToolError),
}

/// Makes `path` a FAT32 file system of `bytes` holding `uki` as EFI/BOOT/BOOTX64.EFI.
/// `volume_id` and `epoch` fix every value mkfs.fat and mtools would take from chance or the clock.
pub fn make_esp(
    path: &Path,
    bytes: u64,
    volume_id: u32,
    epoch: u64,
    uki: &Path,
) -> Result<(), FatError> {
    let file = std::fs::File::create(path).map_err(|source| FatError::Create {
        path: path.to_path_buf(),
        source,
    })?;
    file.set_len(bytes).map_err(|source| FatError::Create {
        path: path.to_path_buf(),
        source,
    })?;
    drop(file);
    command::run(
        Command::new("mkfs.fat")
            // --invariant fixes the time-based fields; -i (after it) then sets our volume id.
            .args([
                "-F",
                "32",
                "-n",
                "GHOST_ESP",
                "--invariant",
                "-i",
                &format!("{volume_id:08x}"),
            ])
            .arg(path),
        "dosfstools",
    )?;
    command::run(
        mtools("mmd", path, epoch).args(["::EFI", "::EFI/BOOT"]),
        "mtools",
    )?;
    command::run(
        mtools("mcopy", path, epoch).arg(uki).arg(BOOT_PATH),
        "mtools",
    )?;
    Ok(())
}

/// Replaces the UKI inside a FAT file system that starts `offset` bytes into `image`
/// (`qemu/run --append` uses this on the ESP of disk.img, keeping the state partition).
pub fn replace_uki(image: &Path, offset: u64, uki: &Path, epoch: u64) -> Result<(), FatError> {
    let target = format!("{}@@{offset}", image.display());
    command::run(
        mtools("mcopy", Path::new(&target), epoch)
            .arg("-o")
            .arg(uki)
            .arg(BOOT_PATH),
        "mtools",
    )?;
    Ok(())
}

/// An mtools command on `image`: dates from `epoch` (mtools honours SOURCE_DATE_EPOCH for
/// what it creates; without `-m` it does not copy the source file's mtime), and no config
/// file or drive check applies.
fn mtools(tool: &str, image: &Path, epoch: u64) -> Command {
    // FAT dates start in 1980; an earlier epoch would be clamped by mtools in its own way.
    const FAT_EPOCH: u64 = 315_532_800;
    let mut cmd = Command::new(tool);
    cmd.env("SOURCE_DATE_EPOCH", epoch.max(FAT_EPOCH).to_string())
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("MTOOLSRC", "/dev/null");
    cmd.arg("-i").arg(image);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools_present() -> bool {
        let ok = Command::new("mkfs.fat").arg("--help").output().is_ok()
            && Command::new("mdir").arg("-V").output().is_ok();
        if !ok {
            eprintln!("skipping: needs mkfs.fat (dosfstools) and mtools");
        }
        ok
    }

    #[test]
    fn esp_holds_the_uki_and_is_reproducible() {
        if !tools_present() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let uki = dir.path().join("u.efi");
        std::fs::write(&uki, b"MZ pretend uki").unwrap();
        let (a, b) = (dir.path().join("a.fat"), dir.path().join("b.fat"));
        make_esp(&a, 40 << 20, 0x1234_5678, 1_700_000_000, &uki).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        // The same contents written later: the file's own mtime must not reach the image.
        std::fs::write(&uki, b"MZ pretend uki").unwrap();
        make_esp(&b, 40 << 20, 0x1234_5678, 1_700_000_000, &uki).unwrap();
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "two ESPs from the same inputs differ"
        );

        assert_eq!(copy_out_uki(&a, &dir.path().join("back.efi")), b"MZ pretend uki");
        let info = Command::new("minfo")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&a)
            .arg("::")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&info.stdout);
        assert!(
            text.contains("serial number: 12345678") || text.contains("1234-5678"),
            "{text}"
        );
        assert!(
            text.to_lowercase().contains("fat32")
                || text.contains("fat_bits=32")
                || text.contains("Big FAT"),
            "{text}"
        );
    }

    #[test]
    fn uki_is_replaced_at_an_offset() {
        if !tools_present() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let uki = dir.path().join("u.efi");
        std::fs::write(&uki, b"first").unwrap();
        let esp = dir.path().join("esp");
        make_esp(&esp, 40 << 20, 1, 0, &uki).unwrap();
        let mut disk = vec![0u8; 1 << 20];
        disk.extend(std::fs::read(&esp).unwrap());
        let img = dir.path().join("disk");
        std::fs::write(&img, disk).unwrap();
        std::fs::write(&uki, b"second, longer").unwrap();
        replace_uki(&img, 1 << 20, &uki, 0).unwrap();
        let target = format!("{}@@{}", img.display(), 1 << 20);
        assert_eq!(copy_out_uki(Path::new(&target), &dir.path().join("back")), b"second, longer");
    }

    /// Reads EFI/BOOT/BOOTX64.EFI back out of an ESP image (`FILE` or `FILE@@OFFSET`) with mtools.
    fn copy_out_uki(image: &Path, to: &Path) -> Vec<u8> {
        let out = mtools("mcopy", image, 0).arg(BOOT_PATH).arg(to).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::read(to).unwrap()
    }
}
