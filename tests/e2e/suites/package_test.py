#!/usr/bin/python3
"""The Debian package (make deb), installed, upgraded and purged with dpkg.

Usage: /usr/bin/python3 tests/e2e/suites/package_test.py --deb FILE

Runs only inside a throwaway VM (``make vmtest-deb``: tools/vmtest, whose
root is an overlay that is gone at power-off), because it installs a
package; on any other machine it refuses with exit 2.

Checks: ``dpkg -i`` installs; the programs, manuals and units land with
their modes; /etc/tlsguard/tlsguard.conf is a conffile and the senders
file, made by postinst, is not (mode 0640, root); the unit is enabled;
the installed tlsguardd parses the shipped configuration; a tlsguardd
started by flags on a cgroup of the test and stopped (SIGTERM) leaves its
programs attached and pinned under /sys/fs/bpf/tlsguard; an upgrade to a
newer version (the same package rebuilt with a higher version) keeps the
administrator's edits of both files and keeps that state enforcing;
``dpkg -P`` removes the programs and /etc/tlsguard, and its prerm removes
tlsguard from the kernel (no pins, nothing attached). Prints ``PASS``/``FAIL`` lines and ``N passed, M failed``.
"""

import argparse
import os
import stat
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "fixtures"))
sys.dont_write_bytecode = True

import harness  # noqa: E402
from daemon import Daemon, attached  # noqa: E402
from postfix_env import Cgroup  # noqa: E402

VM_MARK = "/run/vmtest"   # written by tools/vmtest's second stage
CONF, SENDERS = "/etc/tlsguard/tlsguard.conf", "/etc/tlsguard/senders"
PIN_DEFAULT = "/sys/fs/bpf/tlsguard"  # the shipped configuration's pin_dir


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, **kw)


