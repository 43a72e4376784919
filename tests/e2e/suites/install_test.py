#!/usr/bin/python3
"""``make install`` into a temporary tree, as an administrator would use it.

Usage: /usr/bin/python3 tests/e2e/suites/install_test.py [--build DIR]

Checks: every file lands with its mode; the systemd units name the
installed programs and configuration and pass ``systemd-analyze verify``;
``systemd-analyze security`` rates tlsguardd.service at most 2.5; tlsguardd
started under exactly the unit's capability bounding set (setpriv) holds a
guaranteed MAIL FROM from a cgroup of this test and keeps neither
CAP_SYS_ADMIN nor a way to regain it; the manuals render without a warning
from man(1); the shipped
tlsguard.conf parses (``tlsguardd -c FILE --print-config``); a second
install keeps an edited configuration and senders file; ``make
uninstall`` removes what install put there and keeps /etc/tlsguard.
Prints ``PASS``/``FAIL`` lines and ``N passed, M failed``.
"""

import argparse
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "fixtures"))
sys.dont_write_bytecode = True

import harness  # noqa: E402
from daemon import Daemon  # noqa: E402
from mx import TestMX  # noqa: E402
from postfix_env import Cgroup  # noqa: E402


MAX_EXPOSURE = 2.5
CAPS_MX = "127.0.0.230"     # this suite's test MX
GUARANTEED = "alice@example.org"

# Capability numbers (linux/capability.h), for /proc/PID/status masks.
CAP_NUM = {"CAP_DAC_READ_SEARCH": 2, "CAP_SETPCAP": 8, "CAP_NET_ADMIN": 12, "CAP_SYS_PTRACE": 19,
           "CAP_SYS_ADMIN": 21, "CAP_PERFMON": 38, "CAP_BPF": 39}


def status_mask(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1], 16)
    return None


def filter_groups():
    """systemd's system call groups, expanded: {"@name": {syscall, ...}}."""
    out = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True).stdout
    raw, cur = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            cur = raw.setdefault(line.strip(), [])
        elif cur is not None and line.strip() and not line.strip().startswith("#"):
            cur.append(line.strip())

    def expand(name, seen=()):
        got = set()
        for x in raw.get(name, []):
            got |= expand(x, seen + (name,)) if x.startswith("@") and x not in seen else {x}
        return got
    return {g: expand(g) for g in raw}


def unit_syscalls(unit):
    """The system calls the unit's SystemCallFilter= lines allow, as systemd
    reads them: the first line an allow list, "~" lines take away, later
    lines add."""
    groups = filter_groups()
    allowed = None
    for m in re.finditer(r"^SystemCallFilter=(~?)(.*)$", unit, re.M):
        names = set()
        for x in m.group(2).split():
            names |= groups.get(x, set()) if x.startswith("@") else {x}
        if allowed is None:
            allowed = set() if m.group(1) else names
        elif m.group(1):
            allowed -= names
        else:
            allowed |= names
    return allowed


def syscalls_outside_filter(unit, trace):
    """System calls tlsguardd made (strace -f of its run) that the unit's
    filter would refuse with EPERM."""
    allowed = unit_syscalls(unit)
    if allowed is None:
        return ["the unit has no SystemCallFilter="]
    made = set()
    try:
        with open(trace, errors="replace") as f:
            for line in f:
                m = re.match(r"\d+\s+(?:<\.\.\. )?([a-z_0-9]+)[( ]", line)
                if m and m.group(1) not in ("exited", "killed"):
                    made.add(m.group(1))
    except OSError as e:
        return ["no system call trace: %s" % e]
    # setpriv's own calls before it runs tlsguardd are not the daemon's.
    outside = sorted(made - allowed)
    return ["system calls outside the unit's SystemCallFilter: %s" % " ".join(outside)] if outside else []


