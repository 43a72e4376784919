#!/usr/bin/python3
"""tls_library_copies: tlsguardd's uprobes on its own copies of the TLS libraries.

Usage (as root; builds nothing):
    /usr/bin/python3 tests/e2e/suites/tls_copies_run.py [--tlsguardd build/tlsguardd]
        [--tlsguardctl build/tlsguardctl] [--keep] [-v]

A uprobe is a breakpoint in one file: with ``tls_library_copies = DIR``
tlsguardd copies the system's TLS libraries into DIR and probes the copies,
so that only the MTA, started in its own mount namespace with the copies
bound over the system's files, traps; every other process on the host maps
the system's files and pays nothing.

Setup: a temp dir (mode 0755: Postfix traverses it) holding DIR
(``copies/``, made by tlsguardd), a cgroup v2 directory (the guarded one),
a TLS 1.3 echo server (uprobe_runs.py's ``TLSEcho``) on 127.0.0.190:4433, a
recording test MX offering STARTTLS with TLS 1.0 only (mx.py) on
127.0.0.191:25, BPF run counts on (``BPF_ENABLE_STATS``, for as long as
the suite runs), and ``tlsguardd --cgroup DIR --senders FILE --port 25
--socket SOCK --pin-dir PINS --tls-library-copies DIR`` (daemon.py's
``Daemon``).  Guaranteed senders: ``@guarded.test``.  The system's libssl is
the one this Python maps (/proc/self/maps); the pairs to bind are the
"copied SYSTEM to COPY" lines of tlsguardd's log, and that libssl must be
one of them.  Only the uprobe programs (``tg_ssl_*``, ``tg_gnutls_*``) that
a daemon of this suite holds are counted (other tlsguardd instances on the
host have programs of the same names).

Cases, in order:
  1. outside_costs_nothing -- a client (uprobe_runs.py's ``tls_client``:
     N = 2000 writes of 32 bytes over one TLS session, each answered) in
     another cgroup the suite made, not guarded, without any bind: the
     uprobe programs of tlsguardd with copies run 0 times.  Control, in the
     same run of the client: a second tlsguardd without copies (the system's
     files probed, the default) on a third, empty cgroup; its programs
     tg_ssl_write/_ex must run >= N times (the measure can fail).  The
     control daemon is then stopped and detached.
  2. inside_read -- the same client in the guarded cgroup, in a private
     mount namespace with the copy of libssl bound over the system's: it
     maps the copy (the inode it sees), and tg_ssl_write/_ex of tlsguardd
     with copies run >= N times.
  3. weak_first_session -- a private Postfix (postfix_env.py's
     ``NsPostfix``) started only now, after tlsguardd: master in the
     guarded cgroup, in a private mount namespace with every copy bound
     over its system file.  A guaranteed sender's mail to the TLS 1.0 MX,
     injected first, then a non-guaranteed sender's: the first is bounced
     as tls_run's weak_tls10 is (status=bounced dsn=5.7.10 "TLS 1.2 or
     higher is required, but host negotiated TLSv1.0 (in reply to MAIL FROM
     command)", one DSN "Undelivered Mail Returned to Sender", nothing of it
     at the MX, a TLSv1 session with EHLO inside TLS and nothing more); the
     second is delivered over TLSv1 (the uprobes read its MAIL FROM inside
     TLS: an smtp process that no probe read fails closed below TLS 1.2).
     The copies were probed before Postfix started: no race with a new
     smtp process.  After one more rescan period (Postfix's smtp and
     tlsmgr, mapping the copy, still in the cgroup) tlsguardd must have
     warned of no process "not one of the copies" and probed no other file.
  4. copy_kept -- tlsguardd stopped (SIGTERM) and started again with the
     same DIR and pins: each copy keeps its inode, the new start logs no
     "copied" and probes the copies again, and the Postfix started in case
     3 (its binds are of those inodes) is still guarded: a guaranteed
     sender bounced, another delivered over TLSv1, as in case 3.
  5. bad_dir -- tlsguardd with ``--tls-library-copies`` of a directory of
     mode 0775 on a fourth, empty cgroup: exits non-zero, its whole output
     one line naming tls_library_copies and the directory; nothing copied
     there, its pin dir not made, no tg_ program on that cgroup.
  6. unbound_process_warned -- a Python that imported ssl, in the guarded
     cgroup without any bind (it maps the system's libssl): within two
     rescans (TG_RESCAN_SECONDS = 5 in agent/tlsguardd.c) tlsguardd warns
     "process PID of the guarded cgroup maps FILE, not one of the copies in
     DIR", and once only: after another rescan the warning is still there
     once.  (The agent then tries to probe the system's libssl, which fails
     once it has given up CAP_SYS_ADMIN; either way this case is last.)

Output: ``PASS name`` / ``FAIL name: why`` per case (the run counts as
indented lines), then ``N passed, M failed``; exit status 0 only if none
failed.  Everything created is removed in a ``finally``, also on Ctrl-C or
SIGTERM: the clients and the case 6 process (by pid; a mount namespace ends
with its last process), Postfix, tlsguardd (SIGTERM by pid, then
``tlsguardctl --pin-dir PINS detach``), the MX and the echo server, the
cgroups, and the temp dir unless --keep.
"""

