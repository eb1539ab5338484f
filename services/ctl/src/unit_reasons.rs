//! Why a systemd key has no place in a ghost service file, in words an operator can act on.
//! import-unit lists every such key; these are the reasons it gives.

/// The reason `[section] key=` is not carried over.
pub fn why_not(section: &str, key: &str) -> &'static str {
    const SANDBOX: &[&str] = &[
        "NoNewPrivileges", "CapabilityBoundingSet", "AmbientCapabilities", "SecureBits", "DynamicUser",
        "SystemCallFilter", "SystemCallArchitectures", "SystemCallErrorNumber", "SystemCallLog",
        "ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths", "ExecPaths", "NoExecPaths",
        "ReadWriteDirectories", "ReadOnlyDirectories", "InaccessibleDirectories", "TemporaryFileSystem",
        "BindPaths", "BindReadOnlyPaths", "RootDirectory", "RootImage", "MountAPIVFS", "LockPersonality",
        "MemoryDenyWriteExecute", "RemoveIPC", "KeyringMode", "DevicePolicy", "DeviceAllow",
        "IPAddressAllow", "IPAddressDeny", "SELinuxContext", "AppArmorProfile", "SmackProcessLabel",
        "NetworkNamespacePath", "IPCNamespacePath", "PrivateMounts", "MountFlags",
    ];
    const DIRECTORIES: &[&str] = &["RuntimeDirectory", "StateDirectory", "CacheDirectory", "LogsDirectory", "ConfigurationDirectory"];
    const LOGGING: &[&str] = &[
        "StandardOutput", "StandardError", "StandardInput", "StandardInputText", "StandardInputData",
        "SyslogIdentifier", "SyslogFacility", "SyslogLevel", "SyslogLevelPrefix", "LogLevelMax", "LogExtraFields",
        "LogRateLimitIntervalSec", "LogRateLimitBurst", "LogNamespace",
    ];
    const SCHEDULING: &[&str] = &[
        "Nice", "CPUSchedulingPolicy", "CPUSchedulingPriority", "CPUSchedulingResetOnFork", "CPUAffinity",
        "NUMAPolicy", "NUMAMask", "IOSchedulingClass", "IOSchedulingPriority", "OOMScoreAdjust",
        "CPUWeight", "StartupCPUWeight", "CPUShares", "IOWeight", "StartupIOWeight", "BlockIOWeight",
        "AllowedCPUs", "AllowedMemoryNodes",
    ];
    const ORDERING: &[&str] = &[
        "BindsTo", "PartOf", "Conflicts", "Requisite", "Upholds", "OnFailure", "OnSuccess",
        "PropagatesReloadTo", "ReloadPropagatedFrom", "PropagatesStopTo", "StopPropagatedFrom", "JoinsNamespaceOf",
    ];
    let among = |list: &[&str]| list.contains(&key);
    let starts = |prefix: &str| key.starts_with(prefix);
    match section {
        "Install" => return "ghost starts every file in /etc/ghost/services; there is no enable step, target or alias",
        "Unit" | "Service" => {}
        _ => return "a section ghost has no equivalent for",
    }
    match key {
        "Documentation" => "documentation links have no place in a ghost service file",
        "Wants" => "ghost has no weak dependencies: use `after` for ordering or `requires` for a hard dependency",
        "Before" => "ghost orders from the other side only: add `after` to the other service's file",
        k if ORDERING.contains(&k) => "ghost has only `requires` and `after`",
        k if k.starts_with("Condition") || k.starts_with("Assert") => "ghost starts every service file; it has no start conditions",
        "StartLimitIntervalSec" | "StartLimitInterval" | "StartLimitBurst" | "StartLimitAction" => {
            "ghost never gives up on a service: repeated failures back off up to restart_max_delay_ms"
        }
        "DefaultDependencies" => "ghost adds no implicit dependencies",
        "PIDFile" => "ghost tracks the process it started itself; there is no PID file",
        "ExecStartPre" | "ExecStartPost" | "ExecCondition" => {
            "ghost runs one command per service: run this from a wrapper script, or as a service of its own that this one is `after`"
        }
        "ExecReload" => "ghost has no per-service reload command; `ghostctl reload` re-reads the service files",
        "ExecStop" | "ExecStopPost" => "ghost stops a service with stop_signal, then SIGKILL after stop_timeout_s",
        "KillMode" => "ghost always signals the service's whole process group, or its cgroup where there is one",
        "SendSIGKILL" | "FinalKillSignal" | "SendSIGHUP" | "RestartKillSignal" | "WatchdogSignal" => {
            "ghost sends stop_signal, then SIGKILL after stop_timeout_s"
        }
        "TimeoutStartSec" => "ghost has no start timeout",
        "TimeoutAbortSec" => "ghost has no abort timeout: a watchdog failure is handled like a stop",
        "RestartSteps" => "ghost's backoff doubles from restart_delay_ms up to restart_max_delay_ms by itself",
        "RestartPreventExitStatus" | "RestartForceExitStatus" | "SuccessExitStatus" => "ghost tells success from failure by exit code 0 alone",
        "RemainAfterExit" => "ghost supervises long-running processes; a service that exits is not kept as active",
        "EnvironmentFile" => "ghost does not read environment files: copy the variables into `env`",
        "PassEnvironment" | "UnsetEnvironment" => "a ghost service gets PATH, HOME, GHOST_* and its own `env` only",
        "SupplementaryGroups" => "ghost gives a service the groups that /etc/group lists for its user",
        "UMask" => "ghost sets no umask per service",
        "Slice" | "Delegate" | "DelegateSubgroup" => "ghost puts each service in its own cgroup under /sys/fs/cgroup/ghost",
        "MemoryHigh" | "MemoryLow" | "MemoryMin" | "MemorySwapMax" | "MemoryZSwapMax" => "ghost sets memory.max only, as `memory_max`",
        k if k.ends_with("Accounting") => "ghost's cgroups account for every service anyway",
        k if k.starts_with("Limit") => "only the open-file limit, `nofile`, is in the ghost schema",
        _ if among(SANDBOX) || starts("Private") || starts("Protect") || starts("Restrict") => {
            "sandboxing: ghost has no per-service sandbox; the service runs with its user's rights"
        }
        k if DIRECTORIES.iter().any(|d| k.starts_with(d)) => {
            "ghost does not create a service's directories: ship them in the image or create them in a wrapper"
        }
        k if LOGGING.contains(&k) => "ghost captures stdout and stderr itself, into /var/log/ghost/NAME.log and `ghostctl logs`",
        k if SCHEDULING.contains(&k) => "the ghost schema has no scheduling priorities or weights",
        "OOMPolicy" => "ghost reports an OOM kill and restarts by `restart`; there is no other OOM policy",
        "NotifyAccess" => "ghost accepts sd_notify messages from the service's own processes",
        "BusName" => "ghost has no D-Bus readiness",
        "GuessMainPID" => "ghost knows the main process: it started it",
        _ => "no equivalent in the ghost service schema",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_keys_get_a_specific_reason() {
        assert!(why_not("Service", "PIDFile").contains("PID file"));
        assert!(why_not("Service", "ProtectSystem").starts_with("sandboxing"));
        assert!(why_not("Service", "ReadWritePaths").starts_with("sandboxing"));
        assert!(why_not("Service", "RuntimeDirectoryMode").contains("directories"));
        assert!(why_not("Service", "LimitCORE").contains("nofile"));
        assert!(why_not("Install", "WantedBy").contains("enable"));
        assert!(why_not("Unit", "ConditionPathExists").contains("conditions"));
        assert_eq!(why_not("Service", "FrobnicateSec"), "no equivalent in the ghost service schema");
    }
}
