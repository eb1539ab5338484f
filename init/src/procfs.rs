//! /proc/PID/stat, read in one place: the process table at shutdown and in the rescue
//! console, a process's group (notify senders) and state (a SIGSTOPped service is hung).

/// The fields of /proc/PID/stat that PID 1 uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    pub comm: String,
    /// `R`, `S`, `D`, `Z`, `T` (stopped), `t` (traced), …
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    pub kernel_thread: bool,
}

/// Parses one stat line; the command may itself contain spaces and parentheses.
pub fn parse_stat(pid: i32, line: &str) -> Option<Stat> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let f: Vec<&str> = line.get(close + 1..)?.split_whitespace().collect();
    // After the command: state(0) ppid(1) pgrp(2) session(3) tty(4) tpgid(5) flags(6).
    let flags: u64 = f.get(6)?.parse().ok()?;
    Some(Stat {
        pid,
        comm: line.get(open + 1..close)?.to_string(),
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        // PF_KTHREAD; pid 2 is kthreadd itself.
        kernel_thread: flags & 0x0020_0000 != 0 || pid == 2,
    })
}

pub fn stat(pid: i32) -> Option<Stat> {
    parse_stat(pid, &std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every process /proc shows, in pid order.
pub fn processes() -> Vec<Stat> {
    let Ok(rd) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut pids: Vec<i32> = rd.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect();
    pids.sort();
    pids.into_iter().filter_map(stat).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_command_names_and_fields() {
        let s = parse_stat(42, "42 (my (odd) prog) T 1 40 40 0 -1 4194560 0 0").unwrap();
        assert_eq!((s.comm.as_str(), s.state, s.ppid, s.pgrp, s.kernel_thread), ("my (odd) prog", 'T', 1, 40, false));
        assert!(parse_stat(7, "7 (kworker/0:1) I 2 0 0 0 -1 69238880 0").unwrap().kernel_thread);
        assert_eq!(parse_stat(1, "garbage"), None);
        let me = stat(std::process::id() as i32).unwrap();
        assert_eq!((me.pid, me.ppid), (std::process::id() as i32, std::os::unix::process::parent_id() as i32));
    }
}