import os
import re
import secrets
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "fixtures"))
sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree

import harness  # noqa: E402
from daemon import (GUARDED_SENDERS, MAILBOX_DOMAINS, WEAK_TEXT, Daemon, Senders, attached,  # noqa: E402
                    pin_dir)
from mx import TestMX, TLSOptions  # noqa: E402
from postfix_env import NsPostfix, PostfixError, PostfixMissing  # noqa: E402
from uprobe_runs import (WRITE_PROGS, BpfStats, TLSEcho, mapped_libssl, runs_delta, tls_client,  # noqa: E402
                         uprobe_runs)
from wants import Ctx, Want, check_want, describe_conns, mail_verbs  # noqa: E402

ECHO = ("127.0.0.190", 4433)
MX10 = "127.0.0.191"
DOMAIN = "tls10.test"
N = 2000  # client writes
RESCAN = 5  # TG_RESCAN_SECONDS in agent/tlsguardd.c
TIMEOUT_STATUS = 75.0
TIMEOUT_BOUNCE = 20.0
TIMEOUT_WARN = 2 * RESCAN + 3
TIMEOUT_BAD_DIR = 30

COPIED_RE = re.compile(r"copied (\S+) to (\S+)$")
NOT_A_COPY = "not one of the copies in"


def copies_of(daemon):
    """[(system file, copy)] from tlsguardd's "copied SYSTEM to COPY" lines."""
    return [m.groups() for m in map(COPIED_RE.search, daemon.log_text().splitlines()) if m]


def file_id(path):
    st = os.stat(path)
    return st.st_dev, st.st_ino


def write_runs(delta):
    return sum(delta.get(p, 0) for p in WRITE_PROGS)


def client_problems(run, who):
    if run.rc != 0 or run.file is None:
        return ["%s client: exit %s, %s" % (who, run.rc, run.err[-300:] or "no DONE line")]
    return []


# ------------------------------------------------------------------ cases 1, 2

def case_outside(s, report):
    """The copies daemon's programs do not run for a process outside; the control's do."""
    p, info = [], []
    control = s.extra_daemon("control", s.suite.cgroup("tlsguard-e2e-copies-ctl"))
    try:
        ours0, ctl0 = uprobe_runs(s.daemon.proc.pid), uprobe_runs(control.proc.pid)
        run = tls_client(*ECHO, N, cgroup=s.other)
        ours, ctl = runs_delta(ours0, uprobe_runs(s.daemon.proc.pid)), runs_delta(
            ctl0, uprobe_runs(control.proc.pid))
    finally:
        why, control.stopped = control.stop(), True
    p += client_problems(run, "outside")
    if run.file and run.file != s.system_file:
        p.append("the outside client mapped %s %s, not the system's libssl (harness problem)" % (run.lib, run.file))
    if ours:
        p.append("tlsguardd with copies: its uprobe programs ran for a process outside: %s" % ours)
    if write_runs(ctl) < N:
        p.append("control (no copies): tg_ssl_write/_ex ran %d times for %d writes, expected >= %d (%s)" % (
            write_runs(ctl), N, N, ctl))
    if why:
        p.append("control tlsguardd: %s" % why)
    info.append("%d writes outside: with copies %s; control without copies %s" % (N, ours or "no run", ctl))
    report("outside_costs_nothing", p, info)


