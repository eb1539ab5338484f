//! process.list (from /proc) and process.kill (kill(2)).

use serde_json::{json, Value};

/// One process as /proc describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: i32,
    pub ppid: i32,
    pub name: String,
    pub state: String,
    pub threads: u64,
    pub rss_kib: u64,
}

/// Parses `/proc/PID/stat`; the name sits in parentheses and may itself hold `)` and spaces.
pub fn parse_stat(stat: &str) -> Option<ProcInfo> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let pid = stat[..open].trim().parse().ok()?;
    let name = stat.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // rest[0] = state (field 3), rest[1] = ppid (4), rest[17] = num_threads (20), rest[21] = rss pages (24)
    let page_kib = (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) / 1024) as u64;
    Some(ProcInfo {
        pid,
        ppid: rest.get(1)?.parse().ok()?,
        name,
        state: rest.first()?.to_string(),
        threads: rest.get(17).and_then(|s| s.parse().ok()).unwrap_or(0),
        rss_kib: rest.get(21).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) * page_kib,
    })
}

/// The real uid from `/proc/PID/status`.
pub fn status_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|u| u.parse().ok())
}

pub fn cmdline(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut s: String = String::from_utf8_lossy(&raw[..raw.len().min(4096)])
        .split('\0')
        .filter(|a| !a.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if raw.len() > 4096 {
        s.push('…');
    }
    s
}

/// The numeric entries of /proc.
pub fn pids() -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    pids.sort_unstable();
    pids
}

pub fn list(args: &Value) -> Result<Value, String> {
    let filter = args.get("filter").and_then(Value::as_str).unwrap_or("");
    let max = args.get("max").and_then(Value::as_u64).unwrap_or(500) as usize;
    let mut out = Vec::new();
    let mut total = 0usize;
    for pid in pids() {
        // A process may end between the listing and the read: skip it.
        let Some(info) = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| parse_stat(&s)) else {
            continue;
        };
        let cmd = cmdline(pid);
        if !filter.is_empty() && !info.name.contains(filter) && !cmd.contains(filter) {
            continue;
        }
        total += 1;
        if out.len() >= max {
            continue;
        }
        let uid = std::fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|s| status_uid(&s));
        out.push(json!({
            "pid": info.pid,
            "ppid": info.ppid,
            "name": info.name,
            "state": info.state,
            "uid": uid,
            "threads": info.threads,
            "rss_kib": info.rss_kib,
            "cmdline": cmd,
        }));
    }
    let truncated = total > out.len();
    Ok(json!({ "processes": out, "total": total, "truncated": truncated }))
}

pub fn signal_number(name: &str) -> Option<i32> {
    Some(match name {
        "TERM" => libc::SIGTERM,
        "KILL" => libc::SIGKILL,
        "INT" => libc::SIGINT,
        "HUP" => libc::SIGHUP,
        "QUIT" => libc::SIGQUIT,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        _ => return None,
    })
}

pub fn kill(args: &Value) -> Result<Value, String> {
    let pid = args.get("pid").and_then(Value::as_i64).unwrap_or(0);
    let name = args.get("signal").and_then(Value::as_str).unwrap_or("TERM");
    let sig = signal_number(name).ok_or_else(|| format!("unknown signal {name}"))?;
    // The schema says pid >= 2; this guards against a caller that skipped validation.
    if pid <= 1 || pid > i32::MAX as i64 {
        return Err(format!("refusing to signal pid {pid}"));
    }
    if pid == std::process::id() as i64 {
        return Err("refusing to signal the agent itself".into());
    }
    if unsafe { libc::kill(pid as i32, sig) } != 0 {
        return Err(format!("kill({pid}, SIG{name}): {}", std::io::Error::last_os_error()));
    }
    Ok(json!({ "pid": pid, "signal": name, "sent": true }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_parentheses_in_the_name_parses() {
        let s = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 100 1000000 250 18446744073709551615";
        let p = parse_stat(s).unwrap();
        assert_eq!((p.pid, p.ppid, p.name.as_str(), p.state.as_str(), p.threads), (1234, 1, "my (odd) name", "S", 3));
        assert!(p.rss_kib >= 1000);
        assert_eq!(status_uid("Name:\tx\nUid:\t1000\t1000\t1000\t1000\n"), Some(1000));
        assert!(parse_stat("garbage").is_none());
    }
}
