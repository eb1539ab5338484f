use super::*;
use crate::audit::{read_records, verify, Record};
use crate::identity::Identity;
use crate::policy::tests::DESTRUCTIVE;
use crate::tools::{ExecConfig, Registry};
use std::path::Path;
use std::time::Duration;

struct Fixture {
    tmp: tempfile::TempDir,
    gate: Gate,
    identity: Arc<Identity>,
}

fn fixture(mode: Mode, constitution: Constitution, approval_timeout: Duration) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let identity = Arc::new(Identity::load_or_create(&tmp.path().join("agent"), "ghost").unwrap().identity);
    let audit = Arc::new(AuditLog::open(&tmp.path().join("audit"), identity.clone()).unwrap().log);
    let executor = Executor::new(Arc::new(Registry::builtin()), ExecConfig::default());
    let approvals = Arc::new(ApprovalQueue::new(approval_timeout));
    let gate = Gate::new(executor, audit, approvals, constitution, mode);
    Fixture { tmp, gate, identity }
}

impl Fixture {
    fn records(&self) -> Vec<Record> {
        read_records(&self.tmp.path().join("audit")).unwrap()
    }

    fn verify_ok(&self) {
        let r = verify(&self.tmp.path().join("audit"), &self.identity.public_key()).unwrap();
        assert!(r.ok(), "{r}");
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.tmp.path().join(name)
    }
}

fn shell(command: &str) -> CallRequest {
    CallRequest {
        call: ToolCall::new("shell.exec", json!({ "command": command }), "test"),
        actor: "operator (uid 0)".into(),
        why: Why::default(),
        dry_run: false,
    }
}

fn call_id_of(r: &Record) -> &str {
    match &r.what {
        What::ToolCall { call_id, .. } | What::Approval { call_id, .. } => call_id,
        _ => "",
    }
}

#[test]
fn destructive_commands_are_refused_in_normal_mode_and_each_refusal_is_audited() {
    let f = fixture(Mode::Normal, Constitution::default(), Duration::from_secs(60));
    let mut ids = Vec::new();
    for (cmd, _) in DESTRUCTIVE {
        let req = shell(cmd);
        ids.push(req.call.id.clone());
        let h = f.gate.handle(req).unwrap();
        assert!(matches!(h, Handled::Denied { .. }), "{cmd}: {h:?}");
        assert_eq!(h.to_json()["decision"], "deny");
    }
    let records = f.records();
    assert_eq!(records.len(), DESTRUCTIVE.len(), "one record per refusal");
    for ((r, id), (cmd, rule)) in records.iter().zip(&ids).zip(DESTRUCTIVE) {
        assert_eq!(call_id_of(r), id);
        assert_eq!(r.outcome.status, Status::Denied, "{cmd}");
        let p = r.policy.as_ref().unwrap();
        assert_eq!((p.verdict, p.rule.clone(), p.mode), (Verdict::Deny, format!("deny.{rule}"), Mode::Normal));
        assert_eq!(r.who.actor, "operator (uid 0)");
        assert_eq!(r.why.text, "test", "the call's --why is recorded");
        let What::ToolCall { args, .. } = &r.what else { panic!() };
        assert_eq!(args["command"], *cmd);
    }
    assert!(f.gate.approvals().pending().is_empty());
    f.verify_ok();
}

#[test]
fn an_approved_call_runs_and_a_denied_one_never_does() {
    let f = fixture(Mode::Normal, Constitution::default(), Duration::from_secs(60));
    let approved_file = f.path("approved");
    let denied_file = f.path("denied");
    let a = f.gate.handle(shell(&format!("touch {}", approved_file.display()))).unwrap();
    let Handled::Pending { request_id: ra, .. } = &a else { panic!("{a:?}") };
    assert_eq!(a.to_json()["decision"], "ask");
    assert_eq!(a.to_json()["request_id"], json!(ra));
    let d = f.gate.handle(shell(&format!("touch {}", denied_file.display()))).unwrap();
    let Handled::Pending { request_id: rd, .. } = &d else { panic!("{d:?}") };
    assert_eq!(f.gate.approvals().pending().len(), 2);
    assert!(!approved_file.exists(), "nothing runs before an approval");

    let ran = f.gate.approve(ra, "uid 0").unwrap();
    let Handled::Ran { result, decision, .. } = &ran else { panic!("{ran:?}") };
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(decision.rule, "approvals.approved");
    assert!(approved_file.exists());
    f.gate.deny(rd, "uid 0", "not today").unwrap();
    assert!(!denied_file.exists());
    assert!(matches!(f.gate.approve(rd, "uid 0"), Err(GateError::Approval(ApprovalError::AlreadyResolved(_)))));

    let statuses: Vec<(Status, String)> =
        f.records().iter().map(|r| (r.outcome.status, call_id_of(r).to_string())).collect();
    let (ca, cd) = (statuses[0].1.clone(), statuses[1].1.clone());
    assert_eq!(
        statuses,
        [
            (Status::Pending, ca.clone()),
            (Status::Pending, cd.clone()),
            (Status::Approved, ca.clone()),
            (Status::Started, ca.clone()),
            (Status::Ok, ca),
            (Status::Denied, cd),
        ]
    );
    f.verify_ok();
}