def traced_child(pid, timeout=10):
    """The process strace (pid) runs: its only child."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
                kids = f.read().split()
            if kids:
                return int(kids[0])
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("strace %d has no child" % pid)


def run_with_unit_caps(unit, tlsguardd, tlsguardctl, tmp):
    """tlsguardd under exactly the unit's CapabilityBoundingSet (setpriv, as
    systemd would bound it), with an audit trail and TLS library copies, in
    a cgroup of this test: it must start, hold a
    guaranteed MAIL FROM from the cgroup (the whole kernel path works with
    those capabilities), and then hold no CAP_SYS_ADMIN, with no_new_privs."""
    m = re.search(r"^CapabilityBoundingSet=(.*)$", unit, re.M)
    if not m:
        return ["the unit has no CapabilityBoundingSet="]
    caps = m.group(1).split()
    if not shutil.which("setpriv"):
        return ["setpriv is missing (util-linux)"]
    bset = "-all," + ",".join("+" + c[len("CAP_"):].lower() for c in caps)
    cg = Cgroup.create("tlsguard-caps")
    senders = os.path.join(tmp, "caps-senders")
    with open(senders, "w") as f:
        f.write(GUARANTEED + "\n")
    sock = os.path.join(tmp, "caps.sock")
    d = Daemon(tlsguardd, tlsguardctl, cg.path, senders, sock, os.path.join(tmp, "caps.log"))
    trace = os.path.join(tmp, "caps.strace")
    # The audit trail (its flushing thread) and the TLS library copies
    # (the packaged configuration's) run too, so that their system calls
    # are checked against the unit's filter.
    d.argv += ["--audit", os.path.join(tmp, "caps-audit.json"),
               "--tls-library-copies", os.path.join(tmp, "caps-copies")]
    d.argv = ["strace", "-f", "-qq", "-o", trace, "setpriv", "--bounding-set=" + bset] + d.argv
    mx = TestMX(CAPS_MX, 25, name="caps")
    problems = []
    try:
        mx.start()
        d.start()
        # A client in the cgroup: EHLO, then the guaranteed sender's MAIL.
        client = ("import smtplib,sys\n"
                  "s=smtplib.SMTP(%r,25,timeout=20); s.ehlo('caps.test')\n"
                  "c,m=s.docmd('MAIL FROM:<%s>'); print(c, m.decode(errors='replace'))\n"
                  "try: s.quit()\nexcept Exception: pass\n" % (CAPS_MX, GUARANTEED))
        r = subprocess.run(["/bin/sh", "-c", 'echo $$ > "$1"; shift; exec "$@"', "sh", cg.procs_file,
                            sys.executable, "-c", client], capture_output=True, text=True, timeout=60)
        if not r.stdout.startswith("550 "):
            problems.append("the guaranteed MAIL was answered %r (want tlsguard's 550)%s" % (
                (r.stdout + r.stderr).strip()[-300:], d.log_tail()))
        if any(t.sender == GUARANTEED for t in mx.transactions()):
            problems.append("the guaranteed MAIL FROM reached the MX")
        pid = traced_child(d.proc.pid)
        prm, nnp = status_mask(pid, "CapPrm"), status_mask(pid, "NoNewPrivs")
        if prm is None or prm & (1 << CAP_NUM["CAP_SYS_ADMIN"]):
            problems.append("after start it still holds CAP_SYS_ADMIN (CapPrm %s)" % (
                "%x" % prm if prm is not None else "?"))
        if nnp != 1:
            problems.append("no_new_privs is not set")
        bnd = status_mask(pid, "CapBnd")
        want = 0
        for c in caps:
            want |= 1 << CAP_NUM.get(c, 63)
        if bnd is not None and bnd & ~want:
            problems.append("its bounding set %x exceeds the unit's %x" % (bnd, want))
        # SIGTERM as systemd sends it: the exit path is traced too.
        os.kill(pid, signal.SIGTERM)
        try:
            d.proc.wait(30)
        except subprocess.TimeoutExpired:
            problems.append("tlsguardd did not exit within 30 s of SIGTERM")
        problems += syscalls_outside_filter(unit, trace)
    except Exception as e:  # noqa: BLE001 - reported as the check's failure
        problems.append("%s: %s" % (type(e).__name__, e))
    finally:
        if d.proc is not None and d.proc.poll() is None:
            try:
                os.kill(traced_child(d.proc.pid, 1), signal.SIGTERM)
            except (RuntimeError, OSError):
                pass
            d.stop()
        # SIGTERM leaves the kernel enforcing: the deliberate removal
        problems += d.detach()
        mx.stop()
        cg.remove()
    return problems


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--promtool", help="Prometheus' promtool, for the shipped alert rules (make mta-deps)")
    args = ap.parse_args(argv)
    results = harness.Results(shown=6, more=False)
    check = results.report

    tmp = tempfile.mkdtemp(prefix="tlsguard-install-")
    try:
        prefix, etc, units = os.path.join(tmp, "usr"), os.path.join(tmp, "etc"), os.path.join(tmp, "units")
        logdir = os.path.join(tmp, "log", "tlsguard")
        make = ["make", "-s", "-C", REPO, "BUILD=%s" % args.build, "PREFIX=%s" % prefix,
                "SYSCONFDIR=%s" % etc, "UNITDIR=%s" % units, "LOGDIR=%s" % logdir]
        r = subprocess.run(make + ["install"], capture_output=True, text=True)
        check("make install", [] if r.returncode == 0 else ["exit %d: %s" % (r.returncode, r.stderr[-500:])])
        want = {
            "usr/sbin/tlsguardd": 0o755, "usr/sbin/tlsguardctl": 0o755,
            "usr/share/man/man8/tlsguardd.8": 0o644, "usr/share/man/man8/tlsguardctl.8": 0o644,
            "usr/share/man/man5/tlsguard.conf.5": 0o644,
            "usr/share/tlsguard/pgsql/schema.sql": 0o644,
            "units/tlsguardd.service": 0o644, "units/tlsguarded.slice": 0o644,
            "units/tlsguardd-pins.service": 0o644,
            "units/postfix@.service.d/tlsguard.conf": 0o644,
            "etc/tlsguard/tlsguard.conf": 0o644, "etc/tlsguard/senders": 0o640,
            "etc/logrotate.d/tlsguard": 0o644,
        }
        problems = []
        for rel, mode in want.items():
            p = os.path.join(tmp, rel)
            if not os.path.isfile(p):
                problems.append("%s missing" % rel)
            elif stat.S_IMODE(os.stat(p).st_mode) != mode:
                problems.append("%s has mode %o, want %o" % (rel, stat.S_IMODE(os.stat(p).st_mode), mode))
        if not os.path.isdir(logdir) or stat.S_IMODE(os.stat(logdir).st_mode) != 0o750:
            problems.append("log directory %s missing or not mode 0750" % logdir)
        check("files and modes", problems)

        problems = []
        snippet = os.path.join(etc, "logrotate.d", "tlsguard")
        audit = os.path.join(logdir, "audit.json")
        with open(audit, "w") as f:
            f.write('{"schema_version":2}\n')
        r = subprocess.run(["logrotate", "--debug", "--force", "--state", os.path.join(tmp, "logrotate.state"),
                            snippet], capture_output=True, text=True)
        if r.returncode != 0 or ("rotating pattern: %s/*.json" % logdir) not in r.stderr + r.stdout \
                or "considering log %s" % audit not in r.stderr + r.stdout or "error" in (r.stderr + r.stdout):
            problems.append("logrotate --debug: exit %d, %s" % (r.returncode, (r.stderr + r.stdout)[-600:]))
        check("logrotate snippet", problems)

        problems = []
        try:
            with open(os.path.join(REPO, "dist", "grafana", "tlsguard.json")) as f:
                dash = json.load(f)
            exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
            if not exprs or any("tlsguard_" not in e for e in exprs):
                problems.append("dashboard queries: %r" % exprs)
        except (OSError, ValueError, KeyError, TypeError) as e:
            problems.append("dist/grafana/tlsguard.json: %s: %s" % (type(e).__name__, e))
        check("grafana dashboard", problems)

        rules = os.path.join(REPO, "dist", "prometheus", "tlsguard.rules.yml")
        if args.promtool and os.access(args.promtool, os.X_OK):
            r = subprocess.run([args.promtool, "check", "rules", rules], capture_output=True, text=True)
            check("alert rules", [] if r.returncode == 0 and "SUCCESS" in r.stdout else
                  ["promtool check rules %s: exit %d: %s" % (rules, r.returncode, (r.stdout + r.stderr)[-400:])])
        else:
            results.skip("alert rules", "no promtool at %s (make mta-deps unpacks it)" % args.promtool)

        problems = []
        unit = open(os.path.join(units, "tlsguardd.service")).read()
        dropin = open(os.path.join(units, "postfix@.service.d", "tlsguard.conf")).read()
        if "ExecStart=%s/sbin/tlsguardd -c %s/tlsguard/tlsguard.conf\n" % (prefix, etc) not in unit:
            problems.append("tlsguardd.service: ExecStart does not name the installed files")
        if "Type=notify" not in unit or "Restart=on-failure" not in unit:
            problems.append("tlsguardd.service: no readiness notification or restart")
        if "Slice=tlsguarded.slice" not in dropin or "ExecStartPre=%s/sbin/tlsguardctl start-check ${TLSGUARD_MTA_START}" % prefix not in dropin:
            problems.append("postfix drop-in: %r" % dropin)
        if re.search(r"@[A-Z]+@", unit):
            problems.append("tlsguardd.service has an unreplaced @VAR@")
        if re.search(r"@[A-Z]+@", dropin):
            problems.append("postfix drop-in has an unreplaced @VAR@")
        if not re.search(r"^BindReadOnlyPaths=-/var/lib/tlsguard/tls/libssl\.so\.3:/usr/lib/[a-z0-9_-]+/libssl\.so\.3$",
                         dropin, re.M):
            problems.append("postfix drop-in does not bind tlsguardd's copy of libssl: %r" % dropin)
        if shutil.which("systemd-analyze"):
            for u in ("tlsguardd.service", "tlsguarded.slice", "tlsguardd-pins.service"):
                r = subprocess.run(["systemd-analyze", "verify", "--man=no", os.path.join(units, u)],
                                   capture_output=True, text=True)
                if r.returncode != 0 or r.stderr.strip():
                    problems.append("systemd-analyze verify %s: %s" % (u, r.stderr.strip()[-300:]))
        else:
            problems.append("systemd-analyze is missing (make deps installs systemd)")
        check("systemd units", problems)

        # What a hardening review reads: systemd's own exposure score.
        problems = []
        r = subprocess.run(["systemd-analyze", "security", "--offline=yes",
                            os.path.join(units, "tlsguardd.service")], capture_output=True, text=True)
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout)
        if not m:
            problems.append("systemd-analyze security: no score: %s" % (r.stdout + r.stderr)[-300:])
        elif float(m.group(1)) > MAX_EXPOSURE:
            worst = [x for x in r.stdout.splitlines() if x.startswith("\u2717")]
            problems.append("exposure %s, want <= %.1f; open: %s" % (m.group(1), MAX_EXPOSURE, "; ".join(
                x.split()[1] for x in worst)))
        check("tlsguardd.service: systemd-analyze security <= %.1f" % MAX_EXPOSURE, problems)

        check("tlsguardd runs with the unit's capabilities alone",
              run_with_unit_caps(unit, os.path.join(prefix, "sbin/tlsguardd"),
                                 os.path.join(prefix, "sbin/tlsguardctl"), tmp))

        problems = []
        for page in ("man8/tlsguardd.8", "man8/tlsguardctl.8", "man5/tlsguard.conf.5"):
            r = subprocess.run(["man", "--warnings=w", "-l", os.path.join(prefix, "share/man", page)],
                               capture_output=True, text=True, env=dict(os.environ, MANWIDTH="80",
                                                                        LC_ALL="C.UTF-8"))
            if r.returncode != 0 or r.stderr.strip() or "SYNOPSIS" not in r.stdout:
                problems.append("%s: exit %d, %r" % (page, r.returncode, r.stderr.strip()[-300:]))
        check("manuals render without warnings", problems)

        conf = os.path.join(etc, "tlsguard", "tlsguard.conf")
        r = subprocess.run([os.path.join(prefix, "sbin/tlsguardd"), "-c", conf, "--print-config=changed"],
                           capture_output=True, text=True)
        problems = [] if r.returncode == 0 else ["exit %d: %s" % (r.returncode, r.stderr)]
        for line in ("cgroup = /sys/fs/cgroup/tlsguarded.slice",
                     "senders_file = %s/tlsguard/senders" % etc, "syslog = yes"):
            if line not in r.stdout.splitlines():
                problems.append("shipped tlsguard.conf: %r missing from %r" % (line, r.stdout))
        check("shipped configuration parses", problems)

        senders = os.path.join(etc, "tlsguard", "senders")
        harness.edit_admin_files(conf, senders)
        r = subprocess.run(make + ["install"], capture_output=True, text=True)
        problems = [] if r.returncode == 0 else [r.stderr[-300:]]
        problems += harness.admin_edits_lost(conf, senders, "a second install")
        check("second install keeps the administrator's files", problems)

        r = subprocess.run(make + ["uninstall"], capture_output=True, text=True)
        left = [rel for rel in want if os.path.exists(os.path.join(tmp, rel)) and not rel.startswith("etc/")]
        problems = ([] if r.returncode == 0 else [r.stderr[-300:]]) + ["%s left" % x for x in left]
        if not os.path.exists(conf):
            problems.append("uninstall removed the configuration")
        check("make uninstall", problems)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results.summary()


if __name__ == "__main__":
    sys.exit(main())
