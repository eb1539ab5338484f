//! The end: what the services left behind is killed, filesystems are synced and taken down in
//! reverse order, and the machine is powered off, rebooted or halted. Every wait is bounded.

use std::time::{Duration, Instant};

use crate::init::{Init, STRAGGLER_GRACE};
use crate::mounts::{self, Teardown};
use crate::supervisor::State;
use crate::sys::{self, PowerAction};
use crate::{reactor, say};

impl Init {
    /// Finishes shutdown after the services were asked to stop; returns only in hosted mode.
    pub fn finish(&mut self, action: PowerAction) {
        // No more requests: the sockets close (and leave the reactor) before the last waits.
        self.control = None;
        self.notify = None;
        // Services that outlived the bound are killed now.
        for svc in &mut self.supervisor.services {
            if let State::Stopping { pid, killed: false, .. } = svc.state {
                crate::supervisor::Os::kill_all(&mut self.os, svc, pid);
                svc.state = State::Stopped;
                self.supervisor.killed_count += 1;
                say!("service {}: did not stop in time; killed", svc.name);
            }
        }
        // cgroup.kill is asynchronous: let the killed leave before counting what is left over.
        let drained = Instant::now() + STRAGGLER_GRACE;
        while Instant::now() < drained && self.supervisor.services.iter().any(|s| self.os.cgroups.populated(&s.name)) {
            self.reactor.arm(Some((Instant::now() + Duration::from_millis(10)).min(drained)));
            self.reactor.wait(|_| {});
            while reactor::reap_one().is_some() {}
            while self.reactor.next_signal().is_some() {}
        }
        let stragglers = self.kill_stragglers();
        let stopped = self.supervisor.stopped_count;
        let killed = self.supervisor.killed_count + stragglers;
        sys::sync();
        let mut busy = 0;
        if !self.hosted {
            busy = take_down_mounts();
            sys::sync();
        }
        let verb = if self.hosted { "stopped" } else { action.verb() };
        if busy == 0 {
            say!("{verb} cleanly ({stopped} services stopped, {killed} killed)");
        } else {
            say!("{verb} with {busy} filesystem(s) still busy ({stopped} services stopped, {killed} killed)");
        }
        if self.hosted {
            return;
        }
        let err = sys::reboot(action);
        say!("reboot(2) failed: {err}; halting here");
        loop {
            // PID 1 must not exit: wait for signals forever, still reaping.
            self.reactor.wait(|_| {});
            while reactor::reap_one().is_some() {}
            while self.reactor.next_signal().is_some() {}
        }
    }

    /// TERM, then KILL, everything left that we may end; returns how many were left.
    fn kill_stragglers(&mut self) -> usize {
        let left = self.leftover_pids();
        if left.is_empty() {
            self.reap_until_quiet(Instant::now());
            return 0;
        }
        say!("{} process(es) left behind by services: sending SIGTERM", left.len());
        self.signal_leftovers(&left, libc::SIGTERM);
        self.signal_leftovers(&left, libc::SIGCONT);
        let deadline = Instant::now() + STRAGGLER_GRACE;
        while Instant::now() < deadline && !self.leftover_pids().is_empty() {
            // Bounded wait: a grandchild's death sends us no SIGCHLD, so look again soon.
            self.reactor.arm(Some((Instant::now() + Duration::from_millis(20)).min(deadline)));
            self.reactor.wait(|_| {});
            while reactor::reap_one().is_some() {}
            while self.reactor.next_signal().is_some() {}
        }
        let still = self.leftover_pids();
        if !still.is_empty() {
            say!("{} process(es) ignored SIGTERM: sending SIGKILL", still.len());
            self.signal_leftovers(&still, libc::SIGKILL);
        }
        self.reap_until_quiet(Instant::now() + STRAGGLER_GRACE);
        left.len()
    }

    fn signal_leftovers(&self, pids: &[i32], sig: i32) {
        if self.is_pid1 {
            // In our own PID namespace (or as the real PID 1), -1 is everyone but us, atomically.
            let _ = sys::kill(-1, sig);
        } else {
            for &p in pids {
                let _ = sys::kill(p, sig);
            }
        }
    }

    /// Reaps children until none is left or `deadline` passes.
    fn reap_until_quiet(&mut self, deadline: Instant) {
        loop {
            while reactor::reap_one().is_some() {}
            if !reactor::has_children() || Instant::now() >= deadline {
                return;
            }
            self.reactor.arm(Some(deadline));
            self.reactor.wait(|_| {});
            while self.reactor.next_signal().is_some() {}
        }
    }

    /// Processes that shutdown must end: as PID 1 every user process but us; hosted, our
    /// descendants (as a subreaper, orphans of our services are re-parented to us).
    fn leftover_pids(&self) -> Vec<i32> {
        let me = std::process::id() as i32;
        let table = crate::procfs::processes();
        if self.is_pid1 {
            return table.iter().filter(|p| p.pid != me && !p.kernel_thread && p.state != 'Z').map(|p| p.pid).collect();
        }
        let mut found = vec![me];
        let mut i = 0;
        while i < found.len() {
            let parent = found[i];
            found.extend(table.iter().filter(|p| p.ppid == parent && p.state != 'Z').map(|p| p.pid));
            i += 1;
        }
        found.remove(0);
        found
    }
}

/// Unmounts what can be unmounted, remounts the rest read-only; returns how many stay busy.
fn take_down_mounts() -> usize {
    let table = std::fs::read_to_string("/proc/self/mountinfo").map(|t| mounts::parse_mountinfo(&t)).unwrap_or_default();
    let mut busy = 0;
    for step in mounts::teardown_plan(&table) {
        match step {
            Teardown::Unmount(target) => {
                if sys::umount(&target).is_err() && sys::remount_read_only(&target).is_err() {
                    say!("shutdown: {target} is busy and could not be made read-only");
                    busy += 1;
                }
            }
            Teardown::RemountReadOnly(target) => {
                if let Err(e) = sys::remount_read_only(&target) {
                    say!("shutdown: remount {target} read-only: {e}");
                    busy += 1;
                }
            }
        }
    }
    busy
}
