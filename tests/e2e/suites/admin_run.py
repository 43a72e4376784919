#!/usr/bin/python3
"""End-to-end test of running tlsguard as an administrator does.

Usage (as root; builds nothing):
    /usr/bin/python3 tests/e2e/suites/admin_run.py [--tlsguardd build/tlsguardd]
        [--tlsguardctl build/tlsguardctl] [--keep]

What it checks, with a real Postfix in a test cgroup sending to a recording
MX without STARTTLS on 127.0.0.220:25, and ``tlsguardd -c FILE`` (the
configuration file is the only source of settings):

  * config_errors: each malformed configuration file makes
    ``tlsguardd -c FILE --print-config`` exit 1 with one line naming the
    file and line; continuation lines, a later setting replacing an
    earlier one, and a flag overriding the file are honoured.
  * ready: $NOTIFY_SOCKET gets READY=1 only once the sock_ops program is
    attached to the cgroup (bpftool cgroup show, read on receipt).
  * privileges: the running daemon's effective, permitted and bounding
    capability sets are exactly CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN,
    CAP_SYS_PTRACE, with no_new_privs; user nobody
    cannot use the control socket.
  * live_add_remove: a sender's mail is delivered; after ``tlsguardctl
    sender add`` the next one bounces with "TLS is required, but was not
    offered by host" (and nothing of it reaches the MX); after ``sender
    remove`` the next one is delivered again. Nothing is restarted.
  * sighup: an entry appended to the senders file by hand applies after
    SIGHUP; ``tlsguardctl reload`` of a broken file fails naming file and
    line and keeps the senders in force. A sender removed by hand and one
    added (the list in force changed in place), then 5000 more (the list
    freed and the file read again), then the file as it was: after each
    reload ``sender check`` (which reads the kernel map) and mail agree
    with the file, and neither a failed reload nor a disagreement of the
    map and the agent's list is logged.
  * concurrent_changes: 24 ``sender add`` at once, then 24 ``sender
    remove`` at once: each lands exactly once, comments and other lines
    stay, no temporary file is left, the file keeps its mode.
  * exempt: with "@corp.test" guaranteed and "exempt = SRS0=,
    lists@corp.test", an SRS-rewritten sender and lists@ are delivered,
    joe@corp.test bounces.
  * config_ctl: ``tlsguardctl config`` and ``config -n``.
  * syslog: the daemon's syslog lines (to a datagram socket of the test's,
    ``syslog_socket``) carry facility mail and the held decision in
    Postfix's form, naming host[addr]:port, the sender and the reply.
  * address_forms: with Postfix's recipient_delimiter "+-", BATV-signed
    senders (prvs=, btv1==), "carol-lists@" and internationalized domains
    (the senders file has one as A-label, one as U-label; mail comes from
    the other form, in upper case, in NFD) are the guaranteed senders they
    name: bounced, nothing at the MX; others are delivered.
  * routes: with relayhost = [127.0.0.221]:587, Postfix delivers a
    guaranteed sender's mail there (the relay records it); after SIGHUP
    tlsguardd logs a warning naming relayhost and port 587, tlsguardctl
    status lists the route NOT GUARDED, tlsguard_unguarded_routes is 1, and
    with unguarded_routes = refuse tlsguardd exits non-zero with its fatal
    line.
  * log_join: a held message to two recipients: for each, tlsguardd's
    recipient line (to=, relay=, mta=smtp[PID], from=, dsn=, status=held)
    joins Postfix's status=bounced line by recipient, relay and the smtp
    process's pid.
  * reply_settings: restarted with ``reject_code = 554``, a notls_text
    that has the word "negotiated" in it, the metrics and an audit file, a
    guaranteed sender's mail bounces with "554 5.7.10 <that text>", the
    metric ``tlsguard_replies_total{kind="bounced_550"}`` counts it (the
    agent counts its replies by kind, not by code) and its audit record
    says held-no-tls (the verdict comes from the reply's kind, not from its
    text).

Output: ``PASS name`` / ``FAIL name: why``, then ``N passed, M failed``;
exit status 0 only if none failed. Everything is removed at the end (harness.Run).
"""

import concurrent.futures
import json
import os
import pwd
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "fixtures"))
sys.dont_write_bytecode = True

import harness  # noqa: E402
from daemon import TLS_TEXT, detach_problems, pin_dir  # noqa: E402
from mx import TestMX  # noqa: E402
from postfix_env import (PostfixError, PostfixInstance, PostfixMissing,  # noqa: E402
                         check_postfix_installed)

MX_ADDR = "127.0.0.220"
TRANSPORTS = {"plain.test": "smtp:[%s]:25" % MX_ADDR}
MAILBOX_DOMAINS = ["example.org", "corp.test"]
SENDERS = ("# guaranteed senders (tlsguard admin test)\n@corp.test\ncarol@example.org\n"
           "# an internationalized domain as A-label, another as U-label\n"
           "@xn--bcher-kva.test\n@caf\u00e9.test\n")
