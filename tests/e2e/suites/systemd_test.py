#!/usr/bin/python3
"""The Debian package under a real systemd: install, send, kill, restart,
upgrade, reboot, with Postfix as the system runs it.

Usage: /usr/bin/python3 tests/e2e/suites/systemd_test.py --deb FILE --deb-next FILE

Runs only inside a throwaway VM booted with systemd as PID 1
(``make vmtest-systemd``: ``tools/vmtest --init systemd``), because it
installs packages and reboots; anywhere else it refuses with exit 2.  It
runs once per boot (VMTEST_BOOT): the first boot does everything up to
the reboot and keeps its state in STATE (on the VM's disk), the second
checks the boot and ends.

The system's own units do the work: ``dpkg -i`` installs and starts
tlsguardd.service; Postfix (Debian's postfix@-.service with the
package's drop-in) is restarted into tlsguarded.slice; two test MX hosts
run as units of their own, ordered before Postfix: 127.0.0.2 (mx.py, no
STARTTLS; domain notls.test) and 127.0.0.3 (TLS 1.3; tls.test), each
recording what it receives in a JSONL file.  Postfix's main.cf is pointed
at them (transport map) and delivers mta.test to mailbox files, so the
bounces can be read.  alice@mta.test is guaranteed (tlsguardctl sender
add), bob@mta.test is not.

At each step, for a message of each sender to notls.test: alice's is
bounced by Postfix with "TLS is required, but was not offered by host"
and a DSN lands in her mailbox, bob's is delivered, and the MX's record
holds bob's envelope and never alice's (nor her message's marker).

Steps: installed (tlsguardd active and enabled, Postfix's master in
tlsguarded.slice, alice's message to tls.test delivered over TLS 1.3);
``systemctl kill -s KILL tlsguardd`` and send at once (alice's message is
never sent in clear; the unit restarts the daemon, which adopts the
pinned state, and her message is bounced); ``systemctl restart``; the
drop-in's start setting (TLSGUARD_MTA_START): with the default, daemon,
Postfix refuses to start while tlsguardd is down (masked), with pinned
it starts and alice's message is deferred, not sent, until tlsguardd is
back; ``dpkg -i`` of the next version (programs, status and package say
it, a new daemon runs); two messages queued while Postfix is stopped,
then ``systemctl reboot``: after the boot, tlsguardd was active before
Postfix began to start, Postfix is in the slice again, the queued
messages went out at boot as they must, and a new pair too.

Prints ``PASS``/``FAIL`` lines (both boots') and ``N passed, M failed``.
"""

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "fixtures"))
sys.dont_write_bytecode = True

import harness  # noqa: E402
from postfix_env import Mail, PostfixInstance, bounce_report  # noqa: E402

VM_MARK = "/run/vmtest"   # written by tools/vmtest
STATE_DIR = "/var/lib/tlsguard-systemd-test"
STATE = os.path.join(STATE_DIR, "state.json")
MAILLOG = "/var/log/tlsguard-test-postfix.log"
UNITS = "/etc/systemd/system"
ALICE, BOB = "alice@mta.test", "bob@mta.test"
NOTLS, TLS = "rcpt@notls.test", "rcpt@tls.test"
TLS_TEXT = "TLS is required, but was not offered by host"
MX = {"notls": ("127.0.0.2", []), "tls": ("127.0.0.3", ["--tls", "1.3"])}
PF = "postfix@-.service"
# The packaged tlsguard.conf's tls_library_copies, bound by the drop-in.
LIB_COPY = "/var/lib/tlsguard/tls/libssl.so.3"
LIB_SYSTEM = "/usr/lib/x86_64-linux-gnu/libssl.so.3"
WAIT = 240  # seconds for Postfix's outcome under TCG
ENV = dict(os.environ, DEBIAN_FRONTEND="noninteractive")


def run(*argv, check=False, timeout=300):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=ENV)
    if check and r.returncode:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(argv), r.returncode, (r.stdout + r.stderr)[-800:]))
    return r


def prop(unit, name):
    return run("systemctl", "show", "-P", name, unit).stdout.strip()


