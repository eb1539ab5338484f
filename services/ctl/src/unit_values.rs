//! systemd's value syntaxes that have a ghost counterpart: time spans (`100ms`, `1min 30s`,
//! plain seconds), byte sizes (`512M`, `1.5G`, base 1024), percentages, and signal names.

/// A time span or size that may be `infinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit<T> {
    Finite(T),
    Infinity,
}

/// A systemd time span in microseconds; a bare number means seconds.
pub fn time_span_us(s: &str) -> Result<Limit<u128>, String> {
    let s = s.trim();
    if s == "infinity" {
        return Ok(Limit::Infinity);
    }
    let bad = || format!("`{s}` is not a time span like 100ms, 5s, 1min 30s or 2h");
    let mut total: f64 = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = rest[num_len..].trim_start();
        let unit_len = rest.find(|c: char| !c.is_alphabetic()).unwrap_or(rest.len());
        let unit_us: f64 = match &rest[..unit_len] {
            "" | "s" | "sec" | "second" | "seconds" => 1e6,
            "us" | "usec" | "µs" | "μs" => 1.0,
            "ms" | "msec" => 1e3,
            "m" | "min" | "minute" | "minutes" => 60e6,
            "h" | "hr" | "hour" | "hours" => 3600e6,
            "d" | "day" | "days" => 86_400e6,
            "w" | "week" | "weeks" => 7.0 * 86_400e6,
            "M" | "month" | "months" => 30.44 * 86_400e6,
            "y" | "year" | "years" => 365.25 * 86_400e6,
            _ => return Err(bad()),
        };
        total += number * unit_us;
        rest = rest[unit_len..].trim_start();
    }
    Ok(Limit::Finite(total.round() as u128))
}

/// A systemd byte size (`512M`, `1.5G`, `4096`; K/M/G/T/P/E are powers of 1024).
pub fn byte_size(s: &str) -> Result<Limit<u64>, String> {
    let s = s.trim();
    if s == "infinity" {
        return Ok(Limit::Infinity);
    }
    let bad = || format!("`{s}` is not a size like 4096, 512K, 256M or 1.5G");
    let (num, shift) = match s.chars().last().ok_or_else(bad)?.to_ascii_uppercase() {
        'B' => (&s[..s.len() - 1], 0),
        'K' => (&s[..s.len() - 1], 10),
        'M' => (&s[..s.len() - 1], 20),
        'G' => (&s[..s.len() - 1], 30),
        'T' => (&s[..s.len() - 1], 40),
        'P' => (&s[..s.len() - 1], 50),
        'E' => (&s[..s.len() - 1], 60),
        _ => (s, 0),
    };
    let n: f64 = num.trim().parse().map_err(|_| bad())?;
    let bytes = n * (1u64 << shift) as f64;
    if !(bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64) {
        return Err(bad());
    }
    Ok(Limit::Finite(bytes.round() as u64))
}

/// A size as the ghost schema writes it: the largest of T, G, M, K that divides it exactly.
pub fn ghost_size(bytes: u64) -> String {
    for (suffix, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
        if bytes != 0 && bytes.is_multiple_of(1u64 << shift) {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// `50%` or `12.5%` → the number.
pub fn percent(s: &str) -> Option<f64> {
    let n: f64 = s.trim().strip_suffix('%')?.trim().parse().ok()?;
    (n.is_finite() && n >= 0.0).then_some(n)
}

/// The signals ghost-init's `stop_signal` accepts, by systemd's spelling (`SIGTERM`, `TERM`, `15`).
pub fn ghost_signal(s: &str) -> Option<&'static str> {
    const SIGNALS: [(&str, i32); 9] = [("HUP", 1), ("INT", 2), ("QUIT", 3), ("KILL", 9), ("USR1", 10), ("USR2", 12), ("TERM", 15), ("WINCH", 28), ("PWR", 30)];
    let s = s.trim();
    let name = s.strip_prefix("SIG").unwrap_or(s);
    SIGNALS.iter().find(|(n, num)| *n == name || name.parse() == Ok(*num)).map(|(n, _)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Limit::*;

    #[test]
    fn time_spans() {
        let ms = |s: &str| match time_span_us(s).unwrap() {
            Finite(us) => us / 1000,
            Infinity => u128::MAX,
        };
        assert_eq!(ms("100ms"), 100);
        assert_eq!(ms("5s"), 5000);
        assert_eq!(ms("5"), 5000);
        assert_eq!(ms("1min"), 60_000);
        assert_eq!(ms("1min 30s"), 90_000);
        assert_eq!(ms("2m30"), 150_000);
        assert_eq!(ms("1.5s"), 1500);
        assert_eq!(ms("1h"), 3_600_000);
        assert_eq!(ms("infinity"), u128::MAX);
        assert_eq!(time_span_us("250us").unwrap(), Finite(250));
        for bad in ["", "fast", "5 parsecs", "1..2s"] {
            assert!(time_span_us(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(byte_size("512M").unwrap(), Finite(512 << 20));
        assert_eq!(byte_size("1.5G").unwrap(), Finite(3 << 29));
        assert_eq!(byte_size("4096").unwrap(), Finite(4096));
        assert_eq!(byte_size("2T").unwrap(), Finite(2 << 40));
        assert_eq!(byte_size("infinity").unwrap(), Infinity);
        assert!(byte_size("50%").is_err() && byte_size("lots").is_err());
        assert_eq!(ghost_size(512 << 20), "512M");
        assert_eq!(ghost_size(3 << 29), "1536M");
        assert_eq!(ghost_size(1000), "1000");
        assert_eq!(ghost_size(2 << 40), "2T");
    }

    #[test]
    fn percents_and_signals() {
        assert_eq!(percent("50%"), Some(50.0));
        assert_eq!(percent("12.5%"), Some(12.5));
        assert_eq!(percent("50"), None);
        assert_eq!(ghost_signal("SIGTERM"), Some("TERM"));
        assert_eq!(ghost_signal("QUIT"), Some("QUIT"));
        assert_eq!(ghost_signal("9"), Some("KILL"));
        assert_eq!(ghost_signal("SIGRTMIN+3"), None);
        assert_eq!(ghost_signal("SIGCONT"), None);
    }
}