RELAY_ADDR = "127.0.0.221"  # a relayhost on port 587, which tlsguard does not guard
# Capabilities the running daemon keeps (tg_service.h).
CAP_NET_ADMIN, CAP_SYS_PTRACE, CAP_PERFMON, CAP_BPF = 12, 19, 38, 39
CAPS_KEPT = sum(1 << c for c in (CAP_NET_ADMIN, CAP_SYS_PTRACE, CAP_PERFMON, CAP_BPF))
TIMEOUT = 60.0


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)


class DgramSink:
    """A datagram socket that keeps what it receives (syslog, sd_notify)."""

    def __init__(self, path, on_message=None):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.messages = []
        self.on_message = on_message
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            text = data.decode(errors="replace")
            if self.on_message:
                self.on_message(text)
            with self.lock:
                self.messages.append(text)

    def wait_for(self, pattern, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for m in self.messages:
                    if re.search(pattern, m):
                        return m
            time.sleep(0.1)
        return None

    def close(self):
        self.sock.close()


# ------------------------------------------------------------------ config errors

def config_errors(args, tmp, r):
    """Malformed files: exit 1, one line naming FILE:LINE. Good ones: as documented."""
    problems = []
    bad = [
        ("unknown setting", "cgroup = /x\n\nbogus_key = 1\n", 3, r"unknown setting \"bogus_key\""),
        ("bad port", "smtp_ports = 25, 70000\n", 1, r"smtp_ports: bad value \"70000\""),
        ("too many ports", "smtp_ports = 1 2 3 4 5\nsmtps_ports = 6 7 8 9\n", 2, r"at most 8 ports"),
        ("bad bool", "# c\nsyslog = maybe\n", 2, r"syslog: bad value \"maybe\": expected yes or no"),
        ("pin = no", "# c\npin = no\n", 2, r"pin: \"no\" is not possible: the kernel keeps enforcing"),
        ("pin_dir relative", "pin_dir = tlsguard\n", 1, r"pin_dir: bad value \"tlsguard\": expected an absolute path"),
        ("bad exempt", "exempt = SRS0=,\n  not-an-address\n", 1, r"exempt: bad entry \"not-an-address\""),
        ("metrics not loopback", "metrics_address = 192.0.2.1:9425\n", 1, r"not a loopback address"),
        ("metrics without port", "metrics_address = 127.0.0.1\n", 1, r"expected IP:PORT"),
        ("reject code class", "reject_code = 450\n", 1, r"reject_code: bad value \"450\""),
        ("reject dsn class", "reject_dsn = 4.7.1\n", 1, r"reject_dsn: bad value \"4.7.1\""),
        ("unknown variable", "notls_text = no TLS at $host\n", 1, r"notls_text: unknown variable"),
        ("control byte", "weak_tls_text = a\x01b\n", 1, r"weak_tls_text: byte 0x1"),
        ("no equals", "cgroup /sys/fs/cgroup\n", 1, r"expected \"name = value\""),
        ("leading continuation", "  cgroup = /x\n", 1, r"continuation line without a setting"),
        ("relative path", "senders_file = senders\n", 1, r"senders_file: bad value \"senders\": expected an absolute path"),
        ("slots range", "slots = 0\n", 1, r"slots: bad value \"0\": expected a number from 1 to 4096"),
        ("mx_check", "mx_check = dns.example\n", 1, r"mx_check: bad value"),
    ]
    for i, (name, text, line, pattern) in enumerate(bad):
        path = os.path.join(tmp, "bad%d.conf" % i)
        with open(path, "w") as f:
            f.write(text)
        res = run([args.tlsguardd, "-c", path, "--print-config"])
        lines = [x for x in res.stderr.splitlines() if x.strip()]
        want = r"^tlsguardd: fatal: %s:%d: .*%s" % (re.escape(path), line, pattern)
        if res.returncode != 1 or len(lines) != 1 or not re.search(want, lines[0]):
            problems.append("%s: exit %d, stderr %r (want /%s/)" % (name, res.returncode, res.stderr, want))
    missing = os.path.join(tmp, "missing.conf")
    res = run([args.tlsguardd, "-c", missing, "--print-config"])
    if res.returncode != 1 or "%s: No such file or directory" % missing not in res.stderr:
        problems.append("missing file: exit %d, %r" % (res.returncode, res.stderr))
    good = os.path.join(tmp, "good.conf")
    with open(good, "w") as f:
        f.write("# a comment\ncgroup = /sys/fs/cgroup/a\nsenders_file = /etc/s\n"
                "exempt = SRS0=,\n    lists@corp.test\n\t@lists.corp.test\n"
                "slots = 10\nslots = 20\nnotls_text = TLS is required, but was not offered by host\n")
    res = run([args.tlsguardd, "-c", good, "--slots", "30", "--print-config=changed"])
    want = ["cgroup = /sys/fs/cgroup/a", "senders_file = /etc/s",
            "exempt = SRS0=, lists@corp.test @lists.corp.test", "slots = 30"]
    if res.returncode != 0 or res.stdout.splitlines() != want:
        problems.append("good file: exit %d, stdout %r, want %r (stderr %r)" % (
            res.returncode, res.stdout, want, res.stderr))
    res = run([args.tlsguardd, "-c", good, "--print-config"])
    if res.returncode != 0 or "smtp_ports = 25\n" not in res.stdout or "syslog_facility = mail\n" not in res.stdout:
        problems.append("--print-config lacks the defaults: %r" % res.stdout)
    res = run([args.tlsguardd, "-c", good, "--port", "70000", "--print-config"])
    if res.returncode != 1 or not re.search(r"^tlsguardd: fatal: --port: bad value \"70000\"", res.stderr):
        problems.append("flag error not named by the flag: %r" % res.stderr)
    r.report("config_errors", problems)


# ------------------------------------------------------------------ the running daemon

class Env:
    def __init__(self, args, tmp, cgroup, pf, mx):
        self.args, self.tmp, self.cgroup, self.pf, self.mx = args, tmp, cgroup, pf, mx
        self.sock = os.path.join(tmp, "ctl.sock")
        self.senders = os.path.join(tmp, "senders")
        self.conf = os.path.join(tmp, "tlsguard.conf")
        self.pin_dir = pin_dir("admin")
        self.proc = None
        self.ready_at_attach = None  # bpftool's view when READY=1 arrived

    def ctl(self, *argv):
        return run([self.args.tlsguardctl, "--socket", self.sock, *argv])

    def deliver(self, sender, rcpt):
        """Send one mail; wait for its final status; return (status, text, marker)."""
        mail = self.pf.send(sender, [rcpt], subject="admin")
        out = self.pf.wait_final([mail], TIMEOUT)[mail.marker]
        st = out.statuses.get(rcpt.lower())
        return (st.status if st else "none", st.text if st else "", mail.marker)

    def mx_senders(self):
        """Every envelope sender the MX was given (lower case)."""
        return [t.sender.lower() for t in self.mx.transactions()]


def start_daemon(env, notify, syslog_path):
    with open(env.senders, "w", encoding="utf-8") as f:
        f.write(SENDERS)
    os.chmod(env.senders, 0o640)
    with open(env.conf, "w") as f:
        f.write("# tlsguard admin test\ncgroup = %s\nsenders_file = %s\ncontrol_socket = %s\n"
                "smtp_ports = 25\nexempt = SRS0=,\n    lists@corp.test\nsyslog = yes\n"
                "syslog_socket = %s\npostfix_config = %s\npin_dir = %s\n" % (
                    env.cgroup.path, env.senders, env.sock, syslog_path, env.pf.conf, env.pin_dir))
    environ = dict(os.environ, NOTIFY_SOCKET=notify.path)
    env.log = open(os.path.join(env.tmp, "tlsguardd.log"), "ab")
    env.proc = subprocess.Popen([env.args.tlsguardd, "-c", env.conf], stdin=subprocess.DEVNULL,
                                stdout=env.log, stderr=env.log, env=environ, start_new_session=True)
    if not notify.wait_for(r"READY=1", TIMEOUT):
        raise RuntimeError("no READY=1 from tlsguardd (exit %r)" % env.proc.poll())


def ready(env, r):
    problems = []
    if not env.ready_at_attach or "sock_ops" not in env.ready_at_attach:
        problems.append("READY=1 came before sock_ops was attached: bpftool said %r" % env.ready_at_attach)
    res = env.ctl("status")
    if res.returncode != 0:
        problems.append("status after READY=1: %r" % res.stderr)
    r.report("ready", problems)


def privileges(env, r):
    problems = []
    with open("/proc/%d/status" % env.proc.pid) as f:
        status = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
    for key in ("CapEff", "CapPrm", "CapBnd"):
        got = int(status[key].strip(), 16)
        if got != CAPS_KEPT:
            problems.append("%s is %#x, want %#x" % (key, got, CAPS_KEPT))
    if int(status["CapInh"].strip(), 16) != 0:
        problems.append("CapInh is %s" % status["CapInh"].strip())
    if status.get("NoNewPrivs", "").strip() != "1":
        problems.append("NoNewPrivs is %r" % status.get("NoNewPrivs"))
    mode = stat.S_IMODE(os.stat(env.sock).st_mode)
    if mode != 0o600:
        problems.append("control socket mode %o" % mode)
    nobody = pwd.getpwnam("nobody")

    def as_nobody():
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)
    res = subprocess.run([env.args.tlsguardctl, "--socket", env.sock, "sender", "add", "x@corp.test"],
                         capture_output=True, text=True, timeout=30, preexec_fn=as_nobody)
    if res.returncode == 0 or "x@corp.test" in open(env.senders).read():
        problems.append("user nobody changed the policy: %r" % res.stdout)
    r.report("privileges", problems)