def journal(*units, n=12):
    """The last lines of the units' journal of this boot, for a failure."""
    argv = ["journalctl", "-b", "--no-pager", "-o", "cat", "-n", str(n)]
    for u in units:
        argv += ["-u", u]
    return run(*argv).stdout.splitlines()


def wait_for(pred, timeout):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(0.5)


def mx_unit(name):
    return "tlsguard-test-mx-%s.service" % name


def mx_log(name):
    return os.path.join(STATE_DIR, "mx-%s.jsonl" % name)


def mx_connections(name):
    """What the MX received: one list of lines per connection, whole file (all
    boots; a connection number seen again starts a new connection)."""
    conns, current = [], {}
    try:
        with open(mx_log(name)) as f:
            for raw in f:
                ev = json.loads(raw)
                if ev["kind"] == "open" or ev["conn"] not in current:
                    current[ev["conn"]] = {"lines": [], "tls": None}
                    conns.append(current[ev["conn"]])
                c = current[ev["conn"]]
                if ev["kind"] == "line":
                    c["lines"].append(ev["data"])
                elif ev["kind"] == "tls":
                    c["tls"] = ev["data"]
    except FileNotFoundError:
        pass
    return conns


def mx_leaks(marker_list):
    """Alice's envelope or one of her messages anywhere at the plaintext MX."""
    bad = []
    for c in mx_connections("notls"):
        for line in c["lines"]:
            if re.match(r"(?i)MAIL FROM:\s*<%s>" % re.escape(ALICE), line):
                bad.append("the MX without STARTTLS received %r" % line)
            bad += ["the MX without STARTTLS received alice's message %s" % m
                    for m in marker_list if m in line]
    return bad


def mx_has(name, mail, tls=False):
    for c in mx_connections(name):
        if any(mail.marker in line for line in c["lines"]) and \
                any(re.match(r"(?i)MAIL FROM:\s*<%s>" % re.escape(mail.sender), x) for x in c["lines"]):
            return c["tls"] if tls else True
    return None


