//! The supervisor and the control plane with real processes (issue 3): restarts, backoff,
//! health, readiness, dependencies, reload, logs, events, bad protocol input, and real
//! daemons from Debian's packages (redis-server, nginx) killed and coming back serving.

use ghost_proto::{EventKind, State};
use ghost_tests::{ask_swappable, control, eventually, free_port, status, wait_for_control, Ghost, Isolation, Root, SWAPPABLE};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(20);

fn kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a pid of our test's tree.
    unsafe { libc::kill(pid, sig) };
}

fn running_pid(root: &Root, name: &str) -> i32 {
    let mut pid = 0;
    assert!(eventually(Duration::from_secs(15), || {
        let s = status(root, name);
        pid = s.pid.unwrap_or(0);
        s.state == State::Running
    }), "{name} is not running: {:?}", status(root, name));
    pid
}

fn boot(root: &Root) -> Ghost {
    let g = Ghost::start(root, Isolation::Subreaper, "");
    wait_for_control(root, BOOT);
    g
}

#[test]
fn kill_9_restarts_at_once_and_status_shows_it() {
    let root = Root::new();
    root.service("app", "description = \"an app\"\nexec = [\"/bin/sleep\", \"1000\"]\n");
    let mut g = boot(&root);
    let pid = running_pid(&root, "app");
    let t = Instant::now();
    kill(pid, libc::SIGKILL);
    let mut new = 0;
    assert!(eventually(Duration::from_secs(5), || {
        let s = status(&root, "app");
        new = s.pid.unwrap_or(0);
        s.state == State::Running && new != pid
    }));
    let took = t.elapsed();
    let s = status(&root, "app");
    assert_eq!((s.restarts, s.last_exit.as_deref(), s.description.as_str()), (1, Some("signal 9"), "an app"));
    assert!(took < Duration::from_secs(2), "restart took {took:?}");
    g.console.wait_for("service app (pid", BOOT);
    g.signal(libc::SIGTERM);
    assert!(g.wait_exit(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn a_crash_loop_backs_off_is_shown_and_a_healthy_run_resets_it() {
    let root = Root::new();
    let flag = root.path().join("healthy");
    // Crashes at once until the flag file exists, then stays up.
    root.service(
        "flaky",
        &format!(
            "exec = [\"/bin/sh\", \"-c\", \"test -e {} && exec sleep 1000; exit 3\"]\nrestart_delay_ms = 20\nrestart_max_delay_ms = 200\nrestart_reset_s = 1\n",
            flag.display()
        ),
    );
    let mut g = boot(&root);
    g.console.wait_for("service flaky: crash loop: 5 failures in a row", BOOT);
    assert!(eventually(Duration::from_secs(5), || status(&root, "flaky").state == State::CrashLoop));
    let s = status(&root, "flaky");
    assert!(s.next_restart_ms.unwrap() <= 220, "the delay is capped at restart_max_delay_ms: {s:?}");
    // It keeps being retried (never gives up), and once it can run it runs.
    std::fs::write(&flag, "").unwrap();
    let pid = running_pid(&root, "flaky");
    // After restart_reset_s of healthy running, a crash restarts immediately again.
    std::thread::sleep(Duration::from_millis(1200)); // the healthy run itself is what is tested
    std::fs::remove_file(&flag).unwrap();
    let restarts = |t: &str| t.lines().filter(|l| l.contains("service flaky: restarting in")).map(str::to_string).collect::<Vec<_>>();
    let before = restarts(&g.console.text()).len();
    kill(pid, libc::SIGKILL);
    assert!(eventually(Duration::from_secs(10), || restarts(&g.console.text()).len() > before));
    let next = restarts(&g.console.text())[before].clone();
    assert!(next.ends_with("restarting in 0 ms"), "the backoff was reset after a healthy run: {next}");
    g.signal(libc::SIGTERM);
    assert!(g.wait_exit(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn a_stopped_process_fails_its_health_check_and_is_restarted() {
    let root = Root::new();
    root.service("hang", "exec = [\"/bin/sleep\", \"1000\"]\nhealth = { exec = [\"/bin/true\"], interval_s = 1, timeout_s = 1, failures = 2 }\n");
    let mut g = boot(&root);
    let pid = running_pid(&root, "hang");
    assert!(eventually(Duration::from_secs(5), || status(&root, "hang").health == Some(ghost_proto::Health::Healthy)));
    let t = Instant::now();
    kill(pid, libc::SIGSTOP);
    g.console.wait_for("service hang (pid", BOOT);
    let line = g.console.wait_for("unhealthy: 2 failed probe(s), last: the main process is stopped (SIGSTOP)", Duration::from_secs(10));
    assert!(line.contains(&pid.to_string()), "{line}");
    let new = running_pid(&root, "hang");
    assert_ne!(new, pid);
    // Two probes at 1 s intervals, then the restart: well within 2 intervals + slack.
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    g.signal(libc::SIGTERM);
    assert!(g.wait_exit(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn readiness_by_notify_fd_and_tcp_orders_dependents() {
    let root = Root::new();
    let port = free_port();
    let order = root.path().join("order");
    let o = order.display();
    // `fd:3` (a newline on fd 3) and `tcp:PORT` carry the ordering here; sd_notify readiness
    // is exercised by the real redis-server below.
    root.service("base", &format!("exec = [\"/bin/sh\", \"-c\", \"echo base >> {o}; echo >&3; exec sleep 1000\"]\nready = \"fd:3\"\n"))
        .service("listener", &format!("exec = [\"/bin/sh\", \"-c\", \"echo listener >> {o}; exec /bin/busybox httpd -f -p 127.0.0.1:{port} -h /\"]\nready = \"tcp:{port}\"\nrequires = [\"base\"]\n"))
        .service("top", &format!("exec = [\"/bin/sh\", \"-c\", \"echo top >> {o}; exec sleep 1000\"]\nrequires = [\"listener\"]\n"));
    let mut g = boot(&root);
    running_pid(&root, "top");
    // `top` is ready once forked (ready = "started"); its first line may still be on its way.
    let order_is = |want: &str| eventually(Duration::from_secs(5), || std::fs::read_to_string(&order).unwrap_or_default() == want);
    assert!(order_is("base\nlistener\ntop\n"), "{:?}", std::fs::read_to_string(&order));
    // Stopping `base` stops what requires it first, in reverse order.
    let r = control(&root, "{\"cmd\":\"stop\",\"name\":\"base\"}");
    assert!(r.ok);
    assert!(eventually(Duration::from_secs(10), || status(&root, "base").state == State::Stopped));
    assert_eq!(status(&root, "top").state, State::Blocked);
    assert_eq!(status(&root, "listener").state, State::Blocked);
    // Starting `top` brings its requirements back, in order.
    assert!(control(&root, "{\"cmd\":\"start\",\"name\":\"top\"}").ok);
    running_pid(&root, "top");
    assert!(order_is("base\nlistener\ntop\nbase\nlistener\ntop\n"), "{:?}", std::fs::read_to_string(&order));
    g.signal(libc::SIGTERM);
    assert!(g.wait_exit(Duration::from_secs(15)).unwrap().success());
}

#[test]
fn shutdown_stops_in_reverse_dependency_order() {
    let root = Root::new();
    let log = root.path().join("stops");
    let l = log.display();
    for (name, extra) in [("db", ""), ("app", "requires = [\"db\"]\n"), ("web", "requires = [\"app\"]\n")] {
        // Ready (fd 3) only once the trap is set, so a stop can never arrive before it.
        root.service(name, &format!("exec = [\"/bin/sh\", \"-c\", \"trap 'echo {name} >> {l}; exit 0' TERM; echo >&3; sleep 1000 & wait\"]\nready = \"fd:3\"\n{extra}"));
    }
    let mut g = boot(&root);
    running_pid(&root, "web");
    g.signal(libc::SIGTERM);
    assert!(g.wait_exit(Duration::from_secs(15)).unwrap().success());
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "web\napp\ndb\n");
    g.console.wait_for("stopped cleanly (3 services stopped", Duration::from_secs(1));
}

#[test]
fn reload_applies_a_change_to_one_service_only() {
    let root = Root::new();
    root.service("keep", "exec = [\"/bin/sleep\", \"1000\"]\n").service("edit", "exec = [\"/bin/sleep\", \"1000\"]\n").service("drop", "exec = [\"/bin/sleep\", \"1000\"]\n");
    let mut g = boot(&root);
    let (keep, edit) = (running_pid(&root, "keep"), running_pid(&root, "edit"));
    root.service("edit", "exec = [\"/bin/sleep\", \"1001\"]\n").service("new", "exec = [\"/bin/sleep\", \"1000\"]\n").service("bad", "exec = 5\n");
    std::fs::remove_file(root.path().join("etc/ghost/services/drop.toml")).unwrap();
    let r = control(&root, "{\"cmd\":\"reload\"}");
    let rep = r.reload.expect("a reload report");
    assert_eq!((rep.added, rep.removed, rep.changed, rep.unchanged), (vec!["new".to_string()], vec!["drop".to_string()], vec!["edit".to_string()], vec!["keep".to_string()]));
    assert!(rep.errors.iter().any(|e| e.contains("bad.toml") && e.contains("exec")), "{:?}", rep.errors);
    assert_eq!(running_pid(&root, "keep"), keep, "unchanged: same process");
    assert!(eventually(Duration::from_secs(10), || status(&root, "edit").pid.is_some_and(|p| p != edit) && status(&root, "edit").state == State::Running));
    running_pid(&root, "new");
    assert!(eventually(Duration::from_secs(10), || !control(&root, "{\"cmd\":\"status\",\"name\":\"drop\"}").ok), "drop is gone");
    g.signal(libc::SIGTERM);
    assert!(g.wait_exit(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn logs_are_captured_timestamped_kept_and_followed() {
    let root = Root::new();
    let fifo = root.path().join("go");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    root.service(
        "talker",
        &format!("exec = [\"/bin/sh\", \"-c\", \"echo hello out; echo hello err >&2; read x < {}; echo after $x; exec sleep 1000\"]\nlog_max_size = \"1K\"\n", fifo.display()),
    );
    let mut g = boot(&root);
    assert!(eventually(Duration::from_secs(10), || control(&root, "{\"cmd\":\"logs\",\"name\":\"talker\"}").logs.unwrap().len() == 2));
    let lines = control(&root, "{\"cmd\":\"logs\",\"name\":\"talker\",\"lines\":5}").logs.unwrap();
    assert_eq!(lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(), ["hello out", "hello err"]);
    assert_eq!(lines[1].stream, ghost_proto::Stream::Stderr);
    // Follow: the backlog, then new lines as they come.
    let mut s = UnixStream::connect(root.path().join("run/ghost/control.sock")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"{\"cmd\":\"logs\",\"name\":\"talker\",\"follow\":true,\"lines\":1}\n").unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "{\"ok\":true,\"stream\":\"logs\"}\n");
    line.clear();
    r.read_line(&mut line).unwrap();
    assert!(line.contains("hello err"), "{line}");
    std::fs::write(&fifo, "now\n").unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert!(line.contains("\"text\":\"after now\""), "{line}");
    let file = std::fs::read_to_string(root.path().join("var/log/ghost/talker.log")).unwrap();
    assert!(file.lines().any(|l| l.ends_with(" out hello out") && l.starts_with("20")), "{file}");
    assert!(control(&root, "{\"cmd\":\"logs\",\"name\":\"nosuch\"}").error.unwrap().contains("nosuch"));
    drop(s);
    g.signal(libc::SIGTERM);
    assert!(g.wait_exit(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn events_stream_every_state_change() {
    let root = Root::new();
    root.service("ev", "exec = [\"/bin/sleep\", \"1000\"]\n");
    let mut g = boot(&root);
    let pid = running_pid(&root, "ev");
    let mut s = UnixStream::connect(root.path().join("run/ghost/control.sock")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"{\"cmd\":\"events\"}\n").unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "{\"ok\":true,\"stream\":\"events\"}\n");
    kill(pid, libc::SIGKILL);
    let mut kinds = Vec::new();
    while !kinds.contains(&EventKind::Ready) {
        line.clear();
        r.read_line(&mut line).unwrap();
        let item: ghost_proto::StreamItem = serde_json::from_str(&line).unwrap();
        if let ghost_proto::StreamItem::Event(e) = item {
            assert_eq!(e.service.as_deref(), Some("ev"));
            kinds.push(e.kind);
        }
    }
    assert_eq!(kinds, [EventKind::Exited, EventKind::Restarting, EventKind::Starting, EventKind::Ready]);
    g.signal(libc::SIGTERM);
    assert!(g.wait_exit(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn bad_protocol_input_gets_errors_and_costs_nothing() {
    let root = Root::new();
    root.service("x", "exec = [\"/bin/sleep\", \"1000\"]\n");
    let mut g = boot(&root);
    let path = root.path().join("run/ghost/control.sock");
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let cases: Vec<Vec<u8>> = vec![
        b"garbage\n".to_vec(),
        b"{\"cmd\":\"explode\"}\n".to_vec(),
        b"{\"cmd\":\"stop\"}\n".to_vec(),
        b"{\"cmd\":\"stop\",\"name\":\"nosuch\"}\n".to_vec(),
        b"\xff\xfe\x00\x01\n".to_vec(),
        [vec![b'['; 100_000], b"\n".to_vec()].concat(),
        b"[1,2,3]\n".to_vec(),
    ];
    for c in &cases {
        s.write_all(c).unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let reply: ghost_proto::Reply = serde_json::from_str(&line).unwrap();
        assert!(!reply.ok && reply.error.is_some(), "{line}");
    }
    // The same connection still works.
    s.write_all(b"{\"cmd\":\"status\"}\n").unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("{\"ok\":true,\"services\""), "{line}");
    // Clients that vanish mid-request or mid-stream cost nothing.
    for i in 0..50 {
        let mut c = UnixStream::connect(&path).unwrap();
        let _ = c.write_all(if i % 2 == 0 { b"{\"cmd\":\"events\"}\n" } else { b"{\"cmd\":\"sta" });
    }
    for _ in 0..3 {
        let mut c = UnixStream::connect(&path).unwrap();
        c.write_all(b"{\"cmd\":\"logs\",\"follow\":true}\n").unwrap();
        let mut b = [0u8; 10];
        let _ = c.read(&mut b);
    }
    assert_eq!(status(&root, "x").state, State::Running);
    assert!(g.child.try_wait().unwrap().is_none());
    g.signal(libc::SIGTERM);
    assert!(g.wait_exit(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn the_control_socket_refuses_other_users() {
    let root = Root::new();
    root.service("x", "exec = [\"/bin/sleep\", \"1000\"]\n");
    let mut g = boot(&root);
    let path = root.path().join("run/ghost/control.sock");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    // As `nobody`, connecting is refused (by the file mode, before SO_PEERCRED is asked).
    let errno = connect_as(65534, &path);
    assert_eq!(errno, libc::EACCES, "nobody's connect must fail with EACCES, got errno {errno}");
    assert_eq!(connect_as(0, &path), 0, "root may connect");
    g.signal(libc::SIGTERM);
    assert!(g.wait_exit(Duration::from_secs(10)).unwrap().success());
}

/// Connects to `path` from a child running as `uid`; returns 0 or the connect errno.
fn connect_as(uid: u32, path: &std::path::Path) -> i32 {
    // Everything the child touches is prepared before the fork (the test is multi-threaded).
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as _;
    for (d, s) in addr.sun_path.iter_mut().zip(path.as_os_str().as_encoded_bytes()) {
        *d = *s as _;
    }
    // SAFETY: the child makes only async-signal-safe calls and leaves with _exit.
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            if libc::setgroups(0, std::ptr::null()) < 0 || libc::setgid(uid) < 0 || libc::setuid(uid) < 0 {
                libc::_exit(100);
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let r = libc::connect(fd, (&addr as *const libc::sockaddr_un).cast(), std::mem::size_of::<libc::sockaddr_un>() as _);
            libc::_exit(if r == 0 { 0 } else { *libc::__errno_location() });
        }
        let mut st = 0;
        libc::waitpid(pid, &mut st, 0);
        libc::WEXITSTATUS(st)
    }
}

/// Real daemons from Debian's packages, supervised in hosted mode.
mod daemons {
    use super::*;

    fn have(bin: &str) -> bool {
        if std::path::Path::new(bin).exists() {
            return true;
        }
        eprintln!("SKIP: {bin} is not installed (tests/install-deps installs it as root)");
        false
    }

    fn redis_ping(port: u16) -> bool {
        std::process::Command::new("redis-cli").args(["-p", &port.to_string(), "ping"]).output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG")
    }

    #[test]
    fn redis_ready_by_sd_notify_healthy_by_redis_cli_and_back_after_kill_and_sigstop() {
        if !have("/usr/bin/redis-server") {
            return;
        }
        let root = Root::new();
        let port = free_port();
        let dir = root.path().join("redis");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("redis.conf"), format!("port {port}\nbind 127.0.0.1\nsupervised systemd\ndaemonize no\ndir {}\nsave \"\"\nappendonly no\n", dir.display())).unwrap();
        root.service(
            "redis",
            &format!(
                "description = \"Redis\"\nexec = [\"/usr/bin/redis-server\", \"{}\"]\nready = \"notify\"\nhealth = {{ exec = [\"/usr/bin/redis-cli\", \"-p\", \"{port}\", \"ping\"], interval_s = 1, timeout_s = 1, failures = 2 }}\n",
                dir.join("redis.conf").display()
            ),
        );
        let mut g = boot(&root);
        let pid = running_pid(&root, "redis");
        assert!(redis_ping(port), "ready means serving");
        let s = status(&root, "redis");
        assert!(s.status_text.is_some(), "redis sends STATUS= over sd_notify: {s:?}");
        kill(pid, libc::SIGKILL);
        assert!(eventually(Duration::from_secs(10), || status(&root, "redis").pid.is_some_and(|p| p != pid) && status(&root, "redis").state == State::Running));
        assert!(redis_ping(port), "back and serving after kill -9");
        let pid = status(&root, "redis").pid.unwrap();
        kill(pid, libc::SIGSTOP);
        g.console.wait_for("service redis (pid", BOOT);
        g.console.wait_for("unhealthy", Duration::from_secs(15));
        assert!(eventually(Duration::from_secs(15), || status(&root, "redis").pid.is_some_and(|p| p != pid) && status(&root, "redis").state == State::Running));
        assert!(eventually(Duration::from_secs(5), || redis_ping(port)), "back and serving after SIGSTOP");
        g.signal(libc::SIGTERM);
        assert!(g.wait_exit(Duration::from_secs(15)).unwrap().success());
        assert!(!redis_ping(port), "stopped with ghost-init");
    }

    fn http_get(port: u16) -> Option<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    }

    #[test]
    fn nginx_ready_by_tcp_healthy_by_http_and_back_after_kill() {
        if !have("/usr/sbin/nginx") {
            return;
        }
        let root = Root::new();
        let port = free_port();
        let dir = root.path().join("nginx");
        std::fs::create_dir_all(dir.join("html")).unwrap();
        std::fs::write(dir.join("html/index.html"), "hello from nginx under ghost-init\n").unwrap();
        let d = dir.display();
        std::fs::write(
            dir.join("nginx.conf"),
            format!("daemon off;\nmaster_process on;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log stderr;\nevents {{ worker_connections 64; }}\nhttp {{ access_log off; client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp; uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp; server {{ listen 127.0.0.1:{port}; root {d}/html; }} }}\n"),
        )
        .unwrap();
        root.service(
            "nginx",
            &format!("exec = [\"/usr/sbin/nginx\", \"-c\", \"{d}/nginx.conf\", \"-e\", \"stderr\"]\nready = \"tcp:{port}\"\nstop_signal = \"QUIT\"\nhealth = {{ http = \"http://127.0.0.1:{port}/\", interval_s = 1, timeout_s = 1, failures = 2 }}\n"),
        );
        let mut g = boot(&root);
        let pid = running_pid(&root, "nginx");
        assert!(http_get(port).unwrap().contains("hello from nginx under ghost-init"));
        assert!(eventually(Duration::from_secs(5), || status(&root, "nginx").health == Some(ghost_proto::Health::Healthy)));
        kill(pid, libc::SIGKILL);
        assert!(eventually(Duration::from_secs(10), || status(&root, "nginx").pid.is_some_and(|p| p != pid) && status(&root, "nginx").state == State::Running));
        assert!(eventually(Duration::from_secs(5), || http_get(port).is_some_and(|b| b.contains("hello from nginx"))), "back and serving after kill -9");
        g.signal(libc::SIGTERM);
        assert!(g.wait_exit(Duration::from_secs(15)).unwrap().success());
        assert!(http_get(port).is_none(), "nginx workers went with it");
    }
}

#[test]
fn user_group_supplementary_groups_env_working_dir_and_nofile_are_applied() {
    let root = Root::new();
    let dir = root.path().join("work");
    std::fs::create_dir_all(&dir).unwrap();
    // nobody must be able to enter it: the temp dir's parents are root's (0700 for tempdir).
    for p in [root.path(), dir.as_path()] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    root.service(
        "who",
        &format!(
            "exec = [\"/bin/sh\", \"-c\", \"echo uid=$(id -u) gid=$(id -g) groups=$(id -G) nofile=$(ulimit -n) pwd=$(pwd) foo=$FOO home=$HOME root=$GHOST_ROOT; exec sleep 1000\"]\nuser = \"nobody\"\ngroup = \"nogroup\"\nworking_dir = \"{}\"\nenv = {{ FOO = \"bar baz\", GHOST_ROOT = \"/srv/elsewhere\" }}\nnofile = 1234\n",
            dir.display()
        ),
    );
    let mut g = boot(&root);
    let mut line = String::new();
    assert!(eventually(Duration::from_secs(10), || {
        let logs = control(&root, "{\"cmd\":\"logs\",\"name\":\"who\"}").logs.unwrap_or_default();
        line = logs.first().map(|l| l.text.clone()).unwrap_or_default();
        !line.is_empty()
    }), "{}", g.console.text());
    let expect = |cmd: &[&str]| String::from_utf8(std::process::Command::new("id").args(cmd).output().unwrap().stdout).unwrap().trim().to_string();
    let nogroup = String::from_utf8(std::process::Command::new("getent").args(["group", "nogroup"]).output().unwrap().stdout).unwrap();
    let nogroup_gid = nogroup.split(':').nth(2).unwrap().trim().to_string();
    let passwd = String::from_utf8(std::process::Command::new("getent").args(["passwd", "nobody"]).output().unwrap().stdout).unwrap();
    let home = passwd.split(':').nth(5).unwrap().to_string();
    // Supplementary groups are nobody's own (from /etc/group), with the service's group first.
    let mut groups: Vec<String> = expect(&["-G", "nobody"]).split_whitespace().map(str::to_string).collect();
    groups.retain(|g| *g != expect(&["-g", "nobody"]));
    let mut want_groups = vec![nogroup_gid.clone()];
    want_groups.extend(groups);
    assert_eq!(
        line,
        format!("uid={} gid={nogroup_gid} groups={} nofile=1234 pwd={} foo=bar baz home={home} root=/srv/elsewhere", expect(&["-u", "nobody"]), want_groups.join(" "), dir.display())
    );
    g.signal(libc::SIGTERM);
    assert!(g.wait_exit(Duration::from_secs(10)).unwrap().success());
}

/// The master side of a pseudo-terminal whose slave (`path`) a service is given as its
/// `terminal`; the test keeps a slave descriptor open too, so that reading the master waits
/// for output instead of failing while no service holds the slave.
struct Pty {
    master: std::os::fd::OwnedFd,
    _slave: std::fs::File,
    path: String,
    /// Everything read from the master so far.
    seen: String,
}

impl Pty {
    fn open() -> Pty {
        use std::os::fd::FromRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        // SAFETY: posix_openpt/grantpt/unlockpt/ptsname_r on a fresh descriptor we own.
        unsafe {
            let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            assert!(fd >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
            let master = std::os::fd::OwnedFd::from_raw_fd(fd);
            assert_eq!(libc::grantpt(fd), 0);
            assert_eq!(libc::unlockpt(fd), 0);
            let mut name = [0 as libc::c_char; 128];
            assert_eq!(libc::ptsname_r(fd, name.as_mut_ptr(), name.len()), 0);
            let path = std::ffi::CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned();
            let slave = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOCTTY)
                .open(&path)
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            Pty { master, _slave: slave, path, seen: String::new() }
        }
    }

    /// Reads the master until what it showed contains `needle` (up to `timeout`).
    fn wait_for(&mut self, needle: &str, timeout: Duration) -> bool {
        use std::os::fd::AsRawFd;
        let deadline = Instant::now() + timeout;
        while !self.seen.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let mut pfd = libc::pollfd { fd: self.master.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: poll and read on our own descriptor and buffer.
            let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(1000) as i32) };
            if n <= 0 {
                continue;
            }
            let mut buf = [0u8; 4096];
            let got = unsafe { libc::read(self.master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if got > 0 {
                self.seen.push_str(&String::from_utf8_lossy(&buf[..got as usize]));
            }
        }
        true
    }

    fn type_line(&self, text: &str) {
        use std::os::fd::AsRawFd;
        let line = format!("{text}\n");
        // SAFETY: write on our own descriptor.
        let n = unsafe { libc::write(self.master.as_raw_fd(), line.as_ptr().cast(), line.len()) };
        assert_eq!(n, line.len() as isize);
    }

    /// The terminal's device number as /proc/PID/stat's `tty_nr` encodes it.
    fn tty_nr(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let rdev = std::fs::metadata(&self.path).unwrap().rdev();
        let (major, minor) = (libc::major(rdev) as u64, libc::minor(rdev) as u64);
        (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
    }
}

/// (session id, tty_nr) of a process, from /proc/PID/stat.
fn session_and_tty(pid: i32) -> (i32, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    (fields[3].parse().unwrap(), fields[4].parse().unwrap())
}

fn fd_target(pid: i32, fd: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).map(|p| p.display().to_string()).unwrap_or_else(|e| format!("({e})"))
}

#[test]
fn a_service_with_a_terminal_runs_on_it_as_its_controlling_tty() {
    let root = Root::new();
    let (mut tty, mut quiet) = (Pty::open(), Pty::open());
    // What a program on a terminal sees: its name, TERM, a size (a fresh pty has none), and
    // a line typed at the keyboard.
    let script = "echo \\\"tty=$(tty) term=$TERM size=$(stty size)\\\"; echo oops >&2; read -r line; echo \\\"got=$line\\\"; exec sleep 1000";
    root.service("onpty", &format!("exec = [\"/bin/sh\", \"-c\", \"{script}\"]\nterminal = \"{}\"\n", tty.path))
        .service("quiet", &format!("exec = [\"/bin/sh\", \"-c\", \"{script}\"]\nterminal = \"{}\"\nstderr = \"log\"\n", quiet.path))
        .service("nowhere", "exec = [\"/bin/sleep\", \"1000\"]\nterminal = \"/dev/ghost-no-such-tty\"\n");
    let mut g = boot(&root);

    let hello = format!("tty={} term=vt220 size=24 80", tty.path);
    assert!(tty.wait_for(&hello, BOOT), "the service did not write `{hello}` on its terminal: {:?}\n{}", tty.seen, g.console.text());
    assert!(tty.wait_for("oops", BOOT), "stderr is on the terminal by default: {:?}", tty.seen);
    tty.type_line("hello there");
    assert!(tty.wait_for("got=hello there", BOOT), "the line typed on the terminal did not reach the service: {:?}", tty.seen);
    let pid = running_pid(&root, "onpty");
    // A session of its own, with the pty as its controlling terminal, and stdio on it.
    assert_eq!(session_and_tty(pid), (pid, tty.tty_nr()), "/proc/{pid}/stat: not the session leader on {}", tty.path);
    for fd in 0..3 {
        assert_eq!(fd_target(pid, fd), tty.path, "fd {fd} of the service");
    }

    // stderr = "log": the screen stays the program's, its complaints go to its log.
    let hello = format!("tty={} term=vt220 size=24 80", quiet.path);
    assert!(quiet.wait_for(&hello, BOOT), "{:?}", quiet.seen);
    let logs = || control(&root, "{\"cmd\":\"logs\",\"name\":\"quiet\"}").logs.unwrap_or_default();
    assert!(eventually(Duration::from_secs(10), || logs().iter().any(|l| l.text == "oops")), "stderr is not in quiet's log: {:?}", logs());
    assert!(!logs().iter().any(|l| l.text.starts_with("tty=")), "stdout went to the log, not the terminal: {:?}", logs());
    assert!(!quiet.seen.contains("oops"), "stderr reached the terminal: {:?}", quiet.seen);
    let quiet_pid = running_pid(&root, "quiet");
    assert!(fd_target(quiet_pid, 2).starts_with("pipe:"), "{}", fd_target(quiet_pid, 2));

    // Killed, it comes back and takes its terminal again.
    kill(pid, libc::SIGKILL);
    let mut new = 0;
    assert!(eventually(Duration::from_secs(10), || {
        let s = status(&root, "onpty");
        new = s.pid.unwrap_or(0);
        s.state == State::Running && new != pid
    }));
    tty.seen.clear();
    assert!(tty.wait_for("term=vt220", BOOT), "the restarted service did not write on its terminal: {:?}", tty.seen);
    assert_eq!(session_and_tty(new), (new, tty.tty_nr()));

    // A terminal that is not there: a start failure naming the key and the path.
    g.console.wait_for("service nowhere: failed to start: key `terminal`: /dev/ghost-no-such-tty: No such file or directory", BOOT);
    assert_ne!(status(&root, "nowhere").state, State::Running);
    g.signal(libc::SIGTERM);
    assert!(g.wait_exit(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn an_overlapping_restart_keeps_a_ready_process_all_along_and_a_failed_successor_changes_nothing() {
    let root = Root::new();
    let sock = root.path().join("swap.sock");
    std::fs::write(root.path().join("swappable.py"), SWAPPABLE).unwrap();
    let exec = format!("exec = [\"/usr/bin/python3\", \"{}\", \"{}\"]\nready = \"notify\"\noverlap = true\n", root.path().join("swappable.py").display(), sock.display());
    root.service("swap", &exec);
    let _g = boot(&root);
    let old = running_pid(&root, "swap");
    assert_eq!(ask_swappable(&sock), Ok(old));

    // A client asks all the time while the service is restarted.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (path, halt) = (sock.clone(), stop.clone());
    let client = std::thread::spawn(move || {
        let mut answers: Vec<Result<i32, String>> = Vec::new();
        while !halt.load(std::sync::atomic::Ordering::SeqCst) {
            answers.push(ask_swappable(&path));
        }
        answers
    });
    let restarted = control(&root, "{\"cmd\":\"restart\",\"name\":\"swap\"}");
    assert!(restarted.ok, "{restarted:?}");
    // Until the old process is gone and the new one serves.
    let mut new = 0;
    assert!(eventually(Duration::from_secs(20), || {
        let s = status(&root, "swap");
        new = s.pid.unwrap_or(0);
        s.state == State::Running && new != old && std::fs::metadata(format!("/proc/{old}")).is_err()
    }), "the new process did not take over: {:?}", status(&root, "swap"));
    // Some answers from the new process too, then stop asking.
    assert!(eventually(Duration::from_secs(10), || ask_swappable(&sock) == Ok(new)));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let answers = client.join().unwrap();
    let failed: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    assert!(failed.is_empty(), "{} of {} requests failed during the overlapping restart: {:?}", failed.len(), answers.len(), &failed[..failed.len().min(5)]);
    let pids: Vec<i32> = answers.iter().filter_map(|a| a.as_ref().ok().copied()).collect();
    assert!(pids.contains(&old) || pids.contains(&new), "{pids:?}");
    assert!(pids.iter().all(|&p| p == old || p == new), "answers from a third process: {pids:?}");
    // Old before new, never back: the switch happened once.
    let first_new = pids.iter().position(|&p| p == new).unwrap_or(pids.len());
    assert!(pids[first_new..].iter().all(|&p| p == new), "the old process answered after the new one: {pids:?}");
    let s = status(&root, "swap");
    assert_eq!(s.restarts, 1, "{s:?}");

    // A new process that fails before it is ready: the running one goes on, untouched.
    std::fs::write(root.path().join("fail-next"), "").unwrap();
    assert!(control(&root, "{\"cmd\":\"restart\",\"name\":\"swap\"}").ok);
    assert!(eventually(Duration::from_secs(10), || !root.path().join("fail-next").exists() && status(&root, "swap").last_exit.as_deref() == Some("exit code 7")),
        "the failing successor was not seen: {:?}", status(&root, "swap"));
    let s = status(&root, "swap");
    assert_eq!((s.state, s.pid, s.restarts), (State::Running, Some(new), 1), "{s:?}");
    assert_eq!(ask_swappable(&sock), Ok(new));
    let logs = control(&root, "{\"cmd\":\"logs\",\"name\":\"swap\"}");
    assert!(logs.ok);

    // Bad input: overlap without notify readiness is refused, naming the key.
    root.service("nope", "exec = [\"/bin/sleep\", \"1000\"]\noverlap = true\n");
    let r = control(&root, "{\"cmd\":\"reload\"}");
    let errors = r.reload.unwrap().errors;
    assert!(errors.iter().any(|e| e.contains("nope") && e.contains("overlap") && e.contains("ready = \"notify\"")), "{errors:?}");
}