def live_add_remove(env, r):
    problems = []
    sender, rcpt = "alice@example.org", "u1@plain.test"
    st, text, marker = env.deliver(sender, rcpt)
    if st != "sent":
        problems.append("before add: %s (%s)" % (st, text))
    res = env.ctl("sender", "add", sender)
    if res.returncode != 0 or "added" not in res.stdout:
        problems.append("sender add: exit %d %r %r" % (res.returncode, res.stdout, res.stderr))
    if "%s\n" % sender not in open(env.senders).read():
        problems.append("the senders file lacks %s after add" % sender)
    res = env.ctl("sender", "check", "Alice+tag@EXAMPLE.org")
    if res.returncode != 0 or "guaranteed (by its address entry)" not in res.stdout:
        problems.append("sender check after add: exit %d %r" % (res.returncode, res.stdout))
    seen = len(env.mx_senders())
    st, text, marker = env.deliver(sender, rcpt)
    if st != "bounced" or TLS_TEXT not in text:
        problems.append("after add: %s (%s), want bounced with %r" % (st, text, TLS_TEXT))
    if sender in env.mx_senders()[seen:]:
        problems.append("the held sender's MAIL FROM reached the MX")
    res = env.ctl("sender", "remove", "ALICE@example.org")
    if res.returncode != 0 or "removed" not in res.stdout:
        problems.append("sender remove: exit %d %r %r" % (res.returncode, res.stdout, res.stderr))
    if sender in open(env.senders).read():
        problems.append("the senders file still has %s" % sender)
    res = env.ctl("sender", "check", sender)
    if res.returncode != 3 or "not guaranteed" not in res.stdout:
        problems.append("sender check after remove: exit %d %r" % (res.returncode, res.stdout))
    st, text, marker = env.deliver(sender, rcpt)
    if st != "sent":
        problems.append("after remove: %s (%s)" % (st, text))
    res = env.ctl("sender", "remove", sender)
    if res.returncode != 1 or "is not in" not in res.stderr:
        problems.append("removing an absent sender: exit %d %r" % (res.returncode, res.stderr))
    res = env.ctl("sender", "add", "bad address")
    if res.returncode == 0:
        problems.append("sender add accepted \"bad address\"")
    r.report("live_add_remove", problems)


