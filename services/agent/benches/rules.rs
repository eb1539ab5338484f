//! Rule decision latency: 300 rules (the Sentinel's shapes, over 100 services and 3 sources,
//! with text regexes and thresholds) and 100,000 observations, one decision each, timed one by
//! one. Baseline, same run: trying every rule in priority order (no index by source).
//! `cargo bench -p ghost-agent --bench rules`.

use ghost_agent::{Observation, RuleSet, Source};
use std::path::PathBuf;
use std::time::Instant;

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let mut text = String::from("[[playbook]]\nname = \"restart\"\nsteps = [{ tool = \"service.restart\", args = { name = \"{service}\" } }]\n");
    text.push_str("[[playbook]]\nname = \"clean\"\nsteps = [{ tool = \"fs.list\", args = { path = \"{data.path}\" } }]\n");
    for i in 0..100 {
        text.push_str(&format!("[[rule]]\nname = \"dead-{i}\"\nwhen = {{ source = \"supervisor\", kind = [\"exited\", \"oom\"], service = \"svc{i}*\" }}\nplaybook = \"restart\"\npriority = {}\n", i % 7));
        text.push_str(&format!("[[rule]]\nname = \"log-{i}\"\nwhen = {{ source = \"log\", kind = \"error\", service = \"svc{i}\", text = \"(?i)connection (refused|reset) .*port {}\" }}\nplaybook = \"restart\"\n", 1000 + i));
        text.push_str(&format!("[[rule]]\nname = \"metric-{i}\"\nwhen = {{ source = \"metrics\", kind = \"m{i}\", above = 90.0 }}\nplaybook = \"clean\"\n"));
    }
    let (set, problems) = RuleSet::parse(&[(PathBuf::from("bench.toml"), text)]);
    assert!(problems.is_empty(), "{problems:?}");
    let observations: Vec<Observation> = (0..100_000u64)
        .map(|n| {
            let i = n % 100;
            match n % 3 {
                0 => Observation::new(Source::Supervisor, if n % 2 == 0 { "exited" } else { "ready" }, "status 1", n).service(&format!("svc{i}")),
                1 => Observation::new(Source::Log, "error", &format!("upstream: connection refused to 10.0.0.1 port {}", 1000 + (n % 150)), n).service(&format!("svc{i}")),
                _ => Observation::new(Source::Metrics, &format!("m{i}"), "metric", n).data(serde_json::json!({"value": (n % 100) as f64, "path": "/tmp"})),
            }
        })
        .collect();
    let time = |f: &dyn Fn(&Observation) -> bool| -> (Vec<u64>, usize) {
        let mut ns = Vec::with_capacity(observations.len());
        let mut hits = 0;
        for o in &observations {
            let t = Instant::now();
            hits += f(o) as usize;
            ns.push(t.elapsed().as_nanos() as u64);
        }
        ns.sort_unstable();
        (ns, hits)
    };
    let (indexed, hits_a) = time(&|o| set.decide(o).is_some());
    let (scanning, hits_b) = time(&|o| set.decide_scanning(o).is_some());
    assert_eq!(hits_a, hits_b, "the index and the scan must decide alike");
    println!("rules: {} rules, {} observations, {} decided by a rule", set.rules().len(), observations.len(), hits_a);
    for (name, ns) in [("indexed", &indexed), ("scan (baseline)", &scanning)] {
        println!("{name:>16}: p50 {:.2} µs  p99 {:.2} µs  max {:.1} µs", percentile(ns, 0.5) as f64 / 1e3, percentile(ns, 0.99) as f64 / 1e3, *ns.last().unwrap() as f64 / 1e3);
    }
    println!("ratio p99 indexed/scan: {:.3}", percentile(&indexed, 0.99) as f64 / percentile(&scanning, 0.99) as f64);
}