def case_inside(s, report):
    p = []
    before = uprobe_runs(s.daemon.proc.pid)
    run = tls_client(*ECHO, N, cgroup=s.cgroup, binds=[(s.ssl_copy, s.system_ssl)])
    delta = runs_delta(before, uprobe_runs(s.daemon.proc.pid))
    p += client_problems(run, "inside")
    if run.file and run.file != file_id(s.ssl_copy):
        p.append("the inside client mapped %s %s, not the copy %s %s (harness problem)" % (
            run.lib, run.file, s.ssl_copy, file_id(s.ssl_copy)))
    if write_runs(delta) < N:
        p.append("tg_ssl_write/_ex ran %d times for %d writes on the copy, expected >= %d (%s)" % (
            write_runs(delta), N, N, delta))
    report("inside_read", p, ["%d writes inside, on the copy: %s" % (N, delta)])


# ------------------------------------------------------------------ cases 3, 4

def mail_pair(s, name):
    """A guaranteed sender's mail to the TLS 1.0 MX, then a non-guaranteed one's: their
    Wants, and how many MX sessions there were before."""
    since = len(s.mx.connections())
    wants = []
    for sender, outcome, tls, text in (("%s@guarded.test" % name, "bounced", None, WEAK_TEXT % "TLSv1.0"),
                                       ("%s@mta.test" % name, "sent", "TLSv1", None)):
        rcpt = s.ctx.rcpt("%s-%s" % (name, sender.rpartition("@")[2].split(".")[0]), DOMAIN)
        wants.append(Want(s.pf.send(sender, [rcpt], subject=name), "tls10", outcome, tls, text))
    return wants, since


def settle(s, wants, since):
    """Wait for the final statuses and the DSNs; then the problems of each Want
    (``since``: how many MX sessions there were before they were injected)."""
    mails = [w.mail for w in wants]
    s.ctx.outcomes = s.pf.wait_final(mails, TIMEOUT_STATUS)
    bounced = [(w.mail.sender, w.mail.marker) for w in wants if w.outcome == "bounced"]
    s.ctx.bounces.update(s.pf.wait_bounces(bounced, TIMEOUT_BOUNCE))
    time.sleep(0.5)  # a second DSN, late MX lines
    s.ctx.outcomes = s.pf.outcomes(mails)
    p = []
    for w in wants:
        p += check_want(s.ctx, w)
    g = wants[0].mail.sender
    cut = [c for c in s.mx.connections()[since:] if c.tls_version == "TLSv1" and "EHLO" in mail_verbs(c, tls=True)
           and mail_verbs(c, tls=True) <= {"EHLO", "RSET", "QUIT", "NOOP"}]
    if not cut:
        p.append("<%s>: no TLSv1 session at the MX with EHLO inside TLS and nothing more: %s" % (
            g, describe_conns(s.mx)[since:]))
    return p


def case_weak_first(s, report):
    p = []
    ours0 = uprobe_runs(s.daemon.proc.pid)
    s.pf = s.suite.postfix(NsPostfix(os.path.join(s.tmp, "postfix"), s.cgroup, {DOMAIN: "smtp:[%s]:25" % MX10},
                                     MAILBOX_DOMAINS, mailboxes=s.mailboxes,
                                     binds=[(copy, system) for system, copy in s.copies]))
    s.ctx = Ctx(s.pf, {"tls10": s.mx}, None, Senders(GUARDED_SENDERS), secrets.token_hex(3))
    p += settle(s, *mail_pair(s, "weak-first"))
    ours = runs_delta(ours0, uprobe_runs(s.daemon.proc.pid))
    if not ours:
        p.append("no uprobe program of tlsguardd ran while Postfix sent")
    # Postfix's smtp and tlsmgr, which map the copy, stay a while: a rescan
    # after the start (tlsguardd has dropped its privileges then) must
    # find the copy in them too, and probe nothing else.
    time.sleep(RESCAN + 1)
    log = s.daemon.log_text().splitlines()
    warned = [x for x in log if NOT_A_COPY in x]
    if warned:
        p.append("tlsguardd warned of a Postfix process: %s" % warned[0])
    others = [x for x in log if x.startswith("tlsguardd: probing ") and s.copies_dir + "/" not in x]
    if others:
        p.append("tlsguardd probed a file other than its copies: %s" % others[0])
    report("weak_first_session", p, ["uprobe runs while Postfix sent: %s" % ours])