def sighup(env, r, syslog):
    problems = []
    with open(env.senders, "a") as f:
        f.write("bob@example.org  # added by hand\n")
    res = env.ctl("sender", "list")
    if "changed since" not in res.stderr:
        problems.append("sender list did not warn of the edit: %r" % res.stderr)
    n_before = len(syslog.messages)
    os.kill(env.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and not any("reloaded" in m for m in syslog.messages[n_before:]):
        time.sleep(0.1)
    st, text, _ = env.deliver("bob@example.org", "u2@plain.test")
    if st != "bounced" or TLS_TEXT not in text:
        problems.append("bob after SIGHUP: %s (%s)" % (st, text))
    res = env.ctl("sender", "list")
    if res.returncode != 0 or res.stdout.split() != [
            x for x in SENDERS.splitlines() if x and x[0] != "#"] + ["bob@example.org"] or res.stderr:
        problems.append("sender list: %r %r" % (res.stdout, res.stderr))
    good = open(env.senders).read()
    with open(env.senders, "a") as f:
        f.write("\nnot-an-address\n")
    bad_line = good.count("\n") + 2
    res = env.ctl("reload")
    want = "%s:%d: malformed sender" % (env.senders, bad_line)
    if res.returncode != 1 or want not in res.stderr:
        problems.append("reload of a broken file: exit %d %r (want %r)" % (res.returncode, res.stderr, want))
    res = env.ctl("sender", "check", "bob@example.org")
    if res.returncode != 0:
        problems.append("bob not guaranteed after a failed reload: %r" % res.stdout)
    with open(env.senders, "w") as f:
        f.write(good)
    res = env.ctl("reload")
    if res.returncode != 0 or "reloaded" not in res.stdout:
        problems.append("reload: %r %r" % (res.stdout, res.stderr))
    problems += reload_changes(env, syslog, good)
    r.report("sighup", problems)


def reload_changes(env, syslog, good):
    """A few senders changed by hand (the list in force is changed in place), then
    5000 more (it is freed and the file read again): after each reload the kernel
    map holds exactly the file's senders (tlsguardctl sender check reads the map,
    and warns when the agent's list disagrees), mail says the same, and the file
    as it was comes back."""
    problems = []
    n_before = len(syslog.messages)

    def reload(what, n):
        res = env.ctl("reload")
        if res.returncode != 0 or "reloaded %s: %d senders" % (env.senders, n) not in res.stdout:
            problems.append("reload (%s): exit %d %r %r, want %d senders" % (
                what, res.returncode, res.stdout, res.stderr, n))

    def checks(what, wants):
        for addr, guaranteed in wants:
            res = env.ctl("sender", "check", addr)
            if res.returncode != (0 if guaranteed else 3):
                problems.append("%s: sender check %s: exit %d %r" % (what, addr, res.returncode, res.stdout))

    def mail(what, sender, rcpt, want):
        st, text, _ = env.deliver(sender, rcpt)
        if st != want or (want == "bounced" and TLS_TEXT not in text):
            problems.append("%s: %s: %s (%s), want %s" % (what, sender, st, text, want))

    keys = len([x for x in good.splitlines() if x.strip() and x[0] != "#"]) + 2  # two IDN entries: 2 keys each
    with open(env.senders, "w") as f:
        f.write(good.replace("carol@example.org\n", "") + "dave@example.org\n")
    reload("carol out, dave in", keys)
    checks("carol out, dave in", [("carol@example.org", False), ("dave@example.org", True),
                                  ("bob@example.org", True), ("x@corp.test", True)])
    mail("carol out", "carol@example.org", "u9@plain.test", "sent")
    mail("dave in", "dave@example.org", "u9@plain.test", "bounced")
    filler = "".join("f%d@filler.example\n" % i for i in range(5000))
    with open(env.senders, "a") as f:
        f.write(filler)
    reload("5000 more", keys + 5000)
    checks("5000 more", [("f0@filler.example", True), ("f4999@filler.example", True),
                         ("f5000@filler.example", False), ("dave@example.org", True),
                         ("carol@example.org", False), ("bob@example.org", True)])
    mail("5000 more", "bob@example.org", "u9@plain.test", "bounced")
    with open(env.senders, "w") as f:
        f.write(good)
    reload("back", keys)
    checks("back", [("carol@example.org", True), ("dave@example.org", False),
                    ("f0@filler.example", False), ("bob@example.org", True)])
    with syslog.lock:
        odd = [m for m in syslog.messages[n_before:] if re.search(r"disagree|keeping the senders|cannot", m)]
    if odd:
        problems.append("warnings while reloading: %r" % odd[:3])
    return problems


def concurrent_changes(env, r):
    problems = []
    before = open(env.senders).read()
    names = ["c%02d@example.net" % i for i in range(24)]
    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        adds = list(pool.map(lambda a: env.ctl("sender", "add", a), names))
    for a, res in zip(names, adds):
        if res.returncode != 0:
            problems.append("add %s: %r" % (a, res.stderr))
    lines = open(env.senders).read().splitlines()
    for a in names:
        if lines.count(a) != 1:
            problems.append("%s is in the file %d times" % (a, lines.count(a)))
        res = env.ctl("sender", "check", a)
        if res.returncode != 0:
            problems.append("%s not guaranteed in the kernel: %r" % (a, res.stdout))
    if not open(env.senders).read().startswith(before):
        problems.append("the lines before the adds changed")
    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        removes = list(pool.map(lambda a: env.ctl("sender", "remove", a), names))
    for a, res in zip(names, removes):
        if res.returncode != 0:
            problems.append("remove %s: %r" % (a, res.stderr))
    after = open(env.senders).read()
    if after != before:
        problems.append("after add and remove the file is %r, was %r" % (after, before))
    left = [n for n in os.listdir(env.tmp) if n.startswith("senders.")]
    if left:
        problems.append("temporary files left: %s" % left)
    mode = stat.S_IMODE(os.stat(env.senders).st_mode)
    if mode != 0o640:
        problems.append("the senders file's mode became %o" % mode)
    r.report("concurrent_changes", problems)


def exempt(env, r):
    problems = []
    cases = [("SRS0=HHH=TT=far.test=joe@corp.test", "sent"), ("lists@corp.test", "sent"),
             ("joe@corp.test", "bounced"), ("srs1=a=far.test==hhh=tt=b.test=x@corp.test", "bounced")]
    # SRS1= is not in this exempt list: its sender is guaranteed by @corp.test.
    mails = [(env.pf.send(s, ["u3@plain.test"], subject="exempt"), want) for s, want in cases]
    outs = env.pf.wait_final([m for m, _ in mails], TIMEOUT)
    for m, want in mails:
        st = outs[m.marker].statuses.get("u3@plain.test")
        got = st.status if st else "none"
        if got != want or (want == "bounced" and TLS_TEXT not in st.text):
            problems.append("%s: %s (%s), want %s" % (m.sender, got, st.text if st else "", want))
    res = env.ctl("sender", "check", "SRS0=HHH=TT=far.test=joe@corp.test")
    if res.returncode != 3 or "exempt (by the exempt list's SRS entry)" not in res.stdout:
        problems.append("sender check of an SRS sender: exit %d %r" % (res.returncode, res.stdout))
    r.report("exempt", problems)


def config_ctl(env, r):
    problems = []
    res = env.ctl("config", "-n")
    want = ["cgroup = %s" % env.cgroup.path, "senders_file = %s" % env.senders,
            "exempt = SRS0=, lists@corp.test", "postfix_config = %s" % env.pf.conf,
            "pin_dir = %s" % env.pin_dir, "control_socket = %s" % env.sock, "syslog = yes",
            "syslog_socket = %s" % os.path.join(env.tmp, "syslog.sock")]
    if res.returncode != 0 or res.stdout.splitlines() != want:
        problems.append("config -n: %r, want %r" % (res.stdout.splitlines(), want))
    res = env.ctl("config")
    for line in ("slots = 256", "reject_code = 550", "notls_text = %s" % TLS_TEXT, "pin_dir = %s" % env.pin_dir):
        if line not in res.stdout.splitlines():
            problems.append("config lacks %r" % line)
    if any(x.startswith("pin =") for x in res.stdout.splitlines()):
        problems.append("config shows a pin setting: pinning is always on")
    r.report("config_ctl", problems)


def syslog_lines(env, r, syslog):
    problems = []
    pid = env.proc.pid
    held = syslog.wait_for(
        r"^<22>\w{3} [ \d]\d \d\d:\d\d:\d\d tlsguardd\[%d\]: %s\[%s\]:25: from=<joe@corp\.test>: held: "
        r"550 5\.7\.10 %s$" % (pid, re.escape(MX_ADDR), re.escape(MX_ADDR), re.escape(TLS_TEXT)), 5)
    if not held:
        problems.append("no held line for joe@corp.test; got %r" % syslog.messages[-8:])
    if not syslog.wait_for(r"^<22>.* tlsguardd\[%d\]: sender alice@example\.org: guaranteed by "
                           r"tlsguardctl" % pid, 1):
        problems.append("no line for the live add")
    if not syslog.wait_for(r"^<20>.* tlsguardd\[%d\]: warning: .*malformed sender .*keeping the "
                           r"senders in force" % pid, 1):
        problems.append("no warning line (priority warning) for the failed reload")
    r.report("syslog", problems)


def log_join(env, r, syslog):
    """tlsguardd's line for each recipient of a held message joins Postfix's
    status=bounced line by the recipient, the relay and the smtp process."""
    problems = []
    rcpts = ["j1@plain.test", "j2@plain.test"]
    mail = env.pf.send("joe@corp.test", rcpts, subject="join")
    out = env.pf.wait_final([mail], TIMEOUT)[mail.marker]
    line_re = re.compile(r"^<22>.* tlsguardd\[%d\]: (\S+): to=<([^>]*)>, relay=(\S+), mta=(\S+), "
                         r"from=<([^>]*)>, dsn=(\S+), status=(\w+) \((.*)\)$" % env.proc.pid)
    for rcpt in rcpts:
        st = out.statuses.get(rcpt)
        pid = re.search(r"/smtp\[(\d+)\]: ", st.line) if st else None
        if not st or st.status != "bounced" or not pid:
            problems.append("%s: Postfix says %r" % (rcpt, st.line if st else None))
            continue
        want = (st.relay, rcpt, st.relay, "smtp[%s]" % pid.group(1), "joe@corp.test", "5.7.10", "held",
                "550 5.7.10 %s" % TLS_TEXT)
        if not syslog.wait_for(r"^<22>.* tlsguardd\[%d\]: .*to=<%s>" % (env.proc.pid, re.escape(rcpt)), 5):
            problems.append("no tlsguardd line with to=<%s>; got %r" % (rcpt, syslog.messages[-6:]))
            continue
        with syslog.lock:
            messages = list(syslog.messages)
        got = [m.groups() for m in map(line_re.match, messages) if m and m.group(2) == rcpt]
        if got != [want]:
            problems.append("%s: tlsguardd's lines %r, want one %r (Postfix: %s)" % (rcpt, got, want, st.line))
    r.report("log_join", problems)


def restart_daemon(env, notify, extra):
    """SIGTERM the running daemon (it must exit 0), start it again with extra settings."""
    env.proc.send_signal(signal.SIGTERM)
    rc = env.proc.wait(30)
    with notify.lock:
        notify.messages.clear()
    with open(env.conf, "a") as f:
        f.write(extra)
    env.proc = subprocess.Popen([env.args.tlsguardd, "-c", env.conf], stdin=subprocess.DEVNULL,
                                stdout=env.log, stderr=env.log,
                                env=dict(os.environ, NOTIFY_SOCKET=notify.path), start_new_session=True)
    if not notify.wait_for(r"READY=1", TIMEOUT):
        raise RuntimeError("no READY=1 from the restarted tlsguardd (exit %r)" % env.proc.poll())
    return rc


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reply_settings(env, r, notify):
    problems = []
    text = "TLS is required; none was negotiated with this host"
    port = free_port()
    audit = os.path.join(env.tmp, "audit.jsonl")
    env.metrics_port = port
    rc = restart_daemon(env, notify, "reject_code = 554\nnotls_text = %s\nmetrics_address = 127.0.0.1:%d\n"
                        "audit_file = %s\n" % (text, port, audit))
    if rc != 0:
        problems.append("first daemon exited %r" % rc)
    st, got, _ = env.deliver("joe@corp.test", "u5@plain.test")
    if st != "bounced" or "554 5.7.10 %s" % text not in got:
        problems.append("joe@corp.test: %s (%s), want bounced with 554 5.7.10 %s" % (st, got, text))
    page = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10).read().decode()
    m = re.search(r'^tlsguard_replies_total\{kind="bounced_550"\} (\d+)$', page, re.M)
    if not m or int(m.group(1)) != 1:
        problems.append("bounced_550 is %s after one 554 bounce, want 1" % (m.group(1) if m else "absent"))
    verdicts = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(audit) as f:
                verdicts = [json.loads(line).get("verdict") for line in f if "joe@corp.test" in line]
        except OSError:
            verdicts = []
        if verdicts:
            break
        time.sleep(0.2)
    if verdicts != ["held-no-tls"]:
        problems.append("audit verdicts for joe@corp.test: %r, want ['held-no-tls']" % verdicts)
    r.report("reply_settings", problems)


