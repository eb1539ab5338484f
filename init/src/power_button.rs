//! The ACPI power button: with no acpid in the image, PID 1 reads the button's input device
//! (the kernel's `button` driver, through `evdev`) and powers off on a press, as a desktop
//! does. QEMU's `system_powerdown` and a real machine's button both arrive here.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// `struct input_event` on 64-bit Linux: timeval (16 bytes), type, code (u16), value (i32).
const EVENT_SIZE: usize = 24;
const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;

/// Input devices whose name says they are a power button (`/dev/input/eventN`).
pub fn find(sys_class_input: &Path, dev_input: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(sys_class_input) else { return Vec::new() };
    let mut found: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("event"))
        .filter(|e| std::fs::read_to_string(e.path().join("device/name")).is_ok_and(|n| n.trim() == "Power Button"))
        .map(|e| dev_input.join(e.file_name()))
        .collect();
    found.sort();
    found
}

/// Whether a buffer of input events holds a press of the power key.
pub fn has_power_press(buf: &[u8]) -> bool {
    buf.chunks_exact(EVENT_SIZE).any(|ev| {
        let kind = u16::from_ne_bytes([ev[16], ev[17]]);
        let code = u16::from_ne_bytes([ev[18], ev[19]]);
        let value = i32::from_ne_bytes([ev[20], ev[21], ev[22], ev[23]]);
        kind == EV_KEY && code == KEY_POWER && value == 1
    })
}

/// The opened power button devices.
#[derive(Default)]
pub struct PowerButtons {
    devices: Vec<OwnedFd>,
}

impl PowerButtons {
    /// Opens every power button found; returns them with their descriptors to watch.
    pub fn open(paths: &[PathBuf]) -> (PowerButtons, Vec<RawFd>) {
        let devices: Vec<OwnedFd> = paths
            .iter()
            .filter_map(|p| {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open(p).ok().map(OwnedFd::from)
            })
            .collect();
        let fds = devices.iter().map(|d| d.as_raw_fd()).collect();
        (PowerButtons { devices }, fds)
    }

    /// Drains every device; true when the power key was pressed.
    pub fn pressed(&self) -> bool {
        let mut any = false;
        let mut buf = [0u8; EVENT_SIZE * 16];
        for d in &self.devices {
            loop {
                // SAFETY: reading into a stack buffer from a descriptor we own.
                let n = unsafe { libc::read(d.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    break;
                }
                any |= has_power_press(&buf[..n as usize]);
            }
        }
        any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u16, code: u16, value: i32) -> Vec<u8> {
        let mut e = vec![0u8; 16];
        e.extend_from_slice(&kind.to_ne_bytes());
        e.extend_from_slice(&code.to_ne_bytes());
        e.extend_from_slice(&value.to_ne_bytes());
        e
    }

    #[test]
    fn a_press_of_the_power_key_counts_and_nothing_else_does() {
        let press = [event(EV_KEY, KEY_POWER, 1), event(0, 0, 0)].concat();
        assert!(has_power_press(&press));
        assert!(!has_power_press(&event(EV_KEY, KEY_POWER, 0)), "release");
        assert!(!has_power_press(&event(EV_KEY, 30, 1)), "the A key");
        assert!(!has_power_press(&event(EV_KEY, KEY_POWER, 1)[..20]), "a truncated event");
    }

    #[test]
    fn finds_devices_named_power_button() {
        let d = tempfile::tempdir().unwrap();
        for (ev, name) in [("event0", "Power Button"), ("event1", "AT Translated Set 2 keyboard"), ("event2", "Power Button\n")] {
            std::fs::create_dir_all(d.path().join(ev).join("device")).unwrap();
            std::fs::write(d.path().join(ev).join("device/name"), name).unwrap();
        }
        std::fs::create_dir_all(d.path().join("input3")).unwrap();
        assert_eq!(find(d.path(), Path::new("/dev/input")), [PathBuf::from("/dev/input/event0"), PathBuf::from("/dev/input/event2")]);
    }
}
