#!/usr/bin/python3
"""Command-line contract of tlsguardd and tlsguardctl.

Each case runs a binary with bad input and asserts the exit status and the
one diagnostic line that names what is wrong and where it came from.  The
cases that load BPF programs attach them to a cgroup this test creates and
removes; nothing else on the machine is touched.

Usage: cli_test.py --tlsguardd PATH --tlsguardctl PATH
Ends with the line "N passed, M failed"; exits non-zero on any failure.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from postfix_env import cgroup2_mount  # noqa: E402


def run(cmd, timeout=20):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


class Runner:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, ok, why=""):
        if ok:
            self.passed += 1
            print(f"PASS {name}")
        else:
            self.failed += 1
            print(f"FAIL {name}: {why}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tlsguardd", default="build/tlsguardd")
    ap.add_argument("--tlsguardctl", default="build/tlsguardctl")
    a = ap.parse_args()
    d, ctl = os.path.abspath(a.tlsguardd), os.path.abspath(a.tlsguardctl)
    r = Runner()
    tmp = tempfile.mkdtemp(prefix="tg-cli-")
    cg = os.path.join(cgroup2_mount(), f"tg-cli-{os.getpid()}")
    os.mkdir(cg)
    good = os.path.join(tmp, "senders")
    with open(good, "w") as f:
        f.write("# guaranteed\nalice@example.org\n@example.net\n")
    bad = os.path.join(tmp, "bad-senders")
    with open(bad, "w") as f:
        f.write("alice@example.org\n\n# comment\nnot-an-address\n")
    sock = os.path.join(tmp, "ctl.sock")
    daemon = None
    try:
        def fails_with(name, cmd, pattern):
            rc, out, err = run(cmd)
            lines = [l for l in err.splitlines() if l.strip()]
            r.check(name, rc != 0 and len(lines) == 1 and re.search(pattern, lines[0]),
                    f"rc={rc} stderr={err!r}")

        fails_with("no arguments", [d], r"^tlsguardd: fatal: --cgroup DIR is required")
        fails_with("missing --senders", [d, "--cgroup", cg],
                   r"^tlsguardd: fatal: --senders FILE is required")
        fails_with("bad port", [d, "--cgroup", cg, "--senders", good, "--port", "70000"],
                   r"^tlsguardd: fatal: --port: bad value \"70000\"")
        fails_with("port not a number", [d, "--cgroup", cg, "--senders", good, "--port", "smtp"],
                   r"--port: bad value \"smtp\"")
        fails_with("unknown option", [d, "--cgroup", cg, "--senders", good, "--bogus"],
                   r"^tlsguardd: fatal: --bogus: unknown option")
        fails_with("missing cgroup", [d, "--cgroup", cg + "-nonexistent", "--senders", good],
                   r"^tlsguardd: fatal: --cgroup .*-nonexistent: No such file or directory")
        fails_with("not a cgroup", [d, "--cgroup", tmp, "--senders", good],
                   r"not a cgroup v2 directory")
        fails_with("missing senders file", [d, "--cgroup", cg, "--senders", good + ".missing"],
                   r"senders\.missing: No such file or directory")
        fails_with("malformed senders line", [d, "--cgroup", cg, "--senders", bad],
                   re.escape(bad) + r":4: malformed sender \"not-an-address\"")
        fails_with("tlsguardctl without daemon", [ctl, "--socket", sock, "status"],
                   r"^tlsguardctl: fatal: tlsguardd is not running")

        daemon = subprocess.Popen([d, "--cgroup", cg, "--senders", good, "--socket", sock],
                                  stderr=subprocess.PIPE, text=True)
        rc, out = 1, ""
        for _ in range(100):
            rc, out, _ = run([ctl, "--socket", sock, "status"])
            if rc == 0:
                break
            time.sleep(0.1)
        r.check("status while attached", rc == 0 and re.search(r"flows tracked:\s+0", out)
                and re.search(r"senders:\s+2", out), f"rc={rc} out={out!r}")
        fails_with("second daemon on the same socket",
                   [d, "--cgroup", cg, "--senders", good, "--socket", sock],
                   r"another tlsguardd is listening")
        daemon.send_signal(signal.SIGTERM)
        rc = daemon.wait(timeout=20)
        err = daemon.stderr.read()
        daemon = None
        r.check("SIGTERM detaches and exits 0", rc == 0 and "detaching" in err,
                f"rc={rc} stderr={err!r}")
        rc, out, _ = run(["bpftool", "cgroup", "show", cg])
        r.check("nothing left attached to the cgroup", rc == 0 and "sock_ops" not in out,
                f"bpftool says {out!r}")
        r.check("control socket removed", not os.path.exists(sock), sock)
    finally:
        if daemon:
            daemon.kill()
            daemon.wait()
        os.rmdir(cg)
        subprocess.run(["rm", "-rf", tmp])
    print(f"{r.passed} passed, {r.failed} failed")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