def postconf(env, *settings):
    res = run(["/usr/sbin/postconf", "-c", env.pf.conf, "-e", *settings])
    if res.returncode != 0:
        raise RuntimeError("postconf -e %s: %s" % (" ".join(settings), res.stderr))
    env.pf.postfix("reload")


def address_forms(env, r, notify):
    """Postfix's recipient_delimiter "+-", BATV-signed senders, and IDN domains in both forms:
    each is the guaranteed sender it names (bounced, nothing at the MX); others are delivered."""
    problems = []
    postconf(env, "recipient_delimiter = +-")
    restart_daemon(env, notify, "")  # the delimiters are read at start
    cases = [("prvs=0123456789=carol@example.org", "bounced"),
             ("btv1==0a1b2c3d4e5==carol@example.org", "bounced"),
             ("carol-lists@example.org", "bounced"),
             ("x@b\u00fccher.test", "bounced"),            # file: the A-label
             ("y@xn--caf-dma.test", "bounced"),             # file: the U-label
             ("z@B\u00dcCHER.test", "bounced"),            # upper case: the agent maps it
             ("w@cafe\u0301.test", "bounced"),             # NFD: the agent maps it
             ("dave@example.org", "sent"),
             ("prvs=0123456789=dave@example.org", "sent"),
             ("dave-carol@example.org", "sent")]
    seen = len(env.mx_senders())
    mails = [(env.pf.send(snd, ["u7@plain.test"], subject="forms"), want) for snd, want in cases]
    outs = env.pf.wait_final([m for m, _ in mails], TIMEOUT)
    at_mx = env.mx_senders()[seen:]
    for m, want in mails:
        st = outs[m.marker].statuses.get("u7@plain.test")
        got = st.status if st else "none"
        # (reply_settings made the reply 554 with a text of its own)
        if got != want or (want == "bounced" and "5.7.10" not in st.text):
            problems.append("%s: %s (%s), want %s" % (m.sender, got, st.text if st else "", want))
        if want == "bounced" and m.sender.lower() in at_mx:
            problems.append("%s: its MAIL FROM reached the MX" % m.sender)
        if want == "sent" and m.sender.lower() not in at_mx:
            problems.append("%s: not at the MX" % m.sender)
    res = env.ctl("sender", "check", "z@B\u00dcCHER.test")
    if res.returncode != 0 or "guaranteed" not in res.stdout or "not guaranteed" in res.stdout:
        problems.append("sender check of an upper-case U-label: exit %d %r" % (res.returncode, res.stdout))
    postconf(env, "recipient_delimiter = +")
    r.report("address_forms", problems)


