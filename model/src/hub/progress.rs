//! Download progress: the events a pull reports ([`Progress`]), and their console form — one
//! line rewritten in place on a terminal, a line every few seconds otherwise (a log file or
//! the serial console), each with bytes, rate and time left.

use std::io::Write;
use std::time::{Duration, Instant};

/// What a pull reports as it goes. The console prints it; the model service can forward it
/// as events to the control socket for the TUI.
pub trait Progress {
    /// A line worth reading on its own: a retry, a moved revision, a resumed file.
    fn note(&mut self, line: &str);
    /// `done` of `total` bytes of `file` are on disk (including bytes from a previous run).
    fn bytes(&mut self, file: &str, done: u64, total: u64);
    /// The file is verified and in place.
    fn finished(&mut self, file: &str, total: u64);
}

/// Discards everything (library callers that do not care).
pub struct Quiet;
impl Progress for Quiet {
    fn note(&mut self, _: &str) {}
    fn bytes(&mut self, _: &str, _: u64, _: u64) {}
    fn finished(&mut self, _: &str, _: u64) {}
}

/// Transfer rate over a sliding window, so the figure follows the link as it is now rather
/// than the average since the start.
#[derive(Debug, Clone)]
pub struct RateMeter {
    samples: Vec<(Instant, u64)>,
    window: Duration,
}

impl RateMeter {
    pub fn new(window: Duration) -> RateMeter {
        RateMeter { samples: Vec::with_capacity(64), window }
    }

    pub fn reset(&mut self) {
        self.samples.clear();
    }

    /// Records that `done` bytes were reached at `now`.
    pub fn update(&mut self, now: Instant, done: u64) {
        self.samples.push((now, done));
        let window = self.window;
        // Keep one sample older than the window as the base of the rate.
        while self.samples.len() > 2 && now.duration_since(self.samples[1].0) > window {
            self.samples.remove(0);
        }
    }

    /// Bytes per second, once there is a time span to measure over.
    pub fn rate(&self) -> Option<f64> {
        let (t0, b0) = *self.samples.first()?;
        let (t1, b1) = *self.samples.last()?;
        let dt = t1.duration_since(t0).as_secs_f64();
        (dt >= 0.05).then(|| b1.saturating_sub(b0) as f64 / dt)
    }
}

/// `1536` → `1.5 KiB`.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// `75` → `1m15s`.
pub fn format_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// `model.safetensors  12.0 MiB / 48.0 MiB  25%  8.0 MiB/s  4s left`
pub fn format_line(file: &str, done: u64, total: u64, rate: Option<f64>) -> String {
    let pct = if total == 0 { 100 } else { done.saturating_mul(100) / total };
    let mut s = format!("{file}  {} / {}  {pct}%", format_bytes(done), format_bytes(total));
    match rate {
        Some(r) if r > 0.0 => {
            let left = (total.saturating_sub(done) as f64 / r).ceil() as u64;
            s.push_str(&format!("  {}/s  {} left", format_bytes(r as u64), format_duration(left)));
        }
        _ => s.push_str("  -/s"),
    }
    s
}

/// Progress on a console (stderr in `ghost model pull`).
pub struct ConsoleProgress<W: Write = std::io::Stderr> {
    out: W,
    tty: bool,
    interval: Duration,
    last: Option<Instant>,
    meter: RateMeter,
    file: String,
    /// Length of the line now on screen (tty), to blank its tail when rewriting it.
    shown: usize,
}

impl ConsoleProgress<std::io::Stderr> {
    /// On a terminal, updates at most 10 times a second; otherwise a line every 5 s.
    pub fn for_stderr() -> ConsoleProgress {
        use std::io::IsTerminal;
        let tty = std::io::stderr().is_terminal();
        ConsoleProgress::new(std::io::stderr(), tty, if tty { Duration::from_millis(100) } else { Duration::from_secs(5) })
    }
}