def case_copy_kept(s, report):
    p = []
    before = {copy: file_id(copy) for _, copy in s.copies}
    why = s.daemon.sigterm()
    if why:
        p.append("stop: %s" % why)
    mark = len(s.daemon.log_text())
    s.daemon.start()
    later = s.daemon.log_text()[mark:]
    after = {copy: file_id(copy) for copy in before}
    for copy in before:
        if after[copy] != before[copy]:
            p.append("%s: (dev, inode) %s before the restart, %s after" % (copy, before[copy], after[copy]))
        if "probing %s" % copy not in later:
            p.append("the new start did not log \"probing %s\"" % copy)
    copied = [x for x in later.splitlines() if COPIED_RE.search(x)]
    if copied:
        p.append("the new start copied again: %s" % copied)
    if not p:
        p += settle(s, *mail_pair(s, "kept"))
    report("copy_kept", p)


# ------------------------------------------------------------------ cases 5, 6

def case_bad_dir(s, report):
    p = []
    bad = os.path.join(s.tmp, "bad-copies")
    os.mkdir(bad)
    os.chmod(bad, 0o775)
    cgroup = s.suite.cgroup("tlsguard-e2e-copies-bad")
    pins = pin_dir("copies-bad")
    sock = os.path.join(s.tmp, "bad.sock")
    argv = [s.args.tlsguardd, "--cgroup", cgroup.path, "--senders", s.senders, "--port", "25",
            "--socket", sock, "--pin-dir", pins, "--tls-library-copies", bad]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_BAD_DIR)
        rc, out = r.returncode, (r.stdout + r.stderr).strip()
    except subprocess.TimeoutExpired:
        rc, out = None, "(still running after %ds: killed)" % TIMEOUT_BAD_DIR
    lines = out.splitlines()
    if rc is None or rc == 0:
        p.append("tlsguardd exited %s with a group-writable DIR, expected non-zero" % rc)
    if len(lines) != 1 or "tls_library_copies" not in lines[0] or bad not in lines[0]:
        p.append("expected one line naming tls_library_copies and %s, got %r" % (bad, out[-400:]))
    if os.listdir(bad):
        p.append("files copied into the refused DIR: %s" % os.listdir(bad))
    if os.path.exists(pins):
        p.append("its pin dir %s was made: %s" % (pins, os.listdir(pins)))
        subprocess.run([s.args.tlsguardctl, "--socket", sock, "--pin-dir", pins, "detach"],
                       capture_output=True, timeout=60)
    left = [x for x in attached(cgroup.path) if x.startswith("tg_")]
    if left:
        p.append("attached to its cgroup: %s" % ", ".join(left))
    report("bad_dir", p, ["exit %s: %s" % (rc, out[-300:])])