def routes(env, r, syslog):
    """A relayhost on port 587: Postfix delivers a guaranteed sender's mail there unguarded (the
    relay's record is the witness), and tlsguardd says so: a warning line naming the setting,
    tlsguardctl status, the metric; with unguarded_routes = refuse it does not start."""
    problems = []
    postconf(env, "relayhost = [%s]:587" % RELAY_ADDR, "default_transport = smtp")
    try:
        st, text, _ = env.deliver("joe@corp.test", "u8@far.test")
        if st != "sent" or "joe@corp.test" not in [t.sender.lower() for t in env.relay.transactions()]:
            problems.append("the relayhost route was not taken: %s (%s)" % (st, text))
        env.proc.send_signal(signal.SIGHUP)
        want = (r"^<20>.* tlsguardd\[%d\]: warning: postfix %s: relayhost = \[%s\]:587: mail on this route "
                r"goes to port 587, which tlsguard does not guard \(smtp_ports\)" % (
                    env.proc.pid, re.escape(env.pf.conf), re.escape(RELAY_ADDR)))
        if not syslog.wait_for(want, 10):
            problems.append("no warning line for the relayhost after SIGHUP: %r" % syslog.messages[-3:])
        res = env.ctl("status")
        if not re.search(r"MTA routes: +\d+, 1 not guarded", res.stdout) or not re.search(
                r"relayhost = \[%s\]:587: port 587 \(STARTTLS\): NOT GUARDED" % re.escape(RELAY_ADDR),
                res.stdout):
            problems.append("status does not show the route: %r" % res.stdout[-400:])
        page = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % env.metrics_port,
                                      timeout=10).read().decode()
        if not re.search(r"^tlsguard_unguarded_routes 1$", page, re.M):
            problems.append("metric: %r" % re.findall(r"^tlsguard_unguarded_routes.*$", page, re.M))
        refuse = os.path.join(env.tmp, "refuse.conf")
        with open(env.conf) as f, open(refuse, "w") as g:
            g.write(f.read() + "unguarded_routes = refuse\n")
        res = subprocess.run([env.args.tlsguardd, "-c", refuse], capture_output=True, text=True, timeout=60)
        if res.returncode == 0 or not re.search(
                r"fatal: 1 route\(s\) of the MTA go to ports tlsguard does not guard, and "
                r"unguarded_routes = refuse", res.stderr + res.stdout):
            problems.append("with unguarded_routes = refuse: exit %d, %r" % (
                res.returncode, (res.stderr + res.stdout)[-300:]))
    finally:
        postconf(env, "relayhost =", "default_transport = error:5.1.2 no route for this domain")
    r.report("routes", problems)


