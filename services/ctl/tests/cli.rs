//! The ghostctl binary without a ghost-init: import-unit's outputs and exit codes, `--help`.
//! (Tests against a running ghost-init are in the workspace's tests/ctl.rs.)

use std::process::Command;

fn ghostctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ghostctl")).args(args).env_remove("GHOST_SOCKET").env_remove("GHOST_ROOT").output().expect("run ghostctl")
}

const REDIS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/redis-server.service");

#[test]
fn import_unit_writes_toml_to_stdout_and_the_not_carried_list_to_stderr() {
    let o = ghostctl(&["import-unit", REDIS]);
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8(o.stdout).unwrap();
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(out.contains("\nexec = [\"/usr/bin/redis-server\", \"/etc/redis/redis.conf\", \"--supervised\", \"systemd\", \"--daemonize\", \"no\"]\n"), "{out}");
    assert!(out.contains("\nready = \"notify\"\n") && out.contains("\nuser = \"redis\"\n"), "{out}");
    assert!(!out.lines().any(|l| l.starts_with("not carried")), "the report is not mixed into the file");
    assert!(err.lines().any(|l| l.starts_with("not carried over: [Service] PIDFile=/run/redis/redis-server.pid (")), "{err}");
    // The same list is in the file as comments.
    assert!(out.contains("#   [Service] PIDFile=/run/redis/redis-server.pid ("), "{out}");
}

#[test]
fn import_unit_with_output_writes_the_file_and_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("redis-server.toml");
    let o = ghostctl(&["import-unit", REDIS, "-o", target.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout.is_empty());
    let toml = std::fs::read_to_string(&target).unwrap();
    assert!(toml.starts_with("# redis-server: imported from "), "{toml}");

    let o = ghostctl(&["import-unit", "/nonexistent/x.service"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/x.service"));
    let o = ghostctl(&["import-unit", REDIS, "-o", "/nonexistent/dir/x.toml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot write /nonexistent/dir/x.toml"));
}

#[test]
fn help_documents_the_exit_codes_and_usage_errors_exit_2() {
    let o = ghostctl(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let help = String::from_utf8(o.stdout).unwrap();
    for line in ["0  ok", "1  ghost-init answered with an error", "2  usage error", "3  cannot reach the control socket", "4  status NAME only"] {
        assert!(help.contains(line), "{line} not in --help:\n{help}");
    }
    assert_eq!(ghostctl(&["logs", "-n", "x"]).status.code(), Some(2));
    assert_eq!(ghostctl(&["frobnicate"]).status.code(), Some(2));
}
