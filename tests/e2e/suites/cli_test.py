#!/usr/bin/python3
"""Command-line contract of tlsguardd and tlsguardctl.

Each case runs a binary with bad input and asserts the exit status and the
one diagnostic line that names what is wrong and where it came from.  The
cases that load BPF programs attach them to a cgroup this test creates and
removes; nothing else on the machine is touched.

``tlsguardd --check-verifier`` attaches nothing: its table must parse, its
closing line count its rows, and its exit status agree with them.  When the
table says the running kernel's verifier refuses a program, tlsguardd must
end with one line naming that program and the verifier's reason.

Usage: cli_test.py --tlsguardd PATH --tlsguardctl PATH
Ends with the line "N passed, M failed"; exits non-zero on any failure.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures"))
from postfix_env import cgroup2_mount  # noqa: E402
from daemon import attached, detach_problems, pin_dir  # noqa: E402

# Every tlsguardd of this test pins under a directory of its own; SIGTERM
# leaves the kernel enforcing, tlsguardctl detach removes it.
PINS = pin_dir("cli")


def no_pin_conf(tmp):
    """A configuration file that says ``pin = no``."""
    path = os.path.join(tmp, "no-pin.conf")
    with open(path, "w") as f:
        f.write("pin = no\n")
    return path


def run(cmd, timeout=20):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


# A program refused for complexity costs the verifier up to its limit of
# instructions: seconds, and more under sanitizers or in a VM.
LOAD_TIMEOUT = 600
VERIFIER_BUDGET = 150000        # --check-verifier's default
VERIFIER_HEADER = ["program", "audit", "insns", "total_states", "peak_states", "result"]
THOUSANDS = r"\d{1,3}(?:,\d{3})*"
REFUSED_LINE = re.compile(
    r"^tlsguardd: fatal: (\w+): (?:too complex for this kernel's verifier: "
    + THOUSANDS + r" instructions processed \(limit " + THOUSANDS + r"\)"
    r"|refused by this kernel's verifier: \S.*)$")


def parse_verifier_table(out):
    """--check-verifier's stdout: its rows (dicts, in order) and the counts of
    its closing line.  Raises ValueError naming the first line that does not
    follow the format."""
    lines = out.splitlines()
    if len(lines) < 3:
        raise ValueError(f"{len(lines)} lines")
    if lines[0] != "kernel " + os.uname().release:
        raise ValueError(f"first line {lines[0]!r}")
    if lines[1].split() != VERIFIER_HEADER:
        raise ValueError(f"header {lines[1]!r}")
    m = re.fullmatch(r"(\d+) passed, (\d+) failed", lines[-1])
    if not m:
        raise ValueError(f"closing line {lines[-1]!r}")
    rows = []
    for line in lines[2:-1]:
        f = line.split(None, 5)
        if len(f) != 6 or f[1] not in ("off", "on") or \
                not all(v == "-" or v.isdigit() for v in f[2:5]) or \
                not (f[5] in ("ok", "over budget") or re.fullmatch(r"refused: \S.*", f[5])):
            raise ValueError(f"row {line!r}")
        rows.append({"program": f[0], "audit": f[1],
                     "insns": None if f[2] == "-" else int(f[2]), "result": f[5]})
    return rows, int(m.group(1)), int(m.group(2))


def check_verifier(r, d, cg, senders, sock):
    """--check-verifier, and the one line that explains a refused program."""
    rc, out, err = run([d, "--check-verifier"], timeout=LOAD_TIMEOUT)
    try:
        rows, passed, failed = parse_verifier_table(out)
    except ValueError as e:
        r.check("check-verifier prints its table", False, f"{e}; rc={rc} stdout={out!r} stderr={err!r}")
        return
    r.check("check-verifier prints its table", True)
    ok = [x for x in rows if x["result"] == "ok"]
    r.check("check-verifier counts its rows", passed == len(ok) and failed == len(rows) - len(ok),
            f"{passed} passed, {failed} failed for {len(ok)} ok rows of {len(rows)}")
    r.check("check-verifier exit status agrees with its rows", rc == (1 if failed else 0),
            f"rc={rc} with {failed} failed")
    r.check("check-verifier writes nothing on stderr", err == "", f"stderr={err!r}")
    wrong = [x for x in rows if x["result"] == "ok" and not (x["insns"] is not None and x["insns"] <= VERIFIER_BUDGET)
             or x["result"] == "over budget" and not (x["insns"] is not None and x["insns"] > VERIFIER_BUDGET)]
    r.check("check-verifier results follow the budget", not wrong, f"rows {wrong}")
    variants = {}
    for x in rows:
        variants.setdefault(x["program"], []).append(x["audit"])
    r.check("check-verifier loads each program audit off and on",
            rows and all(v == ["off", "on"] for v in variants.values()), f"{variants}")

    refused = [x for x in rows if x["audit"] == "off" and x["result"].startswith("refused: ")]
    if not refused:
        print("SKIP refused program explained: this kernel's verifier refuses none")
        return
    # tlsguardd without --audit loads the "off" variant; libbpf stops at the
    # first program refused, in object order, which is the table's.
    first = refused[0]
    complexity = first["result"].startswith("refused: too complex")
    for verbose in ([], ["-v"]):
        rc, out, err = run([d, "--pin-dir", PINS, "--cgroup", cg, "--senders", senders, "--socket", sock] + verbose,
                           timeout=LOAD_TIMEOUT)
        lines = [l for l in err.splitlines() if l.strip()]
        m = REFUSED_LINE.match(lines[-1]) if lines else None
        good = (rc != 0 and m and m.group(1) == first["program"]
                and ("too complex" in lines[-1]) == complexity)
        if verbose:
            good = good and f"tlsguardd: {first['program']}: the verifier's log" in err
        else:
            good = good and len(lines) == 1
        r.check(f"refused program explained in one line{' (-v: after its log)' if verbose else ''}",
                good, f"table says {first}; rc={rc} stderr={err[-2000:]!r}")


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
        fails_with("missing --senders", [d, "--pin-dir", PINS, "--cgroup", cg],
                   r"^tlsguardd: fatal: --senders FILE is required")
        fails_with("bad port", [d, "--pin-dir", PINS, "--cgroup", cg, "--senders", good, "--port", "70000"],
                   r"^tlsguardd: fatal: --port: bad value \"70000\"")
        fails_with("port not a number", [d, "--pin-dir", PINS, "--cgroup", cg, "--senders", good, "--port", "smtp"],
                   r"--port: bad value \"smtp\"")
        fails_with("unknown option", [d, "--pin-dir", PINS, "--cgroup", cg, "--senders", good, "--bogus"],
                   r"^tlsguardd: fatal: --bogus: unknown option")
        fails_with("missing cgroup", [d, "--pin-dir", PINS, "--cgroup", cg + "-nonexistent", "--senders", good],
                   r"^tlsguardd: fatal: --cgroup .*-nonexistent: No such file or directory")
        fails_with("not a cgroup", [d, "--cgroup", tmp, "--senders", good],
                   r"not a cgroup v2 directory")
        fails_with("missing senders file", [d, "--pin-dir", PINS, "--cgroup", cg, "--senders", good + ".missing"],
                   r"senders\.missing: No such file or directory")
        fails_with("malformed senders line", [d, "--pin-dir", PINS, "--cgroup", cg, "--senders", bad],
                   re.escape(bad) + r":4: malformed sender \"not-an-address\"")
        fails_with("tlsguardctl without daemon", [ctl, "--socket", sock, "status"],
                   r"^tlsguardctl: fatal: tlsguardd is not running")
        version = open(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.dirname(os.path.abspath(__file__))))), "VERSION")).read().strip()
        for name, binary in (("tlsguardd", d), ("tlsguardctl", ctl)):
            rc, out, err = run([binary, "--help"])
            r.check(f"{name} --help: usage on stdout, exit 0",
                    rc == 0 and out.startswith("usage: ") and not err, f"rc={rc} out={out!r} err={err!r}")
            rc, out, err = run([binary, "--version"])
            r.check(f"{name} --version: the project's VERSION", rc == 0 and out == f"{name} {version}\n",
                    f"rc={rc} out={out!r} want {name} {version}")
        rc, out, err = run([ctl, "--socket", sock, "frobnicate"])
        r.check("tlsguardctl usage error: stderr, exit 2", rc == 2 and not out and err.startswith("usage: "),
                f"rc={rc} out={out!r} err={err!r}")
        rc, out, err = run([ctl, "--socket", sock, "reload", "--json"])
        r.check("tlsguardctl --json where it has no meaning: exit 2", rc == 2 and not out, f"rc={rc} out={out!r}")
        fails_with("check-verifier bad budget", [d, "--check-verifier=many"],
                   r"^tlsguardd: fatal: --check-verifier=many: expected a number of instructions")
        check_verifier(r, d, cg, good, sock)

        fails_with("audit file under a missing parent directory",
                   [d, "--pin-dir", PINS, "--cgroup", cg, "--senders", good, "--socket", sock,
                    "--audit", os.path.join(tmp, "no-such-dir", "tlsguard", "audit.jsonl")],
                   r"^tlsguardd: fatal: --audit .*/no-such-dir/tlsguard/audit\.jsonl: No such file or directory")
        logdir = os.path.join(tmp, "log-tlsguard")
        daemon = subprocess.Popen([d, "--pin-dir", PINS, "--cgroup", cg, "--senders", good, "--socket", sock,
                                   "--audit", os.path.join(logdir, "audit.jsonl")],
                                  stderr=subprocess.PIPE, text=True)
        rc, out = 1, ""
        for _ in range(100):
            rc, out, _ = run([ctl, "--socket", sock, "status"])
            if rc == 0:
                break
            time.sleep(0.1)
        r.check("status while attached", rc == 0 and re.search(r"flows tracked:\s+0", out)
                and re.search(r"senders:\s+2", out), f"rc={rc} out={out!r}")
        mode = os.stat(logdir).st_mode & 0o7777 if os.path.isdir(logdir) else None
        r.check("audit file's missing directory made, mode 0750", mode == 0o750,
                f"mode {oct(mode) if mode is not None else 'absent'} of {logdir}")
        r.check("status names the version", re.search(r"^version:\s+%s$" % re.escape(version), out, re.M),
                f"out={out!r}")
        rc, out, err = run([ctl, "--socket", sock, "status", "--json"])
        try:
            st = json.loads(out)
        except ValueError as e:
            st = {"error": str(e)}
        r.check("status --json", rc == 0 and st.get("version") == version and st.get("senders") == 2
                and st.get("flows_tracked") == 0 and st.get("cgroup") == cg, f"rc={rc} out={out!r}")
        rc, out, err = run([ctl, "--socket", sock, "flows", "--json"])
        r.check("flows --json with no flow: nothing", rc == 0 and out == "", f"rc={rc} out={out!r}")
        checks = {}
        for addr in ("alice+x@Example.org", "bob@example.net", "carol@example.com"):
            rc, out, err = run([ctl, "--socket", sock, "sender", "check", addr, "--json"])
            try:
                checks[addr] = (rc, json.loads(out))
            except ValueError:
                checks[addr] = (rc, out)
        want = {"alice+x@Example.org": (0, {"address": "alice+x@Example.org", "verdict": "guaranteed",
                                             "by": "address"}),
                "bob@example.net": (0, {"address": "bob@example.net", "verdict": "guaranteed", "by": "domain"}),
                "carol@example.com": (3, {"address": "carol@example.com", "verdict": "not-guaranteed",
                                          "by": None})}
        r.check("sender check --json", checks == want, f"got {checks!r}, want {want!r}")
        rc, out, err = run([ctl, "--socket", sock, "sender", "list", "--json"])
        r.check("sender list --json", rc == 0 and out.strip() == '["alice@example.org","@example.net"]',
                f"rc={rc} out={out!r} err={err!r}")
        rc, out, err = run([ctl, "--socket", sock, "config", "-n", "--json"])
        try:
            conf = json.loads(out)
        except ValueError:
            conf = None
        r.check("config -n --json", rc == 0 and isinstance(conf, dict) and conf.get("cgroup") == cg
                and conf.get("senders_file") == good and "slots" not in conf, f"rc={rc} out={out!r}")
        rc, out, err = run([ctl, "--socket", sock, "config", "--json"])
        try:
            conf = json.loads(out)
        except ValueError:
            conf = None
        r.check("config --json", rc == 0 and isinstance(conf, dict) and conf.get("slots") == "256",
                f"rc={rc} out={out[:200]!r}")
        fails_with("second daemon on the same pin_dir",
                   [d, "--pin-dir", PINS, "--cgroup", cg, "--senders", good, "--socket", sock + "2"],
                   r"^tlsguardd: fatal: pin_dir %s: another tlsguardd uses it" % re.escape(PINS))
        fails_with("pin_dir the root of the bpf file system",
                   [d, "--pin-dir", "/sys/fs/bpf", "--cgroup", cg, "--senders", good, "--socket", sock + "3"],
                   r"^tlsguardd: fatal: pin_dir /sys/fs/bpf: the root of a bpf file system")
        fails_with("tlsguardctl detach refuses the bpf file system's root",
                   [ctl, "--socket", sock + "3", "--pin-dir", "/sys/fs/bpf", "detach"],
                   r"^tlsguardctl: fatal: --pin-dir /sys/fs/bpf: the root of a bpf file system.*nothing removed")
        other = PINS + "-2"
        fails_with("second daemon on the same socket",
                   [d, "--pin-dir", other, "--cgroup", cg, "--senders", good, "--socket", sock],
                   r"another tlsguardd is listening")
        r.check("a failed start leaves no pins", not os.path.exists(other), other)
        fails_with("pin = no refused", [d, "-c", no_pin_conf(tmp), "--print-config"],
                   r"^tlsguardd: fatal: .*:1: pin: \"no\" is not possible: the kernel keeps enforcing")
        daemon.send_signal(signal.SIGTERM)
        rc = daemon.wait(timeout=20)
        err = daemon.stderr.read()
        daemon = None
        r.check("SIGTERM exits 0 and says the kernel keeps enforcing",
                rc == 0 and "the kernel keeps enforcing" in err, f"rc={rc} stderr={err!r}")
        progs = attached(cg)
        r.check("SIGTERM leaves the programs attached and the pins",
                "tg_sockops" in progs and "tg_connect4" in progs and os.path.isdir(PINS),
                f"attached {progs!r}, pins {os.path.isdir(PINS)}")
        r.check("control socket removed", not os.path.exists(sock), sock)
        left = detach_problems(ctl, sock, PINS, cg)
        r.check("tlsguardctl --pin-dir DIR detach with no daemon: nothing left", not left, "; ".join(left))
    finally:
        if daemon:
            daemon.kill()
            daemon.wait()
        for pins in (PINS, PINS + "-2"):
            if os.path.exists(pins):
                run([ctl, "--socket", sock, "--pin-dir", pins, "detach"])
        os.rmdir(cg)
        subprocess.run(["rm", "-rf", tmp])
    print(f"{r.passed} passed, {r.failed} failed")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