impl<W: Write> ConsoleProgress<W> {
    /// `tty`: rewrite one line in place; otherwise print a line every `interval`.
    pub fn new(out: W, tty: bool, interval: Duration) -> ConsoleProgress<W> {
        ConsoleProgress { out, tty, interval, last: None, meter: RateMeter::new(Duration::from_secs(5)), file: String::new(), shown: 0 }
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    fn clear(&mut self) {
        if self.tty && self.shown > 0 {
            let _ = write!(self.out, "\r{}\r", " ".repeat(self.shown));
            self.shown = 0;
        }
    }

    /// [`Progress::bytes`] at a given time.
    pub fn bytes_at(&mut self, now: Instant, file: &str, done: u64, total: u64) {
        if self.file != file {
            self.file = file.to_string();
            self.meter.reset();
            self.last = None;
        }
        self.meter.update(now, done);
        match self.last {
            // The first sample starts the clock: a rate needs two.
            None => {
                self.last = Some(now);
                return;
            }
            Some(t) if now.duration_since(t) < self.interval && done < total => return,
            Some(_) => self.last = Some(now),
        }
        let line = format_line(file, done, total, self.meter.rate());
        if self.tty {
            let pad = self.shown.saturating_sub(line.len());
            let _ = write!(self.out, "\r{line}{}", " ".repeat(pad));
            self.shown = line.len();
        } else {
            let _ = writeln!(self.out, "{line}");
        }
        let _ = self.out.flush();
    }
}

impl<W: Write> Progress for ConsoleProgress<W> {
    fn note(&mut self, line: &str) {
        self.clear();
        let _ = writeln!(self.out, "{line}");
    }

    fn bytes(&mut self, file: &str, done: u64, total: u64) {
        self.bytes_at(Instant::now(), file, done, total);
    }

    fn finished(&mut self, file: &str, total: u64) {
        self.clear();
        let _ = writeln!(self.out, "{file}  {}  verified", format_bytes(total));
        self.file.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_progress_formats() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(48 << 20), "48.0 MiB");
        assert_eq!(format_bytes(3 << 30), "3.0 GiB");
        assert_eq!(format_duration(42), "42s");
        assert_eq!(format_duration(75), "1m15s");
        assert_eq!(format_duration(3600 + 120), "1h02m");
        assert_eq!(format_line("m.safetensors", 12 << 20, 48 << 20, Some((8u64 << 20) as f64)), "m.safetensors  12.0 MiB / 48.0 MiB  25%  8.0 MiB/s  5s left");
        assert_eq!(format_line("c.json", 0, 0, None), "c.json  0 B / 0 B  100%  -/s");
    }

    #[test]
    fn hub_progress_rate_follows_the_window() {
        let t0 = Instant::now();
        let mut m = RateMeter::new(Duration::from_secs(5));
        m.update(t0, 0);
        assert_eq!(m.rate(), None, "one sample has no rate");
        m.update(t0 + Duration::from_secs(1), 10 << 20);
        assert_eq!(m.rate(), Some((10u64 << 20) as f64));
        // A slow minute later the old fast second no longer counts.
        for s in 2..60 {
            m.update(t0 + Duration::from_secs(s), (10 << 20) + (s - 1) * 1024);
        }
        let r = m.rate().unwrap();
        assert!((1000.0..1100.0).contains(&r), "{r}");
    }

    #[test]
    fn hub_progress_console_lines() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // Not a terminal: one line per interval, a final one at 100%.
        let mut p = ConsoleProgress::new(Vec::new(), false, Duration::from_secs(5));
        for s in 0..=12 {
            p.bytes_at(at(s), "m.bin", s << 20, 12 << 20);
        }
        p.finished("m.bin", 12 << 20);
        let out = String::from_utf8(p.into_inner()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines, ["m.bin  5.0 MiB / 12.0 MiB  41%  1.0 MiB/s  7s left", "m.bin  10.0 MiB / 12.0 MiB  83%  1.0 MiB/s  2s left", "m.bin  12.0 MiB / 12.0 MiB  100%  1.0 MiB/s  0s left", "m.bin  12.0 MiB  verified"]);
        // A terminal: the line is rewritten in place, and a note clears it first.
        let mut p = ConsoleProgress::new(Vec::new(), true, Duration::ZERO);
        p.bytes_at(at(0), "m.bin", 0, 4 << 20);
        p.bytes_at(at(1), "m.bin", 1 << 20, 4 << 20);
        p.bytes_at(at(2), "m.bin", 2 << 20, 4 << 20);
        p.note("retrying");
        let out = String::from_utf8(p.into_inner()).unwrap();
        assert!(out.starts_with("\rm.bin  1.0 MiB / 4.0 MiB  25%  1.0 MiB/s  3s left\rm.bin  2.0 MiB"), "{out:?}");
        assert!(out.ends_with("\rretrying\n"), "{out:?}");
        assert_eq!(out.matches('\n').count(), 1, "one line on a terminal: {out:?}");
    }
}