def parse_args(argv):
    ap = harness.arg_parser(__doc__, verbose=False)
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    r = harness.Results(shown=6, more=False)
    with harness.Run(r, keep=args.keep, root="admin_run.py must run as root (cgroups, port 25, Postfix)") as suite:
        env = None

        def stop_daemon():
            if env is not None and env.proc is not None:
                env.proc.send_signal(signal.SIGTERM)
                try:
                    rc = env.proc.wait(30)
                except subprocess.TimeoutExpired:
                    env.proc.kill()
                    rc = env.proc.wait()
                # SIGTERM leaves the kernel enforcing; detach removes it
                left = detach_problems(args.tlsguardctl, env.sock, env.pin_dir, env.cgroup.path)
                r.report("tlsguardd_shutdown", ([] if rc == 0 else ["exit %r" % rc]) + left)
        try:
            tmp = suite.tempdir("tlsguard-admin-", 0o755)
            config_errors(args, tmp, r)
            check_postfix_installed()
            cgroup = suite.cgroup("tlsguard-e2e-admin")
            mx = suite.started(TestMX(MX_ADDR, 25, name="plain", smtputf8=True))
            relay = suite.started(TestMX(RELAY_ADDR, 587, name="relay587"))
            pf = suite.postfix(PostfixInstance(os.path.join(tmp, "postfix"), cgroup, TRANSPORTS, MAILBOX_DOMAINS))
            env = Env(args, tmp, cgroup, pf, mx)
            env.relay = relay

            def on_notify(text):
                if "READY=1" in text and env.ready_at_attach is None:
                    env.ready_at_attach = run(["bpftool", "cgroup", "show", cgroup.path]).stdout
            notify = DgramSink(os.path.join(tmp, "notify.sock"), on_notify)
            suite.push(notify.close)
            syslog = DgramSink(os.path.join(tmp, "syslog.sock"))
            suite.push(syslog.close)
            suite.push(stop_daemon)
            start_daemon(env, notify, syslog.path)
            for case in (ready, privileges, live_add_remove, concurrent_changes, exempt, config_ctl):
                case(env, r)
            sighup(env, r, syslog)
            syslog_lines(env, r, syslog)
            log_join(env, r, syslog)
            reply_settings(env, r, notify)
            address_forms(env, r, notify)
            routes(env, r, syslog)
        except (PostfixMissing, PostfixError, RuntimeError, OSError, subprocess.SubprocessError) as e:
            r.report("setup", ["%s: %s" % (type(e).__name__, e)])
    return suite.finish()


if __name__ == "__main__":
    sys.exit(main())
