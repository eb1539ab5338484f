//! sys.metrics: load, CPU usage, memory, swap, disks, uptime (sysinfo).

use serde_json::{json, Value};
use sysinfo::{Disks, System};

pub fn collect(args: &Value) -> Result<Value, String> {
    let sample_ms = args.get("cpu_sample_ms").and_then(Value::as_u64).unwrap_or(200);
    let with_disks = args.get("disks").and_then(Value::as_bool).unwrap_or(true);
    let mut sys = System::new();
    sys.refresh_memory();
    let cpu_usage = if sample_ms > 0 {
        sys.refresh_cpu_usage();
        std::thread::sleep(std::time::Duration::from_millis(
            sample_ms.max(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL.as_millis() as u64),
        ));
        sys.refresh_cpu_usage();
        Some(((sys.global_cpu_usage() as f64) * 10.0).round() / 10.0)
    } else {
        None
    };
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0).max(sys.cpus().len());
    let load = System::load_average();
    let disks: Vec<Value> = if with_disks {
        Disks::new_with_refreshed_list()
            .list()
            .iter()
            .map(|d| {
                json!({
                    "mount": d.mount_point().to_string_lossy(),
                    "fs": d.file_system().to_string_lossy(),
                    "total_bytes": d.total_space(),
                    "available_bytes": d.available_space(),
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(json!({
        "hostname": System::host_name(),
        "uptime_s": System::uptime(),
        "load_avg": [load.one, load.five, load.fifteen],
        "cpus": cpus,
        "cpu_usage_percent": cpu_usage,
        "memory": {
            "total_bytes": sys.total_memory(),
            "used_bytes": sys.used_memory(),
            "available_bytes": sys.available_memory(),
        },
        "swap": { "total_bytes": sys.total_swap(), "used_bytes": sys.used_swap() },
        "disks": disks,
        "processes": super::process::pids().len(),
    }))
}