#[test]
fn an_approval_does_not_override_a_later_deny() {
    let f = fixture(Mode::Normal, Constitution::default(), Duration::from_secs(60));
    let target = f.path("x");
    let h = f.gate.handle(CallRequest {
        call: ToolCall::new("fs.write", json!({ "path": target, "content": "x" }), "config"),
        actor: "agent".into(),
        why: Why { layer: Some("deliberate".into()), memory_ids: vec!["7".into()], ..Why::default() },
        dry_run: false,
    });
    let Ok(Handled::Pending { request_id, .. }) = h else { panic!("{h:?}") };
    // The operator protects the directory before approving.
    let mut c = Constitution::default();
    c.protected_paths.push(f.tmp.path().to_string_lossy().into_owned());
    f.gate.set_constitution(c, Mode::Normal);
    let h = f.gate.approve(&request_id, "uid 0").unwrap();
    assert!(matches!(h, Handled::Denied { .. }), "{h:?}");
    assert!(!target.exists());
    let last = f.records().pop().unwrap();
    assert_eq!(last.why.memory_ids, ["7"], "the agent's reasons follow the call through the queue");
    assert_eq!(last.why.layer.as_deref(), Some("deliberate"));
}

#[test]
fn dry_run_decides_and_records_without_running() {
    let f = fixture(Mode::Trusted, Constitution::default(), Duration::from_secs(60));
    let target = f.path("dry");
    let mut req = shell(&format!("touch {}", target.display()));
    req.dry_run = true;
    let h = f.gate.handle(req).unwrap();
    assert!(matches!(h, Handled::DryRun { .. }));
    assert_eq!(h.to_json()["decision"], "allow");
    assert_eq!(h.to_json()["dry_run"], true);
    assert!(!target.exists());
    assert_eq!(f.records()[0].outcome.status, Status::DryRun);
}

#[test]
fn the_actions_bound_refuses_beyond_it() {
    let mut c = Constitution::default();
    c.bounds.actions_per_hour = 1;
    let f = fixture(Mode::Trusted, c, Duration::from_secs(60));
    assert!(matches!(f.gate.handle(shell("true")).unwrap(), Handled::Ran { .. }));
    // Reads do not count as actions.
    let read = CallRequest {
        call: ToolCall::new("sys.metrics", json!({"cpu_sample_ms": 0, "disks": false}), ""),
        actor: "agent".into(),
        why: Why::default(),
        dry_run: false,
    };
    assert!(matches!(f.gate.handle(read).unwrap(), Handled::Ran { .. }));
    let h = f.gate.handle(shell("true")).unwrap();
    let Handled::Limited { exceeded, .. } = &h else { panic!("{h:?}") };
    assert_eq!(exceeded.resource, Resource::Actions);
    assert_eq!(h.to_json()["decision"], "deny");
    assert_eq!(h.to_json()["rule"], "bounds.actions_per_hour");
    assert_eq!(f.records().last().unwrap().outcome.status, Status::Denied);
    f.verify_ok();
}

#[test]
fn unanswered_requests_expire_and_are_audited() {
    let f = fixture(Mode::Safe, Constitution::default(), Duration::from_millis(50));
    let h = f
        .gate
        .handle(CallRequest {
            call: ToolCall::new("service.restart", json!({"name": "redis"}), ""),
            actor: "agent".into(),
            why: Why::default(),
            dry_run: false,
        })
        .unwrap();
    let Handled::Pending { request_id, .. } = h else { panic!("{h:?}") };
    std::thread::sleep(Duration::from_millis(80));
    assert!(f.gate.approvals().pending().is_empty(), "an operator listing the queue sees it expired");
    assert_eq!(f.gate.expire().unwrap(), vec![request_id.clone()]);
    let last = f.records().pop().unwrap();
    assert_eq!(last.outcome.status, Status::Expired);
    assert!(matches!(last.what, What::Approval { approved: false, .. }));
    assert!(f.gate.approve(&request_id, "uid 0").is_err());
    f.verify_ok();
}

#[test]
fn tampering_with_a_gate_trail_is_detected() {
    let f = fixture(Mode::Normal, Constitution::default(), Duration::from_secs(60));
    for cmd in ["rm -rf /", "mkfs.ext4 /dev/sda", "dd if=/dev/zero of=/dev/vda"] {
        f.gate.handle(shell(cmd)).unwrap();
    }
    // Someone hides the mkfs attempt by rewriting it as harmless.
    let dir = f.tmp.path().join("audit");
    let file = crate::audit::log_files(&dir).unwrap().remove(0);
    let text = std::fs::read_to_string(&file).unwrap().replace("mkfs.ext4 /dev/sda", "uptime");
    std::fs::write(&file, text).unwrap();
    let r = verify(Path::new(&dir), &f.identity.public_key()).unwrap();
    assert_eq!(r.problems.len(), 1, "{r}");
    assert_eq!((r.problems[0].seq, r.problems[0].line), (Some(1), 2));
}
