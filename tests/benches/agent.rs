//! Agent benchmarks (issue 6), each beside a baseline measured in the same run:
//! - time from a service's death (kill -9) to its verified repair by the agent (the Sentinel's
//!   revive playbook: precondition, log.tail, service.start through policy and the audit trail,
//!   verification holding 100 ms), against ghost-init's own restart of a `restart = "always"`
//!   service (kill -9 → running again), both as an observer polling the sockets sees them;
//! - the agent's resident memory and CPU at idle, against ghost-init's in the same window.
//!
//! Run: `tests/run` builds what it needs once; then
//! `cargo build -p ghost && cargo bench -p ghost-tests --bench agent`.

use ghost_proto::agent::AgentRequest;
use ghost_tests::measure::{cpu_ticks, percentile, rss_kib};
use ghost_tests::agent_world::{kill, World};
use ghost_tests::{status, Isolation};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

const KILLS: usize = 40;

fn agent_status(w: &World) -> Value {
    let mut s = UnixStream::connect(w.path("/run/ghost/agent.sock")).unwrap();
    s.write_all(ghost_proto::to_line(&AgentRequest::Status).as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    serde_json::from_str::<Value>(&line).unwrap()["result"].clone()
}

fn wait_until(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn main() {
    let svc = |restart: &str| format!("exec = [\"/bin/sleep\", \"100000\"]\nrestart = \"{restart}\"\nrestart_reset_s = 0\n");
    // The revive rule's 2 s cooldown would make this take minutes; the playbook is the same.
    // One service per kill: the same service dying 40 times in a row is a flood, which the
    // attention filter folds (8 per 10 s), and the revive rule cools down 2 s per service.
    let mut services: Vec<(String, String)> = (0..KILLS).map(|i| (format!("dead{i}"), svc("never"))).collect();
    services.push(("sup".into(), svc("always")));
    let services: Vec<(&str, String)> = services.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    // The shipped rules and agent.toml defaults: heartbeat 50 ms to 5 s, sampler every 2 s.
    let w = World::start_configured(&services, |r| r, Isolation::Subreaper, "");
    let (mut agent, mut supervisor) = (Vec::new(), Vec::new());
    for i in 0..KILLS {
        // Baseline: ghost-init restarts it itself.
        let pid = w.running_pid("sup");
        let t = Instant::now();
        kill(pid, libc::SIGKILL);
        wait_until(|| {
            let s = status(&w.root, "sup");
            s.state == ghost_proto::State::Running && s.pid != Some(pid)
        });
        supervisor.push(t.elapsed().as_secs_f64() * 1000.0);
        // The agent: detection, decision, playbook through the gate, verification.
        let pid = w.running_pid(&format!("dead{i}"));
        let before = agent_status(&w)["repairs_verified"].as_u64().unwrap();
        let t = Instant::now();
        kill(pid, libc::SIGKILL);
        wait_until(|| agent_status(&w)["repairs_verified"].as_u64().unwrap() > before);
        agent.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let status = agent_status(&w);
    let (a50, a95) = (percentile(&mut agent, 0.5), percentile(&mut agent, 0.95));
    let (s50, s95) = (percentile(&mut supervisor, 0.5), percentile(&mut supervisor, 0.95));
    println!("death → verified repair by the agent ({KILLS} services killed once each): p50 {a50:.1} ms, p95 {a95:.1} ms, max {:.1} ms", agent.last().unwrap());
    println!("  as the agent counts it (event time → verified): {}", status["repair_ms"]);
    println!("baseline: ghost-init's own restart (kill → running): p50 {s50:.1} ms, p95 {s95:.1} ms");
    println!("ratio agent/supervisor: p50 {:.1}×, p95 {:.1}×", a50 / s50, a95 / s95);
    println!("audit records written: {}", w.audit_records().len());

    // Idle: nothing happens for 10 s.
    let agent_pid = w.running_pid("agent");
    let init_pid = w.ghost.pid;
    std::thread::sleep(Duration::from_secs(2));
    let (a0, i0, t0) = (cpu_ticks(agent_pid), cpu_ticks(init_pid), Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let secs = t0.elapsed().as_secs_f64();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let pct = |ticks: u64| ticks as f64 / hz / secs * 100.0;
    let (acpu, icpu) = (pct(cpu_ticks(agent_pid) - a0), pct(cpu_ticks(init_pid) - i0));
    let status = agent_status(&w);
    println!(
        "idle 10 s: agent RSS {} KiB, CPU {acpu:.2}% (heartbeat {} ms, sampler every 2 s) — ghost-init RSS {} KiB, CPU {icpu:.2}%",
        rss_kib(agent_pid),
        status["interval_ms"],
        rss_kib(init_pid)
    );
}
