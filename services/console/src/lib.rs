//! ghost-console: what a person meets at the machine — the first-boot wizard (`ghost wizard`)
//! on /dev/console and the operator TUI (`ghost console`) on /dev/tty2 and the serial port.

pub mod tui;
pub mod wizard;