def case_unbound(s, report):
    p = []
    script = 'echo $$ > "$1" && exec /usr/bin/python3 -c "import ssl, sys; print(1, flush=True); sys.stdin.read()"'
    proc = subprocess.Popen(["/bin/sh", "-c", script, "sh", s.cgroup.procs_file], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    mark = len(s.daemon.log_text())
    try:
        if proc.stdout.readline().strip() != "1":
            p.append("the unbound Python did not start: %s" % proc.stderr.read()[-300:])
        else:
            want = "process %d of the guarded cgroup maps " % proc.pid
            deadline = time.monotonic() + TIMEOUT_WARN
            seen = []
            while not seen and time.monotonic() < deadline:
                time.sleep(0.5)
                seen = [x for x in s.daemon.log_text()[mark:].splitlines() if NOT_A_COPY in x]
            if not seen:
                p.append("no warning %r within %ds" % (NOT_A_COPY, TIMEOUT_WARN))
            else:
                t = time.monotonic() - deadline + TIMEOUT_WARN
                if want not in seen[0] or "%s %s" % (NOT_A_COPY, s.copies_dir) not in seen[0]:
                    p.append("the warning does not name process %d and %s: %r" % (proc.pid, s.copies_dir, seen[0]))
                time.sleep(RESCAN + 1)
                again = [x for x in s.daemon.log_text()[mark:].splitlines() if NOT_A_COPY in x]
                if len(again) != 1:
                    p.append("%d warnings after another rescan, expected 1" % len(again))
                report("unbound_process_warned", p, ["after %.1fs: %s" % (t, seen[0])])
                return
    finally:
        if proc.poll() is None:
            proc.kill()  # by pid: our own child
        proc.wait()
    report("unbound_process_warned", p)


# ------------------------------------------------------------------ main

class Setup:
    """What the cases share."""

    def __init__(self, args, suite):
        self.args, self.suite = args, suite
        self.tmp = suite.tempdir("tlsguard-e2e-copies-", 0o755)
        self.cgroup = suite.cgroup("tlsguard-e2e-copies")
        self.other = suite.cgroup("tlsguard-e2e-copies-out")  # not guarded
        self.copies_dir = os.path.join(self.tmp, "copies")
        self.senders = suite.write("senders", GUARDED_SENDERS)
        self.mailboxes = ["%s@%s" % (n, d) for n in ("weak-first", "kept") for d in MAILBOX_DOMAINS]
        self.pf = self.ctx = None
        stats = BpfStats()
        suite.push(stats.close)
        self.system_ssl = mapped_libssl()
        self.system_file = file_id(self.system_ssl)
        self.mx = suite.started(TestMX(MX10, 25, name="tls10", jsonl_path=os.path.join(self.tmp, "mx.jsonl"),
                                       tls=TLSOptions(version="1.0")))
        suite.started(TLSEcho(*ECHO))
        self.daemon = suite.daemon(args, self.cgroup, GUARDED_SENDERS, "--tls-library-copies", self.copies_dir)
        self.copies = copies_of(self.daemon)
        ssl_copies = [c for sysf, c in self.copies if os.path.realpath(sysf) == os.path.realpath(self.system_ssl)]
        if not ssl_copies:
            raise RuntimeError("tlsguardd copied %s, not %s (the libssl this Python maps)%s" % (
                self.copies or "nothing", self.system_ssl, self.daemon.log_tail()))
        self.ssl_copy = ssl_copies[0]

    def extra_daemon(self, name, cgroup, *options):
        """Another tlsguardd of the suite on ``cgroup``; the caller stops it."""
        d = Daemon(self.args.tlsguardd, self.args.tlsguardctl, cgroup.path, self.senders,
                   os.path.join(self.tmp, name + ".sock"), os.path.join(self.tmp, name + ".log"),
                   pins=pin_dir("copies-" + name))
        d.argv += list(options)
        d.stopped = False
        self.suite.push(lambda: None if d.stopped else d.stop())
        d.start()
        return d


def main(argv=None):
    args = harness.arg_parser(__doc__, keep_help="logs, copies, queue, mailboxes, MX records",
                              verbose_help="show tlsguardd's log at the end").parse_args(argv)
    results = harness.Results()
    report = results.report
    with harness.Run(results, keep=args.keep, root="tls_copies_run.py must run as root (cgroups, mounts, BPF)") \
            as suite:
        try:
            harness.require_tools(args.tlsguardd, args.tlsguardctl, postfix=True)
            s = Setup(args, suite)
        except (PostfixMissing, PostfixError, RuntimeError, OSError) as e:
            report("setup", [str(e)])
        else:
            with suite.guard():
                case_outside(s, report)
                case_inside(s, report)
                case_weak_first(s, report)
                case_copy_kept(s, report)
                case_bad_dir(s, report)
                case_unbound(s, report)
            if args.verbose:
                print(s.daemon.log_tail(40))
    return suite.finish()


if __name__ == "__main__":
    sys.exit(main())