def rebuilt_newer(deb, tmp):
    """The same package with its version raised by "+1" (dpkg-deb -R/-b)."""
    tree = os.path.join(tmp, "tree")
    r = run(["dpkg-deb", "-R", deb, tree])
    if r.returncode:
        raise RuntimeError("dpkg-deb -R: %s" % r.stderr)
    ctl = os.path.join(tree, "DEBIAN", "control")
    lines = open(ctl).read().splitlines()
    version = None
    for i, line in enumerate(lines):
        if line.startswith("Version: "):
            version = line[len("Version: "):] + "+1"
            lines[i] = "Version: " + version
    with open(ctl, "w") as f:
        f.write("\n".join(lines) + "\n")
    out = os.path.join(tmp, "tlsguard_%s_amd64.deb" % version)
    r = run(["dpkg-deb", "--root-owner-group", "-b", tree, out])
    if r.returncode:
        raise RuntimeError("dpkg-deb -b: %s" % r.stderr)
    return out, version


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--deb", required=True)
    args = ap.parse_args(argv)
    if not os.path.exists(VM_MARK):
        print("package_test.py installs a package: it runs only in a vmtest VM (make vmtest-deb)",
              file=sys.stderr)
        return 2
    results = harness.Results(shown=6, more=False)
    check = results.report
    with tempfile.TemporaryDirectory(prefix="tlsguard-pkg-") as tmp:
        r = run(["dpkg", "-i", args.deb], env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        check("dpkg -i", [] if r.returncode == 0 else ["exit %d: %s" % (r.returncode, (r.stdout + r.stderr)[-600:])])

        want = {"/usr/sbin/tlsguardd": 0o755, "/usr/sbin/tlsguardctl": 0o755,
                "/usr/share/man/man8/tlsguardd.8.gz": 0o644, "/usr/share/man/man5/tlsguard.conf.5.gz": 0o644,
                "/lib/systemd/system/tlsguardd.service": 0o644, "/lib/systemd/system/tlsguarded.slice": 0o644,
                "/lib/systemd/system/tlsguardd-pins.service": 0o644,
                "/lib/systemd/system/postfix@.service.d/tlsguard.conf": 0o644,
                "/etc/tlsguard/tlsguard.conf": 0o644, "/etc/tlsguard/senders": 0o640}
        problems = []
        for path, mode in want.items():
            if not os.path.isfile(path):
                problems.append("%s missing" % path)
            elif stat.S_IMODE(os.stat(path).st_mode) != mode:
                problems.append("%s has mode %o, want %o" % (path, stat.S_IMODE(os.stat(path).st_mode), mode))
        if os.path.exists("/etc/tlsguard/senders") and os.stat("/etc/tlsguard/senders").st_uid != 0:
            problems.append("/etc/tlsguard/senders is not root's")
        check("files and modes", problems)

        r = run(["dpkg-query", "-W", "-f=${Conffiles}", "tlsguard"])
        conffiles = [x.split()[0] for x in r.stdout.splitlines() if x.strip()]
        problems = []
        if "/etc/tlsguard/tlsguard.conf" not in conffiles:
            problems.append("tlsguard.conf is not a conffile: %r" % conffiles)
        if "/etc/tlsguard/senders" in conffiles:
            problems.append("the senders file is a conffile (tlsguardctl rewrites it)")
        check("conffiles", problems)

        wants = "/etc/systemd/system/multi-user.target.wants/tlsguardd.service"
        check("tlsguardd.service enabled", [] if os.path.islink(wants) else ["%s missing" % wants])

        r = run(["/usr/sbin/tlsguardd", "-c", "/etc/tlsguard/tlsguard.conf", "--print-config=changed"])
        check("the installed tlsguardd parses the shipped configuration",
              [] if r.returncode == 0 and "syslog = yes" in r.stdout else ["exit %d: %s" % (r.returncode, r.stderr)])

        # tlsguard in the kernel, as the service leaves it when stopped:
        # an upgrade must keep it, the purge must remove it (prerm).
        cg = Cgroup.create("tlsguard-pkg")
        d = Daemon("/usr/sbin/tlsguardd", "/usr/sbin/tlsguardctl", cg.path, SENDERS,
                   os.path.join(tmp, "ctl.sock"), os.path.join(tmp, "tlsguardd.log"), pins=PIN_DEFAULT)
        problems = []
        try:
            d.start()
            why = d.sigterm()
            if why:
                problems.append(why)
        except RuntimeError as e:
            problems.append(str(e))
        if not os.path.isdir(PIN_DEFAULT) or "tg_sockops" not in attached(cg.path):
            problems.append("after SIGTERM: pins %s, attached %r" % (os.path.isdir(PIN_DEFAULT), attached(cg.path)))
        check("a stopped tlsguardd leaves the kernel enforcing", problems)

        harness.edit_admin_files(CONF, SENDERS)
        newer, version = rebuilt_newer(args.deb, tmp)
        r = run(["dpkg", "-i", newer], env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        problems = [] if r.returncode == 0 else ["exit %d: %s" % (r.returncode, (r.stdout + r.stderr)[-600:])]
        got = run(["dpkg-query", "-W", "-f=${Version}", "tlsguard"]).stdout
        if got != version:
            problems.append("installed version %r, want %r" % (got, version))
        problems += harness.admin_edits_lost(CONF, SENDERS, "the upgrade")
        check("upgrade keeps the administrator's files", problems)
        check("upgrade keeps tlsguard in the kernel",
              [] if os.path.isdir(PIN_DEFAULT) and "tg_sockops" in attached(cg.path) else
              ["after the upgrade: pins %s, attached %r" % (os.path.isdir(PIN_DEFAULT), attached(cg.path))])

        r = run(["dpkg", "-P", "tlsguard"])
        problems = [] if r.returncode == 0 else ["exit %d: %s" % (r.returncode, r.stderr[-400:])]
        for path in ("/usr/sbin/tlsguardd", "/etc/tlsguard", "/lib/systemd/system/tlsguardd.service"):
            if os.path.exists(path):
                problems.append("%s left after purge" % path)
        if os.path.exists(PIN_DEFAULT):
            problems.append("%s left after purge (prerm: tlsguardctl detach)" % PIN_DEFAULT)
        left = [x for x in attached(cg.path) if x.startswith("tg_")]
        if left:
            problems.append("still attached after purge: %s" % ", ".join(left))
        check("dpkg -P removes it all", problems)
        if os.path.exists(PIN_DEFAULT):  # the VM is thrown away; still, leave nothing
            d.detach()
        cg.remove()
    return results.summary()


if __name__ == "__main__":
    sys.exit(main())
