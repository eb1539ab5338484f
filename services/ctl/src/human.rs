//! Figures as an operator reads them: uptimes (3s, 2m10s, 1h05m), sizes (12.3M) and
//! timestamps (HH:MM:SS.mmm in the local time zone, with the date when it is not today).

use crate::sys::{local_time, LocalTime};

/// `3s`, `2m10s`, `1h05m`, `2d03h`: two units at most, the larger first.
pub fn duration_s(secs: f64) -> String {
    let s = if secs.is_finite() && secs > 0.0 { secs as u64 } else { 0 };
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Like [`duration_s`], but milliseconds below one second (`250ms`), for restart delays.
pub fn duration_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 10_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        duration_s(ms as f64 / 1000.0)
    }
}

/// `512B`, `4K`, `12.3M`, `256M`, `1.5G` (powers of 1024, as the service files write sizes).
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    let tenths = (v * 10.0).round() as u64;
    if v < 100.0 && !tenths.is_multiple_of(10) {
        format!("{}.{}{}", tenths / 10, tenths % 10, UNITS[unit])
    } else {
        format!("{}{}", v.round() as u64, UNITS[unit])
    }
}

/// `HH:MM:SS.mmm` for a moment of today, `YYYY-MM-DD HH:MM:SS.mmm` for any other day.
pub fn timestamp(ts_ms: u64, today: Option<LocalTime>) -> String {
    let Some(t) = local_time((ts_ms / 1000) as i64) else { return format!("@{ts_ms}") };
    let clock = format!("{:02}:{:02}:{:02}.{:03}", t.hour, t.minute, t.second, ts_ms % 1000);
    match today {
        Some(d) if (d.year, d.month, d.day) == (t.year, t.month, t.day) => clock,
        _ => format!("{:04}-{:02}-{:02} {clock}", t.year, t.month, t.day),
    }
}

/// The local date and time now, to decide whether a timestamp needs its date.
pub fn today() -> Option<LocalTime> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?;
    local_time(now.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_an_operator_writes_them() {
        assert_eq!(duration_s(0.4), "0s");
        assert_eq!(duration_s(3.9), "3s");
        assert_eq!(duration_s(130.0), "2m10s");
        assert_eq!(duration_s(3900.0), "1h05m");
        assert_eq!(duration_s(2.0 * 86_400.0 + 3.0 * 3600.0 + 59.0), "2d03h");
        assert_eq!(duration_s(f64::NAN), "0s");
        assert_eq!(duration_ms(250), "250ms");
        assert_eq!(duration_ms(1500), "1.5s");
        assert_eq!(duration_ms(30_000), "30s");
    }

    #[test]
    fn sizes_use_one_decimal_only_where_it_says_something() {
        assert_eq!(size(512), "512B");
        assert_eq!(size(4096), "4K");
        assert_eq!(size(12_897_485), "12.3M");
        assert_eq!(size(256 << 20), "256M");
        assert_eq!(size(3 << 29), "1.5G");
    }

    #[test]
    fn timestamps_carry_the_date_only_when_it_is_not_today() {
        let ts = 1_700_000_000_123;
        let that_day = local_time(1_700_000_000);
        let same = timestamp(ts, that_day);
        assert!(same.len() == 12 && same.ends_with(":20.123"), "{same}");
        let other = timestamp(ts, local_time(1_800_000_000));
        assert!(other.starts_with("2023-11-1") && other.ends_with(&same), "{other}");
    }
}
