#!/usr/bin/python3
"""``make install`` into a temporary tree, as an administrator would use it.

Usage: /usr/bin/python3 tests/e2e/suites/install_test.py [--build DIR]

Checks: every file lands with its mode; the systemd units name the
installed programs and configuration and pass ``systemd-analyze verify``;
the manuals render without a warning from man(1); the shipped
tlsguard.conf parses (``tlsguardd -c FILE --print-config``); a second
install keeps an edited configuration and senders file; ``make
uninstall`` removes what install put there and keeps /etc/tlsguard.
Prints ``PASS``/``FAIL`` lines and ``N passed, M failed``.
"""

import argparse
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "fixtures"))
sys.dont_write_bytecode = True

import harness  # noqa: E402


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
            "units/tlsguardd.service": 0o644, "units/tlsguarded.slice": 0o644,
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
        if "Slice=tlsguarded.slice" not in dropin or "ExecStartPre=%s/sbin/tlsguardctl status" % prefix not in dropin:
            problems.append("postfix drop-in: %r" % dropin)
        if "@" in unit.replace("postfix@-", "").replace("$MAINPID", ""):
            problems.append("tlsguardd.service has an unreplaced @VAR@")
        if shutil.which("systemd-analyze"):
            for u in ("tlsguardd.service", "tlsguarded.slice"):
                r = subprocess.run(["systemd-analyze", "verify", "--man=no", os.path.join(units, u)],
                                   capture_output=True, text=True)
                if r.returncode != 0 or r.stderr.strip():
                    problems.append("systemd-analyze verify %s: %s" % (u, r.stderr.strip()[-300:]))
        else:
            problems.append("systemd-analyze is missing (make deps installs systemd)")
        check("systemd units", problems)

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
                     "senders_file = %s/tlsguard/senders" % etc, "pin = yes", "syslog = yes"):
            if line not in r.stdout.splitlines():
                problems.append("shipped tlsguard.conf: %r missing from %r" % (line, r.stdout))
        check("shipped configuration parses", problems)

        with open(conf, "a") as f:
            f.write("slots = 77\n")
        with open(os.path.join(etc, "tlsguard", "senders"), "w") as f:
            f.write("alice@example.org\n")
        r = subprocess.run(make + ["install"], capture_output=True, text=True)
        problems = [] if r.returncode == 0 else [r.stderr[-300:]]
        if "slots = 77\n" not in open(conf).read():
            problems.append("a second install replaced the edited tlsguard.conf")
        if open(os.path.join(etc, "tlsguard", "senders")).read() != "alice@example.org\n":
            problems.append("a second install replaced the senders file")
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