class Test:
    def __init__(self, args, results, state):
        self.args, self.results, self.state = args, results, state
        self.pf = PostfixInstance(STATE_DIR, None, {}, mailboxes=[ALICE, BOB])
        self.pf.conf = "/etc/postfix"
        self.pf.maillog = self.pf.log_path = MAILLOG

    def check(self, name, problems, info=()):
        self.results.report(name, problems, info)
        self.state["cases"].append([name, problems])
        self.save()

    def save(self):
        tmp = STATE + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.state, f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, STATE)

    def alice_markers(self):
        return [m["marker"] for m in self.state["mails"] if m["sender"] == ALICE]

    def send(self, sender, rcpt):
        m = self.pf.send(sender, [rcpt], subject="systemd_test")
        self.state["mails"].append(dataclasses.asdict(m))
        self.save()
        return m

    def outcome(self, a, b, what, deferred_ok=False):
        """alice's message a bounced (or, with deferred_ok, at least not sent) and
        her DSN in her mailbox; bob's b delivered; the MX's record: problems."""
        problems, info = [], []
        want = [a, b]
        if deferred_ok:
            res = self.pf.wait_final([b], WAIT)
            wait_for(lambda: self.pf.outcomes([a])[a.marker].status_of(NOTLS), WAIT)
            res.update(self.pf.outcomes([a]))
        else:
            res = self.pf.wait_final(want, WAIT)
        sa, sb = res[a.marker].status_of(NOTLS), res[b.marker].status_of(NOTLS)
        if deferred_ok:
            if sa is None or sa.status != "deferred":
                problems.append("alice's message: %s, want deferred" % (sa and "%s (%s)" % (sa.status, sa.text)))
            if sa is not None:
                info.append("alice: %s" % sa.line.split(": ", 1)[-1][:200])
        elif sa is None or sa.status != "bounced" or TLS_TEXT not in sa.text:
            problems.append("alice's message: %s, want bounced with %r" % (
                sa and "%s (%s)" % (sa.status, sa.text), TLS_TEXT))
        else:
            dsn = self.pf.wait_bounces([(ALICE, a.marker)], 60)[(ALICE, a.marker)]
            if not dsn or TLS_TEXT not in bounce_report(dsn[0]):
                problems.append("no DSN naming %r in alice's mailbox" % TLS_TEXT)
        if sb is None or sb.status != "sent":
            problems.append("bob's message: %s, want sent" % (sb and "%s (%s)" % (sb.status, sb.text)))
        elif not mx_has("notls", b):
            problems.append("bob's message is not in the MX's record")
        problems += mx_leaks(self.alice_markers())
        if problems:
            problems.append("%s" % self.pf.log_tail(12))
        self.check(what, problems, info)

    # ---- boot 1 ---------------------------------------------------------

    def setup(self):
        os.makedirs(os.path.join(STATE_DIR, "mail"), exist_ok=True)
        os.chown(os.path.join(STATE_DIR, "mail"), 65534, 65534)
        os.chmod(STATE_DIR, 0o755)
        for name, (addr, extra) in MX.items():
            with open(os.path.join(UNITS, mx_unit(name)), "w") as f:
                f.write("[Unit]\nDescription=tlsguard test MX %s\nBefore=%s\n\n[Service]\n"
                        "ExecStart=/usr/bin/python3 %s --host %s --quiet --jsonl %s %s\n\n"
                        "[Install]\nWantedBy=multi-user.target\n" % (
                            addr, PF, os.path.join(os.path.dirname(HERE), "fixtures", "mx.py"),
                            addr, mx_log(name), " ".join(extra)))
        with open("/etc/postfix/tlsguard-test-transport", "w") as f:
            f.write("notls.test smtp:[127.0.0.2]:25\ntls.test smtp:[127.0.0.3]:25\n")
        with open("/etc/postfix/tlsguard-test-vmailbox", "w") as f:
            f.write("%s %s\n%s %s\n" % (ALICE, ALICE, BOB, BOB))
        run("postconf", "-e", "mydestination = localhost", "myhostname = mta.test",
            "maillog_file = " + MAILLOG, "virtual_mailbox_domains = mta.test",
            "virtual_mailbox_base = " + os.path.join(STATE_DIR, "mail"),
            "virtual_mailbox_maps = texthash:/etc/postfix/tlsguard-test-vmailbox",
            "virtual_uid_maps = static:65534", "virtual_gid_maps = static:65534",
            "transport_maps = texthash:/etc/postfix/tlsguard-test-transport",
            "smtp_tls_security_level = may", "queue_run_delay = 2s", "minimal_backoff_time = 2s",
            "maximal_backoff_time = 10s", "in_flow_delay = 0s", check=True)
        run("systemctl", "daemon-reload", check=True)
        run("systemctl", "enable", "--now", mx_unit("notls"), mx_unit("tls"), check=True)

    def in_slice(self):
        """None when Postfix's master runs in tlsguarded.slice, else why not.
        (postfix@.service has GuessMainPID=no: the pid is master.pid's.)"""
        try:
            with open("/var/spool/postfix/pid/master.pid") as f:
                pid = int(f.read().split()[0])
            with open("/proc/%d/cgroup" % pid) as f:
                cg = f.read().strip()
        except (OSError, ValueError, IndexError) as e:
            return "no Postfix master: %s" % e
        want = "0::/tlsguarded.slice/%s" % PF
        return None if cg == want else "Postfix's master %d is in %s, want %s" % (pid, cg, want)

    def check_copies(self):
        """The packaged configuration's tls_library_copies and the drop-in's
        bind: Postfix's processes map tlsguardd's copy of libssl, a process
        outside the slice maps the system's file, and tlsguardd probes the
        copy, not the system's file."""
        problems = []
        try:
            copy = os.stat(LIB_COPY)
            system = os.stat(LIB_SYSTEM)
        except OSError as e:
            self.check("installed: Postfix maps tlsguardd's copy of libssl", ["%s" % e])
            return
        if copy.st_ino == system.st_ino:
            problems.append("%s is the system's file (inode %d)" % (LIB_COPY, copy.st_ino))
        procs = "/sys/fs/cgroup/tlsguarded.slice/%s/cgroup.procs" % PF
        seen = {}
        with open(procs) as f:
            for pid in f.read().split():
                try:
                    for line in open("/proc/%s/maps" % pid):
                        if line.rstrip().endswith("/libssl.so.3"):
                            seen[pid] = int(line.split()[4])
                            break
                except OSError:
                    pass
        if not seen:
            problems.append("no process of %s maps libssl.so.3" % PF)
        problems += ["Postfix's process %s maps inode %d, not the copy's %d" % (p, i, copy.st_ino)
                     for p, i in seen.items() if i != copy.st_ino]
        out = run("python3", "-c", "import ssl\nfor l in open('/proc/self/maps'):\n"
                  " if l.rstrip().endswith('/libssl.so.3'): print(l.split()[4]); break").stdout.split()
        if out != [str(system.st_ino)]:
            problems.append("a process outside the slice maps libssl inode %r, want the system's %d"
                            % (out, system.st_ino))
        probed = [line for line in journal("tlsguardd.service", n=2000) if "probing " in line]
        if not any(line.endswith("probing " + LIB_COPY) for line in probed) or \
                any(LIB_SYSTEM in line for line in probed):
            problems.append("tlsguardd probed %r, want the copy %s only" % (probed, LIB_COPY))
        self.check("installed: Postfix's %d process(es) with libssl map tlsguardd's copy, other programs "
                   "the system's file, and only the copy is probed" % len(seen), problems)

    def boot1(self):
        self.setup()
        r = run("dpkg", "-i", self.args.deb)
        problems = [] if r.returncode == 0 else ["dpkg -i: exit %d: %s" % (r.returncode, (r.stdout + r.stderr)[-600:])]
        for what, want in (("ActiveState", "active"), ("UnitFileState", "enabled")):
            if prop("tlsguardd.service", what) != want:
                problems.append("tlsguardd.service %s is %s, want %s" % (
                    what, prop("tlsguardd.service", what), want))
        r = run("systemctl", "restart", PF)
        if r.returncode:
            problems.append("systemctl restart %s: %s" % (PF, r.stderr.strip()))
        problems += [p for p in [self.in_slice()] if p]
        r = run("tlsguardctl", "sender", "add", ALICE)
        if r.returncode:
            problems.append("tlsguardctl sender add: %s" % r.stderr.strip())
        self.check("installed: tlsguardd started by dpkg and enabled, Postfix in tlsguarded.slice", problems,
                   journal("tlsguardd.service", PF) if problems else ())

        a, b, t = self.send(ALICE, NOTLS), self.send(BOB, NOTLS), self.send(ALICE, TLS)
        self.outcome(a, b, "installed: alice bounced, bob delivered, nothing of alice's at the MX")
        o = self.pf.wait_final([t], WAIT)[t.marker].status_of(TLS)
        v = mx_has("tls", t, tls=True)
        self.check("installed: alice's message to a TLS 1.3 host delivered over TLS 1.3",
                   [] if o and o.status == "sent" and v and v.startswith("TLSv1.3") else
                   ["status %s, the MX's TLS %r" % (o and o.status, v)])

        self.check_copies()

        pid = prop("tlsguardd.service", "MainPID")
        n0 = int(prop("tlsguardd.service", "NRestarts") or 0)
        run("systemctl", "kill", "-s", "KILL", "tlsguardd.service", check=True)
        a, b = self.send(ALICE, NOTLS), self.send(BOB, NOTLS)
        back = wait_for(lambda: prop("tlsguardd.service", "ActiveState") == "active"
                        and prop("tlsguardd.service", "MainPID") not in ("0", pid), 180)
        problems = [] if back else ["tlsguardd did not come back: %s" % run(
            "systemctl", "status", "--no-pager", "tlsguardd").stdout[-600:]]
        n1 = int(prop("tlsguardd.service", "NRestarts") or 0)
        if n1 != n0 + 1:
            problems.append("NRestarts %d -> %d, want one restart" % (n0, n1))
        self.check("kill -9: the unit restarts tlsguardd (pid %s -> %s)" % (
            pid, prop("tlsguardd.service", "MainPID")), problems)
        deferred = [s for m, q, r, s in self.pf.mail_log([a]) if s and s.status == "deferred"]
        self.outcome(a, b, "kill -9: alice never sent in clear, bounced once the daemon is back; bob delivered",)
        self.results.say(["alice's message was deferred %d time(s) while tlsguardd was down" % len(deferred)])

        pid = prop("tlsguardd.service", "MainPID")
        r = run("systemctl", "restart", "tlsguardd.service")
        self.check("systemctl restart tlsguardd", [] if r.returncode == 0 and prop(
            "tlsguardd.service", "MainPID") not in ("0", pid) else ["exit %d: %s" % (r.returncode, r.stderr)])
        a, b = self.send(ALICE, NOTLS), self.send(BOB, NOTLS)
        self.outcome(a, b, "restart: alice bounced, bob delivered")

        self.start_setting()

        r = run("dpkg", "-i", self.args.deb_next)
        ver = run("dpkg-deb", "-f", self.args.deb_next, "Version").stdout.strip()
        problems = [] if r.returncode == 0 else ["dpkg -i: exit %d: %s" % (r.returncode, (r.stdout + r.stderr)[-600:])]
        got = {"dpkg-query": run("dpkg-query", "-W", "-f=${Version}", "tlsguard").stdout.strip(),
               "tlsguardd --version": run("tlsguardd", "--version").stdout.split()[-1:],
               "status": re.findall(r"(?m)^version:\s*(\S+)", run("tlsguardctl", "status").stdout)}
        for k, v in got.items():
            if (v if isinstance(v, str) else (v[0] if v else None)) != ver:
                problems.append("%s says %r, want %s" % (k, v, ver))
        if prop("tlsguardd.service", "ActiveState") != "active":
            problems.append("tlsguardd.service is %s after the upgrade" % prop("tlsguardd.service", "ActiveState"))
        self.check("upgrade to %s: package, programs and the running daemon say it" % ver, problems)
        a, b = self.send(ALICE, NOTLS), self.send(BOB, NOTLS)
        self.outcome(a, b, "upgraded: alice bounced, bob delivered")

        run("systemctl", "stop", PF, check=True)
        a, b = self.send(ALICE, NOTLS), self.send(BOB, NOTLS)
        self.state["queued"] = [a.marker, b.marker]
        self.state["version"] = ver
        self.save()
        self.results.say(["rebooting, with two messages queued while Postfix is stopped"])
        sys.stdout.flush()
        run("sync")
        run("systemctl", "reboot", check=True)
        time.sleep(600)
        return None

    def start_setting(self):
        """TLSGUARD_MTA_START: daemon (the default) refuses Postfix's start while
        tlsguardd is down; pinned starts it, held by the pinned kernel state."""
        run("systemctl", "stop", "tlsguardd.service", check=True)
        run("systemctl", "mask", "--runtime", "tlsguardd.service", check=True)
        problems = []
        r = run("systemctl", "restart", PF)
        if r.returncode == 0 or prop(PF, "ActiveState") == "active":
            problems.append("Postfix started while tlsguardd was down (%s)" % prop(PF, "ActiveState"))
        j = run("journalctl", "-b", "-u", PF, "--no-pager", "-o", "cat").stdout
        if "the MTA must not start (start-check daemon)" not in j:
            problems.append("no start-check refusal in Postfix's journal: %s" % j[-400:])
        for mode, want in (("daemon", 1), ("pinned", 0)):
            rc = run("tlsguardctl", "start-check", mode).returncode
            if rc != want:
                problems.append("tlsguardctl start-check %s: exit %d, want %d" % (mode, rc, want))
        self.check("start setting daemon (default): Postfix refuses to start while tlsguardd is down", problems)

        dropin = "/etc/systemd/system/%s.d" % PF
        os.makedirs(dropin, exist_ok=True)
        with open(os.path.join(dropin, "override.conf"), "w") as f:
            f.write("[Service]\nEnvironment=TLSGUARD_MTA_START=pinned\n")  # as systemctl edit would
        run("systemctl", "daemon-reload", check=True)
        r = run("systemctl", "start", PF)
        problems = [] if r.returncode == 0 else ["systemctl start %s: %s" % (PF, r.stderr.strip())]
        problems += [p for p in [self.in_slice()] if p]
        self.check("start setting pinned: Postfix starts while tlsguardd is down, in the slice", problems)
        a, b = self.send(ALICE, NOTLS), self.send(BOB, NOTLS)
        self.outcome(a, b, "start setting pinned: alice deferred, never sent, while tlsguardd is down; "
                     "bob delivered", deferred_ok=True)

        os.unlink(os.path.join(dropin, "override.conf"))
        run("systemctl", "unmask", "--runtime", "tlsguardd.service", check=True)
        run("systemctl", "daemon-reload", check=True)
        run("systemctl", "start", "tlsguardd.service", check=True)
        b2 = self.send(BOB, NOTLS)
        self.outcome(a, b2, "tlsguardd back: the deferred message of alice's bounced on Postfix's retry")
        r = run("systemctl", "restart", PF)
        self.check("default setting again: Postfix restarts with tlsguardd up",
                   [] if r.returncode == 0 else [r.stderr.strip()])

    # ---- boot 2 ---------------------------------------------------------

    def boot2(self):
        problems = []
        for u in ("tlsguardd.service", PF):
            if prop(u, "ActiveState") != "active":
                problems.append("%s is %s after the boot" % (u, prop(u, "ActiveState")))
        ready = int(prop("tlsguardd.service", "ActiveEnterTimestampMonotonic") or 0)
        pf_start = int(prop(PF, "InactiveExitTimestampMonotonic") or 0)
        if not ready or not pf_start or ready > pf_start:
            problems.append("tlsguardd ready at %d us, Postfix began to start at %d us" % (ready, pf_start))
        problems += [p for p in [self.in_slice()] if p]
        ver = run("tlsguardctl", "status").stdout
        if "version:         %s" % self.state["version"] not in ver and \
                not re.search(r"(?m)^version:\s*%s$" % re.escape(self.state["version"]), ver):
            problems.append("status after the boot: %s" % ver[-300:])
        self.check("reboot: tlsguardd ready (%.1f s) before Postfix began to start (%.1f s), "
                   "Postfix in the slice" % (ready / 1e6, pf_start / 1e6), problems)
        by = {m["marker"]: Mail(**m) for m in self.state["mails"]}
        a, b = (by[x] for x in self.state["queued"])
        self.outcome(a, b, "reboot: the messages queued before it, sent at boot: alice bounced, bob delivered")
        a, b = self.send(ALICE, NOTLS), self.send(BOB, NOTLS)
        self.outcome(a, b, "after the boot: alice bounced, bob delivered")
        return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--deb", required=True)
    ap.add_argument("--deb-next", required=True, help="the same package, a higher version")
    args = ap.parse_args(argv)
    boot = os.environ.get("VMTEST_BOOT")
    if not os.path.exists(VM_MARK) or not boot or open("/proc/1/comm").read().strip() != "systemd":
        print("systemd_test.py installs packages and reboots: it runs only in a vmtest VM "
              "booted with systemd (make vmtest-systemd)", file=sys.stderr)
        return 2
    results = harness.Results(shown=4, more=False)
    if boot == "1":
        os.makedirs(STATE_DIR, exist_ok=True)
        state = {"cases": [], "mails": []}
    else:
        with open(STATE) as f:
            state = json.load(f)
        results.cases = [tuple(c) for c in state["cases"]]
    print("== boot %s" % boot, flush=True)
    t = Test(args, results, state)
    try:
        (t.boot1 if boot == "1" else t.boot2)()
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        t.check("boot %s" % boot, ["%s: %s" % (type(e).__name__, e)])
    return results.summary()


if __name__ == "__main__":
    sys.exit(main())
