#!/usr/bin/env python3
"""Boot-time split under QEMU TCG: runs `qemu/run ARGS` N times, stamps each serial line as
it arrives, and prints the median seconds from QEMU start to the kernel banner, to /init,
to `ghost-init: boot complete` (or the baseline's power-off) and to QEMU's exit.

usage: image/bench/boot_time.py N -- QEMU_RUN_ARGS...   (e.g. 5 -- --no-build --direct)
"""
import statistics, subprocess, sys, time
from pathlib import Path

MARKS = [("kernel", "Linux version"), ("init", "Run /init as init process"),
         ("ready", "ghost-init: boot complete"), ("poweroff", "reboot: Power down")]

def one(args):
    t0 = time.monotonic()
    p = subprocess.Popen([str(Path(__file__).resolve().parents[2] / "qemu/run"), *args],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    seen = {}
    for raw in p.stdout:
        line = raw.decode(errors="replace")
        now = time.monotonic() - t0
        for name, text in MARKS:
            if name not in seen and text in line:
                seen[name] = now
    p.wait()
    seen["exit"] = time.monotonic() - t0
    return seen

def main():
    n, args = int(sys.argv[1]), sys.argv[3:]
    runs = [one(args) for _ in range(n)]
    for name in [m[0] for m in MARKS] + ["exit"]:
        xs = [r[name] for r in runs if name in r]
        if xs:
            print(f"{name:9s} median {statistics.median(xs):6.2f} s  (min {min(xs):.2f}, max {max(xs):.2f}, n={len(xs)})")

main()
