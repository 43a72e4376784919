#!/usr/bin/python3
"""End-to-end audit-trail run for tlsguard: ``tlsguardd --audit FILE`` against real Postfix and OpenSSL MXs.

Usage (as root; builds nothing):
    /usr/bin/python3 tests/e2e/suites/audit_run.py [--tlsguardd build/tlsguardd]
        [--tlsguardctl build/tlsguardctl] [--keep] [-v]

Setup: a temp dir, a cgroup v2 directory (and a child cgroup in it for the
second Postfix), recording test MXs (mx.py, real OpenSSL handshakes) on
127.0.0.90 and up, port 25:

    .90 TLS 1.3   case tls13_three_rcpts   (Postfix A)
    .91 TLS 1.2   case tls12_delivered     (Postfix A)
    .92 no TLS    case plaintext_delivered (Postfix A)
    .93 no TLS    case held_no_tls         (Postfix A)
    .94 TLS 1.0   case held_weak_tls       (Postfix A)
    .95 TLS 1.3   case tlsproxy_reuse      (Postfix B, smtp_tls_connection_reuse = yes)
    .96 TLS 1.3   case ssl_ex_client       (/usr/bin/python3 smtplib: SSL_write_ex/SSL_read_ex)
    .97 no TLS    case audit_sighup_reopen (/usr/bin/python3 smtplib, after the rotation)
    .99 smtp-sink case audit_load_reopen_stop (smtp-source, 1,500 messages)

Postfix A (postfix_env.py, master in the test cgroup) and Postfix B (the
same, plus a ``tlsproxy`` line in master.cf and ``smtp_tls_connection_reuse
= yes``, master in the child cgroup, so tlsproxy runs there too) at
``smtp_tls_security_level = may`` with ``minimal_backoff_time =
queue_run_delay = 2s`` (Postfix's plaintext retry after the cut weak-TLS
session comes seconds later), and ``tlsguardd --cgroup DIR --senders FILE
--port 25 --socket SOCK --audit FILE -v`` (daemon.py's ``Daemon``).
Guaranteed senders: ``@guarded.test``.  Each case has its own MX, sender
and recipients, so the records of a case are those whose ``flow.remote`` is
its MX, and each record is tied to one MX connection by ``flow.local`` (the
connection's peer address as the MX saw it).

Every record is checked field by field against what the MX recorded: the
key set; ``time`` (UTC, within the run); ``flow``; ``host`` (the name in the
MX's greeting); ``sender`` (the MAIL FROM); ``guaranteed`` (the senders
file); ``recipients`` (each RCPT with the MX's reply to it, in order, or, on
a held flow, tlsguard's ``503 5.5.1``); ``tls`` (version and cipher as the
MX's ``SSLSocket`` saw them, or null); ``mail_reply`` and ``data_reply``
(the MX's replies; the data reply carries the MX's queue id); ``verdict``.
No record may contain an address that was not in its own conversation.

Cases (the mail cases inject first, then one wait for all final statuses
and all records): tls13_three_rcpts, tls12_delivered, plaintext_delivered,
held_no_tls, held_weak_tls (a held-weak-tls record per cut TLS session and
one, with tls null and the reply naming the version, for the plaintext retry),
tlsproxy_reuse, ssl_ex_client (the program's _ssl module imports
SSL_write_ex/SSL_read_ex and not SSL_write/SSL_read), latin1_greeting,
record_soon_after_close (three plaintext conversations with the latin1 MX,
one after the other: each record is in the file within 1 s of the
client's exit, though nothing wakes the agent for an unheld flow: its
audit timer reads the ring buffer every 100 ms), no_foreign_address
(the whole file), then the ``tlsguardctl audit`` cases: ctl_audit_print,
ctl_audit_sender, ctl_audit_since, ctl_audit_garbage, and
audit_sighup_reopen (rename the file, SIGHUP, one more conversation: its
record is in a new file at the configured path, not in the renamed one),
audit_load_reopen_stop (smtp-source in the cgroup, 1,500 messages over 2
sessions, the suite's tlsguardd with a ring buffer of 4 MiB; the file renamed and SIGHUP a quarter of the way, SIGTERM the
moment the load ends: exactly one record per attempt across the two files,
tlsguardd's VmRSS grew by at most 16 MiB (not checked under
AddressSanitizer, whose quarantine keeps freed memory), and tlsguardd
exits 0; this case stops the suite's tlsguardd), and
audit_slow_flush (a tlsguardd of its own, its audit file on an ext4 without
a journal on a loop device, the daemon in a blkio (cgroup v1) cgroup that
may write 4 KiB/s to it, so that a flush takes half a second or more: ten
held attempts on .93, one after the other, are each answered within 0.25 s,
and all ten records are in the file after SIGTERM; skipped, saying why,
where the loop device or the blkio throttle is missing).

Output: ``PASS name`` / ``FAIL name: why`` per case, then exactly ``N
passed, M failed`` alone on a line; exit status 0 only if none failed (2 on
a usage error).  Everything created is removed in a ``finally``, also on
Ctrl-C or SIGTERM: the clients (by pid), tlsguardd (SIGTERM by pid, must
exit 0: the ``tlsguardd_shutdown`` case), both Postfix instances, the MXs,
the cgroups, and the temp dir unless --keep.
"""

import datetime
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "fixtures"))
sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree

import harness  # noqa: E402
from hostile_mx import HostileMX  # noqa: E402
from mx import TestMX, TLSOptions  # noqa: E402
from postfix_env import (Cgroup, PostfixError, PostfixInstance, PostfixMissing,  # noqa: E402
                         cgroup2_mount)
from daemon import GUARDED_SENDERS, MAILBOX_DOMAINS, TLS_TEXT, WEAK_TEXT, Senders, normalize, rss  # noqa: E402

PYTHON = "/usr/bin/python3"
HELD_MAIL_REPLY = "550 5.7.10 " + TLS_TEXT
HELD_RCPT_PREFIX = "503 5.5.1"  # tlsguard's answer to RCPT/DATA behind a refused MAIL
RECORD_KEYS = {"schema_version", "time", "flow", "remote", "sender", "guaranteed", "recipients", "tls",
               "mail_reply", "data_reply", "verdict"}
# What log shippers add themselves (Filebeat, Elastic Agent, Vector): never a field of ours.
SHIPPER_FIELDS = {"host", "@timestamp", "message", "log", "agent", "ecs", "event", "input", "source_type",
                  "timestamp"}
ADDR_RE = re.compile(r"[A-Za-z0-9._%+=-]+@[A-Za-z0-9.-]+")
MX_TLS_NAMES = {"TLSv1": "TLSv1.0"}  # SSLSocket.version() -> tlsguard's name

# key -> (address, TLSOptions or None)
MXS = {
    "tls13": ("127.0.0.90", TLSOptions(version="1.3")),
    "tls12": ("127.0.0.91", TLSOptions(version="1.2")),
    "plain": ("127.0.0.92", None),
    "held": ("127.0.0.93", None),
    "weak": ("127.0.0.94", TLSOptions(version="1.0")),
    "reuse": ("127.0.0.95", TLSOptions(version="1.3")),
    "ex": ("127.0.0.96", TLSOptions(version="1.3")),
    "hup": ("127.0.0.97", None),
}
DOMAINS = {key: "%s.audit.test" % key for key in MXS}
# A host whose greeting names it in Latin-1, not UTF-8.
LATIN1_MX = "127.0.0.98"
LATIN1_GREETING = b"220 mx\xe9\xff.latin1.test ESMTP\r\n"
SENDERS_FILE = GUARDED_SENDERS
SENDER = {
    "tls13": "aud-tls13@mta.test",
    "tls12": "aud-tls12@mta.test",
    "plain": "aud-plain@mta.test",
    "held": "aud-held@guarded.test",
    "weak": "aud-weak@guarded.test",
    "reuse": "aud-reuse@mta.test",
    "ex": "aud-ex@guarded.test",
    "hup": "aud-hup@mta.test",
}
POSTFIX_MAIN = {  # spelled out although postfix_env.py has the same values: the run depends on them
    "smtp_tls_security_level": "may",
    "smtp_tls_loglevel": "1",
    "queue_run_delay": "2s",
    "minimal_backoff_time": "2s",
    "maximal_backoff_time": "10s",
}
TLSPROXY_MASTER_LINE = "tlsproxy   unix  -       -       n       -       0       tlsproxy\n"

# audit_load_reopen_stop: smtp-source in the cgroup to smtp-sink on LOAD_SINK.
LOAD_SINK = "127.0.0.99"
LOAD_SENDER = "aud-load@mta.test"
# Two sessions: a load the agent's loop keeps up with on a busy 2-core machine,
# also under AddressSanitizer (a build three times slower; at 8 sessions its ring
# buffer overflowed there: events, hence records, lost). bench case 9 measures
# the agent's pace at 10 sessions.
LOAD_SESSIONS = 2
LOAD_RINGBUF = 4 << 20
LOAD_MESSAGES = 1500
# What the agent's memory may grow by over the load: its table of the flows
# followed at once (4,096 entries of about 1.5 KB) fills as flows come; every
# new flow's record once touched 33 KB of fresh memory (220 MB here).
LOAD_RSS_KB = 16384
# audit_slow_flush: a disk that takes SLOW_BPS bytes a second from the daemon.
SLOW_SENDER = "aud-slow@guarded.test"
SLOW_ATTEMPTS = 10
SLOW_BPS = 4096
SLOW_FLUSH_MIN = 0.4  # a flush slower than this, or the case is skipped
SLOW_MAX = 0.25  # each held attempt, answered by the agent, within this

TIMEOUT_STATUS = 60.0  # all final statuses in the Postfix logs
TIMEOUT_RECORDS = 15.0  # the expected records, after the statuses
PROMPT_RECORD = 1.0  # a record after its connection's close (the audit timer: 100 ms)
TIMEOUT_CLIENT = 30.0

# A client in the test cgroup: argv host tls|plain sender marker rcpt...; prints one JSON line.
CLIENT = r"""
import json, signal, smtplib, ssl, sys
signal.alarm(40)
host, mode, sender, marker = sys.argv[1:5]
rcpts = sys.argv[5:]
out = {"cgroup": open("/proc/self/cgroup").read()}
s = smtplib.SMTP(host, 25, local_hostname="client.audit.test", timeout=30)
out["local"] = "%s:%d" % s.sock.getsockname()[:2]
if mode == "tls":
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s.starttls(context=ctx)
    out["version"], out["cipher"] = s.sock.version(), s.sock.cipher()[0]
s.ehlo("client.audit.test")
code, msg = s.mail(sender)
out["mail"] = [code, msg.decode()]
out["rcpt"] = []
for r in rcpts:
    code, msg = s.rcpt(r)
    out["rcpt"].append([code, msg.decode()])
code, msg = s.data("Subject: audit %s\r\nX-E2E-Marker: %s\r\n\r\nmarker: %s\r\n" % (marker, marker, marker))
out["data"] = [code, msg.decode()]
out["quit"] = s.quit()[0]
print(json.dumps(out), flush=True)
"""


class ReusePostfix(PostfixInstance):
    """A PostfixInstance whose master.cf also has tlsproxy (for smtp_tls_connection_reuse = yes)."""

    def write_config(self):
        super().write_config()
        with open(os.path.join(self.conf, "master.cf"), "a") as f:
            f.write(TLSPROXY_MASTER_LINE)


class Client:
    """/usr/bin/python3 started inside a cgroup (its shell joins the cgroup, then execs)."""

    def __init__(self, cgroup, host, mode, sender, marker, rcpts):
        script = 'cg=$1; shift; echo $$ > "$cg" && exec "$@"'
        self.proc = subprocess.Popen(["/bin/sh", "-c", script, "sh", cgroup.procs_file, PYTHON, "-c", CLIENT,
                                      host, mode, sender, marker, *rcpts],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)

    def result(self, timeout=TIMEOUT_CLIENT):
        """(parsed JSON or None, why)."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            out, err = self.proc.communicate()
            return None, "client timed out: %s" % err.strip()[-300:]
        if self.proc.returncode != 0:
            return None, "client exit %d: %s" % (self.proc.returncode, err.strip()[-300:])
        try:
            return json.loads(out.strip().splitlines()[-1]), None
        except (ValueError, IndexError):
            return None, "client printed no result: %r %s" % (out[-200:], err.strip()[-200:])

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()  # by pid: our own child
            self.proc.wait()


# ------------------------------------------------------------------ the MX's view

def dialogue(conn):
    """[(command, final reply, in_tls)] of one MX connection, in order; the end of the
    message data is the command "." (its reply carries the queue id)."""
    pending, out, greeted, in_data, in_tls = [], [], False, False, False
    for e in conn.snapshot():
        if e.kind == "tls":
            in_tls = True
        elif e.kind == "line":
            if in_data:
                if e.data == ".":
                    pending.append(".")
                    in_data = False
            else:
                pending.append(e.data)
        elif e.kind == "reply":
            if not greeted:
                greeted = True
                continue
            if e.data[3:4] == "-":
                continue
            cmd = pending.pop(0) if pending else None
            out.append((cmd, e.data, in_tls))
            if e.data.startswith("354"):
                in_data = True
    return out


def greeting_name(conn):
    for e in conn.snapshot():
        if e.kind == "reply":
            return e.data.split()[1] if len(e.data.split()) > 1 else ""
    return None


def verbs(conn, tls=None):
    return [c.split(" ", 1)[0].split(":", 1)[0].upper() for c in conn.commands(tls=tls) if c]


def describe_conns(mx):
    out = []
    for c in mx.connections():
        s = "#%d %s %s" % (c.id, c.peer, " ".join(verbs(c, tls=False)) or "-")
        if c.tls_version:
            s += " | %s: %s" % (c.tls_version, " ".join(verbs(c, tls=True)) or "-")
        out.append(s)
    return out


def strip_addr(arg):
    arg = arg.split(":", 1)[1].strip() if ":" in arg else arg.strip()
    return arg[1:].split(">", 1)[0] if arg.startswith("<") else arg.split(" ", 1)[0]


def expected_from_conn(conn, marker):
    """What the record of the delivered transaction carrying ``marker`` must say, from the MX's view."""
    steps = dialogue(conn)
    mail_i = None
    for i, (cmd, reply, tls) in enumerate(steps):
        if cmd and cmd.upper().startswith("MAIL FROM:"):
            mail_i = i
            txn = [t for t in conn.transactions() if t.data is not None and any(marker in x for x in t.data)]
            if txn and txn[0].mail_from == cmd[10:].strip():
                break
    if mail_i is None:
        return None
    exp = {"sender": strip_addr(steps[mail_i][0]), "mail_reply": steps[mail_i][1], "recipients": [],
           "data_reply": ""}
    for cmd, reply, _ in steps[mail_i + 1:]:
        up = (cmd or "").upper()
        if up.startswith("RCPT TO:"):
            exp["recipients"].append((strip_addr(cmd), reply))
        elif cmd == ".":
            exp["data_reply"] = reply
            break
        elif up.startswith(("MAIL", "RSET", "QUIT")):
            break
    return exp


def mx_tls(conn):
    if not conn.tls_version:
        return None
    return {"version": MX_TLS_NAMES.get(conn.tls_version, conn.tls_version), "cipher": conn.tls_cipher[0]}


# ------------------------------------------------------------------ the records

def read_records(path):
    """(records with their raw line, problems with the file's lines): each line
    must be valid UTF-8 and a JSON object, for Python's reader and for jq's."""
    recs, bad = [], []
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return [], []
    jq = subprocess.run(["jq", "-e", "-c", "type == \"object\" and .schema_version == 2"], input=raw,
                        capture_output=True)
    if jq.returncode != 0 or set(jq.stdout.split()) - {b"true"}:
        bad.append("%s: jq -e says %r %r" % (path, jq.stdout[-200:], jq.stderr[-200:]))
    for n, bline in enumerate(raw.splitlines(), 1):
        try:
            line = bline.decode("utf-8")
        except UnicodeDecodeError as e:
            bad.append("%s:%d is not UTF-8 (%s): %r" % (path, n, e, bline[:80]))
            continue
        try:
            r = json.loads(line)
            if not isinstance(r, dict):
                raise ValueError("not an object")
        except ValueError as e:
            bad.append("%s:%d is not JSON (%s): %r" % (path, n, e, line[:80]))
            continue
        r["_line"] = line
        r["_n"] = n
        recs.append(r)
    return recs, bad


def remote_of(r):
    flow = r.get("flow")
    return flow.get("remote") if isinstance(flow, dict) else None


def local_of(r):
    flow = r.get("flow")
    return flow.get("local") if isinstance(flow, dict) else None


def show(r):
    return r.get("_line", json.dumps(r))[:400]


def parse_time(s):
    try:
        return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
    except (TypeError, ValueError):
        return None


ANY = object()


def check_record(r, exp, t0, who):
    """Problems with one record against the expected values (``ANY``: not checked)."""
    p = []
    keys = set(r) - {"_line", "_n"}
    if keys != RECORD_KEYS:
        p.append("%s: keys %s, expected %s" % (who, sorted(keys), sorted(RECORD_KEYS)))
    t = parse_time(r.get("time"))
    if t is None:
        p.append("%s: time %r is not YYYY-MM-DDTHH:MM:SS.mmmZ" % (who, r.get("time")))
    elif not (t0 - 1 <= t <= time.time() + 1):
        p.append("%s: time %s is outside the run" % (who, r.get("time")))
    flow = r.get("flow")
    if not isinstance(flow, dict) or set(flow) != {"local", "remote"}:
        p.append("%s: flow %r, expected {local, remote}" % (who, flow))
    for key in ("remote", "local"):
        if exp.get(key, ANY) is not ANY and (flow or {}).get(key) != exp[key]:
            p.append("%s: flow.%s %r, expected %r" % (who, key, (flow or {}).get(key), exp[key]))
    if r.get("schema_version") != 2:
        p.append("%s: schema_version %r, expected 2" % (who, r.get("schema_version")))
    if set(r) & SHIPPER_FIELDS:
        p.append("%s: fields a log shipper adds itself: %s" % (who, sorted(set(r) & SHIPPER_FIELDS)))
    remote = r.get("remote")
    if not isinstance(remote, dict) or set(remote) != {"name", "address", "port"}:
        p.append("%s: remote %r, expected {name, address, port}" % (who, remote))
    elif isinstance(flow, dict) and flow.get("remote") not in ("%s:%s" % (remote["address"], remote["port"]),
                                                               "[%s]:%s" % (remote["address"], remote["port"])):
        p.append("%s: remote %r does not match flow.remote %r" % (who, remote, flow.get("remote")))
    if exp.get("host", ANY) is not ANY and (remote or {}).get("name") != exp["host"]:
        p.append("%s: remote.name %r, expected %r" % (who, (remote or {}).get("name"), exp["host"]))
    for key in ("sender", "guaranteed", "mail_reply", "data_reply", "verdict"):
        if exp.get(key, ANY) is not ANY and r.get(key) != exp[key]:
            p.append("%s: %s %r, expected %r" % (who, key, r.get(key), exp[key]))
    rcpts = r.get("recipients")
    if not isinstance(rcpts, list) or any(not isinstance(x, dict) or set(x) != {"address", "reply"}
                                          for x in rcpts):
        p.append("%s: recipients %r, expected a list of {address, reply}" % (who, rcpts))
    elif exp.get("recipients", ANY) is not ANY:
        got = [(x["address"], x["reply"]) for x in rcpts]
        want = exp["recipients"]
        if callable(want):
            p += ["%s: %s" % (who, x) for x in want(got)]
        elif got != want:
            p.append("%s: recipients %s, expected %s" % (who, got, want))
    if exp.get("tls", ANY) is not ANY:
        if r.get("tls") != exp["tls"]:
            p.append("%s: tls %r, expected %r (the MX's view)" % (who, r.get("tls"), exp["tls"]))
    conv = {a.lower() for a in exp.get("conversation", ())}
    foreign = sorted({a for a in ADDR_RE.findall(r.get("_line", "")) if a.lower() not in conv})
    if foreign:
        p.append("%s: addresses not in its conversation: %s" % (who, foreign))
    return p


# ------------------------------------------------------------------ the run

class Run:
    def __init__(self, args, tmp, cgroup, pfa, pfb, mxs, daemon, audit_path):
        self.args, self.tmp, self.cgroup, self.pfa, self.pfb = args, tmp, cgroup, pfa, pfb
        self.mxs, self.daemon, self.audit_path = mxs, daemon, audit_path
        self.run_id = secrets.token_hex(3)
        self.senders = Senders(SENDERS_FILE)
        self.mails = {}  # key -> (PostfixInstance, Mail)
        self.t0 = time.time()
        self.clients = []
        self.conversations = {}  # key -> set of addresses
        self.markers = {}  # client case key -> marker

    def rcpt(self, key, tag):
        return "%s.%s@%s" % (tag, self.run_id, DOMAINS[key])

    def inject(self):
        plan = {
            "tls13": (self.pfa, ["r1", "reject-r2", "r3"]),
            "tls12": (self.pfa, ["r1"]),
            "plain": (self.pfa, ["r1"]),
            "held": (self.pfa, ["r1", "r2"]),
            "weak": (self.pfa, ["r1"]),
            "reuse": (self.pfb, ["r1", "reject-r2", "r3"]),
        }
        for key, (pf, tags) in plan.items():
            rcpts = [self.rcpt(key, t) for t in tags]
            self.mails[key] = (pf, pf.send(SENDER[key], rcpts, subject="audit %s" % key))
            self.conversations[key] = {SENDER[key]} | set(rcpts)

    def wait_postfix(self):
        """Wait for every final status; return {key: Outcome}."""
        out = {}
        deadline = time.monotonic() + TIMEOUT_STATUS
        for pf in (self.pfa, self.pfb):
            mails = [m for p, m in self.mails.values() if p is pf]
            res = pf.wait_final(mails, max(1.0, deadline - time.monotonic()))
            for key, (p, m) in self.mails.items():
                if p is pf:
                    out[key] = res[m.marker]
        return out

    def records(self, path=None):
        return read_records(path or self.audit_path)[0]

    def of(self, key, path=None):
        addr = MXS[key][0] + ":25"
        return [r for r in self.records(path) if remote_of(r) == addr]

    def wait_records(self, want, timeout=TIMEOUT_RECORDS):
        """want: {key: predicate(records of key)}; poll until all hold (or timeout), then settle."""
        deadline = time.monotonic() + timeout
        while not all(pred(self.of(k)) for k, pred in want.items()) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)  # anything unexpected (a second record) shows up too


def conn_of(mx, local):
    return [c for c in mx.connections() if c.peer == local]


def picked_up(outcome):
    """Postfix's log named the mail's queue id."""
    return outcome is not None and outcome.queue_id is not None


def delivered_check(run, key, outcome):
    """One record for the one delivery at MX ``key``, every field from the MX's view."""
    (_, mail), mx, p = run.mails[key], run.mxs[key], []
    if not picked_up(outcome):
        return ["%s: never picked up by Postfix" % mail.marker]
    for r in mail.recipients:
        s = outcome.status_of(r)
        want = "bounced" if r.startswith("reject-") else "sent"
        if s is None or s.status != want:
            p.append("harness: <%s> status %s, expected %s" % (r, s and "%s (%s)" % (s.status, s.text), want))
    carriers = [(c, t) for c in mx.connections() for t in c.transactions()
                if t.data is not None and any(mail.marker in x for x in t.data)]
    if len(carriers) != 1:
        return p + ["the body reached %s %d times, expected once: %s" % (key, len(carriers), describe_conns(mx))]
    conn, txn = carriers[0]
    recs = run.of(key)
    if len(recs) != 1:
        return p + ["%d records for %s:25, expected 1: %s" % (len(recs), MXS[key][0], [show(r) for r in recs])]
    rec = recs[0]
    exp = expected_from_conn(conn, mail.marker)
    if exp is None:
        return p + ["harness: no MAIL FROM in the MX's dialogue"]
    want = dict(exp, remote=MXS[key][0] + ":25", local=conn.peer, host=greeting_name(conn),
                guaranteed=run.senders.guaranteed(mail.sender), tls=mx_tls(conn), verdict="delivered",
                conversation=run.conversations[key])
    if exp["sender"] != mail.sender:
        p.append("harness: the MX saw MAIL FROM <%s>, expected <%s>" % (exp["sender"], mail.sender))
    if len(exp["recipients"]) != len(mail.recipients):
        p.append("harness: the MX saw %d RCPTs, expected %d" % (len(exp["recipients"]), len(mail.recipients)))
    p += check_record(rec, want, run.t0, "record")
    if txn.queue_id and txn.queue_id not in (rec.get("data_reply") or ""):
        p.append("data_reply %r lacks the MX's queue id %s" % (rec.get("data_reply"), txn.queue_id))
    return p


def held_no_tls_check(run, key, outcome):
    """Guaranteed sender -> plaintext MX: one held-no-tls record; the MX saw EHLO and no envelope."""
    (_, mail), mx, p = run.mails[key], run.mxs[key], []
    if not picked_up(outcome):
        return ["%s: never picked up by Postfix" % mail.marker]
    texts = []
    for r in mail.recipients:
        s = outcome.status_of(r)
        if s is None or s.status != "bounced" or TLS_TEXT not in s.text:
            p.append("harness: <%s> status %s, expected bounced with %r" % (
                r, s and "%s (%s)" % (s.status, s.text), TLS_TEXT))
        else:
            texts.append(s.text)
    if any(t.sender for c in mx.connections() for t in c.transactions()):
        p.append("the MX saw a MAIL FROM: %s" % describe_conns(mx))
    recs = run.of(key)
    if len(recs) != 1:
        return p + ["%d records for %s:25, expected 1: %s" % (len(recs), MXS[key][0], [show(r) for r in recs])]
    rec = recs[0]
    conns = conn_of(mx, local_of(rec))
    if len(conns) != 1:
        return p + ["flow.local %r is none of the MX's connections: %s" % (local_of(rec), describe_conns(mx))]
    conn = conns[0]
    if "EHLO" not in verbs(conn):
        p.append("harness: that connection at the MX never saw EHLO: %s" % describe_conns(mx))
    p += check_record(rec, {
        "remote": MXS[key][0] + ":25", "local": conn.peer, "host": greeting_name(conn), "sender": mail.sender,
        "guaranteed": True, "recipients": held_rcpts(mail.recipients), "tls": None,
        "mail_reply": HELD_MAIL_REPLY, "data_reply": "", "verdict": "held-no-tls",
        "conversation": run.conversations[key]}, run.t0, "record")
    if texts and not all(rec.get("mail_reply", "") in t for t in texts):
        p.append("mail_reply %r is not what Postfix logged: %s" % (rec.get("mail_reply"), texts[0]))
    return p


def held_rcpts(recipients):
    """Recipients as Postfix pipelined them behind the held MAIL, each with tlsguard's 503."""
    def check(got):
        p = []
        if sorted(a.lower() for a, _ in got) != sorted(r.lower() for r in recipients):
            p.append("recipients %s, expected %s" % ([a for a, _ in got], recipients))
        bad = [(a, rep) for a, rep in got if not rep.startswith(HELD_RCPT_PREFIX)]
        if bad:
            p.append("recipient replies %s, expected tlsguard's %r" % (bad, HELD_RCPT_PREFIX + " ..."))
        return p
    return check


def unanswered_rcpts(recipients):
    """Recipients of a session cut before its MAIL left: some of the mail's (Postfix may have written
    them behind the MAIL), none with a reply (the host never saw them)."""
    def check(got):
        p = []
        if not {a.lower() for a, _ in got} <= {r.lower() for r in recipients}:
            p.append("recipients %s are not the mail's %s" % ([a for a, _ in got], recipients))
        if any(rep for _, rep in got):
            p.append("recipient replies %s, but the host never saw a RCPT" % got)
        return p
    return check


def held_weak_check(run, key, outcome):
    """Guaranteed sender -> TLS 1.0 MX: a held-weak-tls record for each cut TLS session, and a
    held-weak-tls record with tls null (mail_reply naming the version) for Postfix's plaintext
    retry: the cause of that hold is the host's weak TLS, not a missing STARTTLS."""
    (_, mail), mx, p = run.mails[key], run.mxs[key], []
    version = "TLSv1.0"
    weak_reply = "550 5.7.10 " + WEAK_TEXT % version
    if not picked_up(outcome):
        return ["%s: never picked up by Postfix" % mail.marker]
    s = outcome.status_of(mail.recipients[0])
    if s is None or s.status != "bounced" or weak_reply[11:] not in s.text:
        p.append("harness: status %s, expected bounced with %r" % (s and "%s (%s)" % (s.status, s.text),
                                                                   weak_reply[11:]))
    if any(t.sender for c in mx.connections() for t in c.transactions()):
        p.append("the MX saw a MAIL FROM: %s" % describe_conns(mx))
    recs = run.of(key)
    tls_conns = [c for c in mx.connections() if c.tls_version and "EHLO" in verbs(c, tls=True)]
    plain_conns = [c for c in mx.connections() if not c.tls_version and "EHLO" in verbs(c, tls=False)
                   and "STARTTLS" not in verbs(c)]
    if not tls_conns or not plain_conns:
        p.append("harness: expected TLS session(s) and a plaintext retry at the MX: %s" % describe_conns(mx))
    weak = [r for r in recs if r.get("verdict") == "held-weak-tls" and r.get("tls")]
    notls = [r for r in recs if r.get("verdict") == "held-weak-tls" and r.get("tls") is None]
    other = [r for r in recs if r not in weak and r not in notls]
    if not weak:
        p.append("no held-weak-tls record of a TLS session (records: %s)" % [show(r) for r in recs])
    if not notls:
        p.append("no held-weak-tls record for the plaintext retry (records: %s)" % [
            "%s verdict=%s tls=%s mail_reply=%r" % (local_of(r), r.get("verdict"), r.get("tls"), r.get("mail_reply"))
            for r in recs])
    if other:
        p.append("records with other verdicts: %s" % [show(r) for r in other])
    # One record per connection that got as far as MAIL; each checked by the kind of its connection.
    for c in tls_conns + plain_conns:
        mine = [r for r in recs if local_of(r) == c.peer]
        if len(mine) != 1:
            p.append("%d records for MX connection #%d (%s, %s), expected 1" % (
                len(mine), c.id, c.peer, c.tls_version or "plaintext"))
    for r in recs:
        conns = conn_of(mx, local_of(r))
        if len(conns) != 1:
            p.append("record for flow.local %r: none of the MX's connections" % local_of(r))
            continue
        c = conns[0]
        common = {"remote": MXS[key][0] + ":25", "local": c.peer, "host": greeting_name(c), "sender": mail.sender,
                  "guaranteed": True, "data_reply": "", "conversation": run.conversations[key]}
        if c.tls_version:
            # Cut inside TLS before the MAIL record left: the host never answered anything of it.
            p += check_record(r, dict(common, tls=mx_tls(c), mail_reply="", verdict="held-weak-tls",
                                      recipients=unanswered_rcpts(mail.recipients)),
                              run.t0, "TLS record #%d" % c.id)
        else:
            p += check_record(r, dict(common, tls=None, mail_reply=weak_reply, verdict="held-weak-tls",
                                      recipients=held_rcpts(mail.recipients)),
                              run.t0, "plaintext record #%d" % c.id)
    return p


def tlsproxy_pids(cgroup):
    out = []
    for pid in cgroup.pids():
        try:
            with open("/proc/%d/comm" % pid) as f:
                if f.read().strip() == "tlsproxy":
                    out.append(pid)
        except OSError:
            pass
    return out


def ssl_ex_imports():
    """Problems if /usr/bin/python3's _ssl module does not call SSL_write_ex/SSL_read_ex (instead of
    SSL_write/SSL_read): checked in the dynamic string table of the module."""
    r = subprocess.run([PYTHON, "-c", "import _ssl; print(_ssl.__file__)"], capture_output=True, text=True,
                       timeout=20)
    if r.returncode != 0:
        return ["%s cannot import _ssl: %s" % (PYTHON, r.stderr.strip()[-200:])]
    path = r.stdout.strip()
    with open(path, "rb") as f:
        data = f.read()
    p = []
    for sym in (b"SSL_write_ex", b"SSL_read_ex", b"SSL_set_fd"):
        if b"\0" + sym + b"\0" not in data:
            p.append("harness: %s does not import %s" % (path, sym.decode()))
    for sym in (b"SSL_write", b"SSL_read"):
        if b"\0" + sym + b"\0" in data:
            p.append("harness: %s imports %s too: the test would not prove the _ex probes" % (path, sym.decode()))
    return p


def client_check(run, key, res, why, mode):
    """A /usr/bin/python3 client's conversation at MX ``key``: one record, every field from the MX's view."""
    if res is None:
        return ["harness: %s" % why]
    p = []
    rel = "/" + os.path.relpath(run.cgroup.path, cgroup2_mount())
    if "0::%s" % rel not in res["cgroup"].splitlines():
        p.append("harness: the client ran in %r, not in %s" % (res["cgroup"].strip(), run.cgroup.path))
    mx = run.mxs[key]
    conns = conn_of(mx, res["local"])
    if len(conns) != 1:
        return p + ["harness: the client's connection %s is not at the MX: %s" % (res["local"], describe_conns(mx))]
    conn = conns[0]
    if mode == "tls" and (conn.tls_version != "TLSv1.3" or res.get("version") != "TLSv1.3"):
        p.append("harness: client TLS %s, MX TLS %s, expected TLSv1.3" % (res.get("version"), conn.tls_version))
    if res["data"][0] != 250:
        p.append("harness: the client's DATA got %s" % res["data"])
    marker = run.markers[key]
    exp = expected_from_conn(conn, marker)
    recs = run.of(key)
    if exp is None or len(recs) != 1:
        return p + ["%d records for %s:25, expected 1: %s" % (len(recs), MXS[key][0], [show(r) for r in recs])]
    p += check_record(recs[0], dict(exp, remote=MXS[key][0] + ":25", local=conn.peer, host=greeting_name(conn),
                                    guaranteed=run.senders.guaranteed(SENDER[key]), tls=mx_tls(conn),
                                    verdict="delivered", conversation=run.conversations[key]), run.t0, "record")
    txn = [t for t in conn.transactions() if t.queue_id]
    if txn and txn[0].queue_id not in (recs[0].get("data_reply") or ""):
        p.append("data_reply %r lacks the MX's queue id %s" % (recs[0].get("data_reply"), txn[0].queue_id))
    return p


def run_client(run, key, mode, tags):
    rcpts = [run.rcpt(key, t) for t in tags]
    marker = "m-" + secrets.token_hex(8)
    run.markers[key] = marker
    run.conversations[key] = {SENDER[key]} | set(rcpts)
    c = Client(run.cgroup, MXS[key][0], mode, SENDER[key], marker, rcpts)
    run.clients.append(c)
    return c.result()


def latin1_check(run):
    """A greeting with bytes >= 0x80: the record is valid UTF-8 (every line of the
    file is checked by read_records), the stray bytes escaped as \\u00XX."""
    sender, rcpt = "aud-latin1@mta.test", "r1.%s@latin1.audit.test" % run.run_id
    run.conversations["latin1"] = {sender, rcpt}
    c = Client(run.cgroup, LATIN1_MX, "plain", sender, "m-" + secrets.token_hex(8), [rcpt])
    run.clients.append(c)
    res, why = c.result()
    p = [] if res else [why]
    recs, bad, deadline = [], [], time.monotonic() + TIMEOUT_RECORDS
    while time.monotonic() < deadline:
        recs, bad = read_records(run.audit_path)
        recs = [r for r in recs if r.get("sender") == sender]
        if recs:
            break
        time.sleep(0.3)
    p += bad
    if len(recs) != 1:
        return p + ["%d records of %s, want 1" % (len(recs), sender)]
    r = recs[0]
    if r.get("remote", {}).get("name") != "mx\u00e9\u00ff.latin1.test" or \
            '"name":"mx\\u00e9\\u00ff.latin1.test"' not in r["_line"] or r.get("verdict") != "delivered":
        p.append("record %s" % r["_line"])
    return p


def prompt_check(run):
    """A record is written soon after its connection closes, though nothing wakes
    the agent for an unheld flow: three plaintext conversations, one after the
    other, each record in the file within PROMPT_RECORD s of the client's exit (the
    agent reads the ring buffer every 100 ms; its next tick, up to 5 s, is what a
    missing audit timer would leave)."""
    p = []
    for i in range(3):
        sender, rcpt = "aud-prompt%d@mta.test" % i, "r1.%s@prompt.audit.test" % run.run_id
        run.conversations["prompt%d" % i] = {sender, rcpt}
        c = Client(run.cgroup, LATIN1_MX, "plain", sender, "m-" + secrets.token_hex(8), [rcpt])
        run.clients.append(c)
        res, why = c.result()
        closed = time.monotonic()
        if res is None:
            p.append(why)
            continue
        recs = []
        while not recs and time.monotonic() - closed < TIMEOUT_RECORDS:
            recs = [r for r in read_records(run.audit_path)[0] if r.get("sender") == sender]
            if not recs:
                time.sleep(0.02)
        took = time.monotonic() - closed
        if len(recs) != 1 or recs[0].get("verdict") != "delivered":
            p.append("conversation %d: records %s" % (i, [show(r) for r in recs]))
        elif took > PROMPT_RECORD:
            p.append("conversation %d: its record came %.2f s after the close, want <= %.1f s" % (
                i, took, PROMPT_RECORD))
    return p


# ------------------------------------------------------------------ tlsguardctl audit

def ctl(run, *args, timeout=20):
    return subprocess.run(run.daemon.ctl + ["audit", *args], capture_output=True, text=True, timeout=timeout)


def paragraphs(text):
    """tlsguardctl audit output: [(header line, [indented lines])]."""
    out = []
    for line in text.splitlines():
        if line[:1].isspace():
            if out:
                out[-1][1].append(line)
        elif line.strip():
            out.append((line, []))
    return out


def printed_problems(recs, text):
    """Each record, in file order, printed as one paragraph with what it says."""
    p = []
    paras = paragraphs(text)
    if len(paras) != len(recs):
        return ["%d paragraphs for %d records:\n%s" % (len(paras), len(recs), text)]
    for r, (head, body) in zip(recs, paras):
        who = "line %d" % r["_n"]
        tls = r.get("tls") or {}
        want_head = [r["time"], r["verdict"], "<%s>" % r["sender"], r["flow"]["remote"],
                     tls.get("version", "plaintext")] + ([tls["cipher"]] if tls.get("cipher") else []) + (
                    [r["remote"]["name"]] if r.get("remote", {}).get("name") else [])
        missing = [w for w in want_head if w not in head]
        if missing:
            p.append("%s: header %r lacks %s" % (who, head, missing))
        if ("guaranteed" in head) != bool(r.get("guaranteed")):
            p.append("%s: header %r %s 'guaranteed'" % (who, head, "lacks" if r.get("guaranteed") else "says"))
        for x in r.get("recipients", []):
            if not any("<%s>" % x["address"] in b and x["reply"] in b for b in body):
                p.append("%s: no line with <%s> and %r in %s" % (who, x["address"], x["reply"], body))
        if r.get("data_reply") and not any(r["data_reply"] in b for b in body):
            p.append("%s: the data reply %r is not printed" % (who, r["data_reply"]))
        if r.get("mail_reply") and not r["mail_reply"].startswith("2") and not any(
                r["mail_reply"] in b for b in body):
            p.append("%s: the refused MAIL's reply %r is not printed" % (who, r["mail_reply"]))
    return p


def ctl_print_check(run):
    recs = run.records()
    r = ctl(run)
    if r.returncode != 0:
        return ["tlsguardctl audit: exit %d: %s" % (r.returncode, r.stderr.strip())]
    p = ["unexpected stderr: %s" % r.stderr.strip()] if r.stderr.strip() else []
    if run.args.verbose:
        print("    " + "\n    ".join(r.stdout.splitlines()))
    return p + printed_problems(recs, r.stdout)


def filtered_problems(run, want, option, value):
    """tlsguardctl audit OPTION VALUE must print exactly the records ``want``."""
    r = ctl(run, option, value)
    if r.returncode != 0:
        return ["%s %s: exit %d: %s" % (option, value, r.returncode, r.stderr.strip())]
    return ["%s %s: %s" % (option, value, x) for x in printed_problems(want, r.stdout)]


def ctl_sender_check(run):
    p = []
    recs = run.records()
    for asked, key in (("AUD-TLS13+news@MTA.Test", "tls13"), ("Aud-Weak+x@GUARDED.test", "weak"),
                       ("aud-ex@guarded.test", "ex"), ("nobody-at-all@mta.test", None)):
        want = [x for x in recs if key and normalize(x.get("sender") or "x@y") == normalize(SENDER[key])]
        if key and not want:
            p.append("--sender %s: no record of <%s> in the file to filter" % (asked, SENDER[key]))
        p += filtered_problems(run, want, "--sender", asked)
        res = ctl(run, "--sender", asked, "--json")
        got = res.stdout.splitlines()
        if res.returncode != 0 or got != [x["_line"] for x in want]:
            p.append("--sender %s --json: exit %d, %d lines, want the %d records as written" % (
                asked, res.returncode, len(got), len(want)))
    return p


def ctl_since_check(run):
    """--since: a cut between the Postfix records and the later client record, a date, a future time."""
    p = []
    recs = run.records()
    later = run.of("ex")
    if len(later) != 1:
        return ["no ssl_ex_client record to cut at"]
    cut = later[0]["time"][:19]  # YYYY-MM-DDTHH:MM:SS: the client ran in a new second after all else
    for since in (cut, later[0]["time"], cut[:10], "2999-01-01T00:00"):
        want = [x for x in recs if x["time"] >= since]
        if since == cut and not (0 < len(want) < len(recs)):
            p.append("harness: --since %s does not split the file (%d of %d)" % (since, len(want), len(recs)))
        p += filtered_problems(run, want, "--since", since)
    return p


def ctl_garbage_check(run):
    """A copy of the file with a garbage line and a record after it: a warning naming COPY:LINE, all records."""
    recs = run.records()
    if not recs:
        return ["no records to copy"]
    copy = os.path.join(run.tmp, "audit-copy.jsonl")
    shutil.copyfile(run.audit_path, copy)
    with open(copy, "a") as f:
        f.write("this is not an audit record {\n")
        f.write(recs[0]["_line"] + "\n")
    bad_line = len(recs) + 1
    dup = dict(recs[0], _n=bad_line + 1)
    r = ctl(run, "--file", copy)
    p = []
    if r.returncode != 0:
        p.append("exit %d, expected 0: %s" % (r.returncode, r.stderr.strip()))
    warns = [x for x in r.stderr.splitlines() if x.strip()]
    if len(warns) != 1 or "%s:%d" % (copy, bad_line) not in warns[0] or "warning" not in warns[0]:
        p.append("stderr %r, expected one warning naming %s:%d" % (r.stderr.strip(), copy, bad_line))
    return p + printed_problems(recs + [dup], r.stdout)


def sighup_check(run):
    """Rename the file, SIGHUP: the next record goes to a new file at the configured path."""
    p = []
    rotated = run.audit_path + ".1"
    before = run.records()
    os.rename(run.audit_path, rotated)
    run.daemon.proc.send_signal(signal.SIGHUP)  # our own child, by pid
    deadline = time.monotonic() + 10
    while not os.path.exists(run.audit_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not os.path.exists(run.audit_path):
        p.append("no new %s within 10s of SIGHUP" % run.audit_path)
    res, why = run_client(run, "hup", "plain", ["r1", "r2"])
    deadline = time.monotonic() + TIMEOUT_RECORDS
    while not run.of("hup") and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    p += client_check(run, "hup", res, why, "plain")
    new = run.records()
    old = run.records(rotated)
    if [x["_line"] for x in old] != [x["_line"] for x in before]:
        p.append("the renamed file changed after SIGHUP: %d records, was %d" % (len(old), len(before)))
    others = [x for x in new if remote_of(x) != MXS["hup"][0] + ":25"]
    if others:
        p.append("the new file has other records: %s" % [show(x) for x in others])
    r = ctl(run)  # asks the daemon for its file: the new one
    if r.returncode != 0:
        p.append("tlsguardctl audit after SIGHUP: exit %d: %s" % (r.returncode, r.stderr.strip()))
    else:
        p += ["tlsguardctl audit after SIGHUP: %s" % x for x in printed_problems(new, r.stdout)]
    return p


def no_foreign_check(run):
    """Every address anywhere in the file was in some conversation of this run; every record is one of ours."""
    p = []
    recs, bad = read_records(run.audit_path)
    p += bad
    allowed = {a.lower() for s in run.conversations.values() for a in s}
    ours = {MXS[k][0] + ":25" for k in MXS} | {LATIN1_MX + ":25"}
    with open(run.audit_path, errors="replace") as f:
        found = {a for a in ADDR_RE.findall(f.read())}
    foreign = sorted(a for a in found if a.lower() not in allowed)
    if foreign:
        p.append("addresses in the file that were in no conversation: %s" % foreign)
    strays = [show(r) for r in recs if remote_of(r) not in ours]
    if strays:
        p.append("records for hosts no case talked to: %s" % strays)
    return p


# ------------------------------------------------------------------ under load, and a slow disk

def in_cgroup(cgroup, argv):
    """argv started in ``cgroup`` (its shell joins it, then execs), in its own session."""
    return subprocess.Popen(["/bin/sh", "-c", 'cg=$1; shift; echo $$ > "$cg" && exec "$@"', "sh",
                             cgroup.procs_file] + argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def stop_proc(proc):
    """Our own child, by pid."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def wait_listening(host, port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def load_reopen_stop_check(run):
    """smtp-source in the cgroup (LOAD_SESSIONS at once, one message per connection) to
    smtp-sink on LOAD_SINK: the file renamed and SIGHUP once a quarter of the records are
    in, SIGTERM the moment the load ends (the agent may still be reading its ring buffer
    and its syncer flushing). Every attempt has exactly one record, delivered, in the
    renamed file or in the new one, and tlsguardd exits 0."""
    p = []
    rotated = run.audit_path + ".2"
    sink = subprocess.Popen(["smtp-sink", "-u", "nobody", LOAD_SINK + ":25", "256"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    run.suite.push(stop_proc, sink)
    if not wait_listening(LOAD_SINK, 25):
        return ["harness: smtp-sink does not listen on %s:25" % LOAD_SINK]

    def load_records(path):
        return [r for r in run.records(path) if r.get("sender") == LOAD_SENDER]

    rss0 = rss(run.daemon.proc.pid)["VmRSS"]
    with open("/proc/%d/maps" % run.daemon.proc.pid) as f:
        sanitized = "libasan" in f.read()
    src = in_cgroup(run.cgroup, ["smtp-source", "-s", str(LOAD_SESSIONS), "-m", str(LOAD_MESSAGES), "-l", "512",
                                 "-f", LOAD_SENDER, "-t", "r@load.audit.test", LOAD_SINK + ":25"])
    run.suite.push(stop_proc, src)
    deadline = time.monotonic() + 60
    while len(load_records(None)) < LOAD_MESSAGES // 4 and src.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.rename(run.audit_path, rotated)
    run.daemon.proc.send_signal(signal.SIGHUP)  # our own child, by pid
    try:
        _, err = src.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        stop_proc(src)
        return ["smtp-source did not end within 120 s"]
    grown = rss(run.daemon.proc.pid)["VmRSS"] - rss0
    why = run.daemon.sigterm()
    if why:
        p.append(why)
    run.daemon.proc = None  # stopped here, and checked: the cleanup only detaches
    if sanitized:
        print("    note: tlsguardd runs under AddressSanitizer, whose quarantine keeps what is freed: its VmRSS "
              "growth (%d kB) is not bounded here" % grown, flush=True)
    elif grown > LOAD_RSS_KB:
        p.append("tlsguardd's VmRSS grew by %d kB over %d audited flows (at most %d kB: the records of the flows "
                 "open at once, not of every flow seen)" % (grown, LOAD_MESSAGES, LOAD_RSS_KB))
    if src.returncode != 0:
        p.append("smtp-source exit %d: %s" % (src.returncode, err.strip()[-300:]))
    before, after = load_records(rotated), load_records(run.audit_path)
    older = load_records(run.audit_path + ".1")
    if not before or not after:
        p.append("harness: the reopen was not under load: %d records before SIGHUP, %d after" % (
            len(before), len(after)))
    if len(before) + len(after) + len(older) != LOAD_MESSAGES:
        p.append("%d records (%d before SIGHUP, %d after, %d in the file of the earlier case) for %d attempts" % (
            len(before) + len(after) + len(older), len(before), len(after), len(older), LOAD_MESSAGES))
    verdicts = sorted({r.get("verdict") for r in before + after})
    if verdicts != ["delivered"]:
        p.append("verdicts %s, expected only delivered" % verdicts)
    overrun = [line for line in run.daemon.log_text().splitlines() if "event ring buffer full" in line]
    if p and overrun:
        p.append("the agent did not keep up with the load: %s" % overrun[0].strip())
    return p


class SlowDisk:
    """An ext4 file system (no journal) on a loop device, and a blkio (cgroup v1)
    cgroup whose processes may write to it at SLOW_BPS bytes a second: a flush by
    them is slow, a write to the page cache is not."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.image = os.path.join(tmp, "slow.img")
        self.mnt = os.path.join(tmp, "slow")
        self.loop = self.cgroup = None
        self.mounted = False

    def start(self):
        """None, or why this machine cannot make a slow disk."""
        blkio = "/sys/fs/cgroup/blkio"
        if not os.path.exists(os.path.join(blkio, "blkio.throttle.write_bps_device")):
            return "no blkio (cgroup v1) throttle at %s" % blkio
        with open(self.image, "wb") as f:
            f.truncate(64 << 20)
        r = subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "^has_journal", self.image], capture_output=True,
                           text=True)
        if r.returncode != 0:
            return "mkfs.ext4: %s" % r.stderr.strip()[-200:]
        r = subprocess.run(["losetup", "-f", "--show", self.image], capture_output=True, text=True)
        if r.returncode != 0:
            return "losetup: %s" % r.stderr.strip()[-200:]
        self.loop = r.stdout.strip()
        os.mkdir(self.mnt)
        r = subprocess.run(["mount", self.loop, self.mnt], capture_output=True, text=True)
        if r.returncode != 0:
            return "mount %s: %s" % (self.loop, r.stderr.strip()[-200:])
        self.mounted = True
        with open("/sys/block/%s/dev" % os.path.basename(self.loop)) as f:
            dev = f.read().strip()
        self.cgroup = os.path.join(blkio, "tlsguard-e2e-slow-%s" % secrets.token_hex(4))
        os.mkdir(self.cgroup)
        with open(os.path.join(self.cgroup, "blkio.throttle.write_bps_device"), "w") as f:
            f.write("%s %d\n" % (dev, SLOW_BPS))
        return None

    def join(self, pid):
        with open(os.path.join(self.cgroup, "cgroup.procs"), "w") as f:
            f.write(str(pid))

    def flush_time(self):
        """Seconds one append and fdatasync take in the throttled cgroup."""
        probe = ("import os, time; fd = os.open(%r, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600); "
                 "os.write(fd, b'x' * 600); t = time.monotonic(); os.fdatasync(fd); "
                 "print(time.monotonic() - t)" % os.path.join(self.mnt, "probe"))
        r = subprocess.run(["/bin/sh", "-c", 'echo $$ > "$1" && exec "$2" -c "$3"', "sh",
                            os.path.join(self.cgroup, "cgroup.procs"), PYTHON, probe],
                           capture_output=True, text=True, timeout=60)
        return float(r.stdout) if r.returncode == 0 else 0.0

    def stop(self):
        problems = []
        if self.cgroup and os.path.isdir(self.cgroup):
            try:
                os.rmdir(self.cgroup)  # empty by now: its processes were ours and are gone
            except OSError as e:
                problems.append("rmdir %s: %s" % (self.cgroup, e))
        if self.mounted and subprocess.run(["umount", self.mnt]).returncode != 0:
            problems.append("umount %s failed" % self.mnt)
        if self.loop and subprocess.run(["losetup", "-d", self.loop]).returncode != 0:
            problems.append("losetup -d %s failed" % self.loop)
        return problems


# One connection; per attempt MAIL, RCPT and DATA in one write (as Postfix pipelines
# them), their three replies, RSET and its reply: how long each attempt took.
HELD_CLIENT = r"""
import json, signal, socket, sys, time
signal.alarm(120)
host, sender, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.create_connection((host, 25), timeout=60)
f = s.makefile("rb")
def reply():
    while True:
        line = f.readline().decode()
        if not line or line[3:4] != "-":
            return line.strip()
reply()
s.sendall(b"EHLO client.audit.test\r\n")
reply()
out = {"times": [], "mail": []}
for i in range(n):
    t = time.monotonic()
    s.sendall(("MAIL FROM:<%s>\r\nRCPT TO:<r%d@held.audit.test>\r\nDATA\r\n" % (sender, i)).encode())
    out["mail"].append(reply())
    reply(); reply()
    s.sendall(b"RSET\r\n")
    reply()
    out["times"].append(time.monotonic() - t)
s.sendall(b"QUIT\r\n")
reply()
print(json.dumps(out), flush=True)
"""


def slow_flush_check(run):
    """A tlsguardd of its own whose audit file is on a slow disk (SlowDisk: a flush takes
    half a second or more): held attempts, one after the other, each answered by the agent
    and ending in a record, are each answered within SLOW_MAX s (the loop does not wait
    for the flushes), and every record is in the file once it exits. None when the slow
    disk cannot be made here (the case is skipped)."""
    disk = SlowDisk(run.tmp)
    run.suite.push(disk.stop)
    why = disk.start()
    if why:
        return None, why
    flush = disk.flush_time()
    if flush < SLOW_FLUSH_MIN:
        return None, "a flush in the throttled cgroup took %.3f s: the disk is not slow here" % flush
    from daemon import Daemon
    cgroup = run.suite.cgroup("tlsguard-e2e-audit-slow")
    audit = os.path.join(disk.mnt, "audit.jsonl")
    daemon = Daemon(run.args.tlsguardd, run.args.tlsguardctl, cgroup.path, os.path.join(run.tmp, "senders"),
                    os.path.join(run.tmp, "tlsguardd-slow.sock"), os.path.join(run.tmp, "tlsguardd-slow.log"))
    daemon.argv += ["--audit", audit, "-v"]
    run.suite.push(daemon.stop)
    daemon.start()
    disk.join(daemon.proc.pid)  # v1: every thread of it
    c = in_cgroup(cgroup, [PYTHON, "-c", HELD_CLIENT, MXS["held"][0], SLOW_SENDER, str(SLOW_ATTEMPTS)])
    run.suite.push(stop_proc, c)
    try:
        out, err = c.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        stop_proc(c)
        out, err = "", "timed out"
    t0 = time.monotonic()
    why = daemon.sigterm()  # the pending records are flushed before it exits
    stopped = time.monotonic() - t0
    daemon.proc = None  # stopped here, and checked: the cleanup only detaches
    p = [why] if why else []
    try:
        res = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return p + ["client: %r %s" % (out[-200:], err.strip()[-300:])], None
    info = "a flush took %.2f s; attempts took %s s; SIGTERM to exit %.2f s" % (
        flush, " ".join("%.3f" % x for x in res["times"]), stopped)
    if any(not m.startswith("550") for m in res["mail"]):
        p.append("MAIL replies %s, expected tlsguard's 550 each" % res["mail"])
    slow = [x for x in res["times"] if x > SLOW_MAX]
    if slow:
        p.append("%d of %d attempts took more than %.2f s (the loop waited for the disk?): %s" % (
            len(slow), len(res["times"]), SLOW_MAX, info))
    recs = [r for r in read_records(audit)[0] if r.get("sender") == SLOW_SENDER]
    if len(recs) != SLOW_ATTEMPTS or {r.get("verdict") for r in recs} != {"held-no-tls"}:
        p.append("%d records (verdicts %s) for %d held attempts" % (
            len(recs), sorted({r.get("verdict") for r in recs}), SLOW_ATTEMPTS))
    return p, info


def run_all(run, report):
    run.inject()
    outcomes = run.wait_postfix()
    run.wait_records({
        "tls13": lambda rs: len(rs) >= 1, "tls12": lambda rs: len(rs) >= 1, "plain": lambda rs: len(rs) >= 1,
        "held": lambda rs: len(rs) >= 1, "reuse": lambda rs: len(rs) >= 1,
        "weak": lambda rs: len(rs) >= len([c for c in run.mxs["weak"].connections()
                                           if "EHLO" in verbs(c, tls=True) or "STARTTLS" not in verbs(c)]),
    })
    # tlsproxy must be a member of Postfix B's cgroup (under the guarded one), as master's child.
    proxies = tlsproxy_pids(run.pfb.cgroup)
    report("tls13_three_rcpts", delivered_check(run, "tls13", outcomes.get("tls13")))
    report("tls12_delivered", delivered_check(run, "tls12", outcomes.get("tls12")))
    report("plaintext_delivered", delivered_check(run, "plain", outcomes.get("plain")))
    report("held_no_tls", held_no_tls_check(run, "held", outcomes.get("held")))
    report("held_weak_tls", held_weak_check(run, "weak", outcomes.get("weak")))
    p = [] if proxies else ["harness: no tlsproxy process in %s (members: %s)" % (
        run.pfb.cgroup.path, run.pfb.cgroup.pids())]
    if not any("tlsproxy" in line and MXS["reuse"][0] in line for line in run.pfb.log_lines()):
        p.append("harness: Postfix B logged no tlsproxy line about %s" % MXS["reuse"][0])
    report("tlsproxy_reuse", p + delivered_check(run, "reuse", outcomes.get("reuse")))

    # The _ex client, in a new second after every other record (ctl_audit_since cuts there).
    time.sleep(1.05 - (time.time() % 1.0))
    p = ssl_ex_imports()
    res, why = run_client(run, "ex", "tls", ["r1", "r2"])
    run.wait_records({"ex": lambda rs: len(rs) >= 1})
    report("ssl_ex_client", p + client_check(run, "ex", res, why, "tls"))
    report("latin1_greeting", latin1_check(run))
    report("record_soon_after_close", prompt_check(run))
    report("no_foreign_address", no_foreign_check(run))

    report("ctl_audit_print", ctl_print_check(run))
    report("ctl_audit_sender", ctl_sender_check(run))
    report("ctl_audit_since", ctl_since_check(run))
    report("ctl_audit_garbage", ctl_garbage_check(run))
    report("audit_sighup_reopen", sighup_check(run))
    report("audit_load_reopen_stop", load_reopen_stop_check(run))
    p, info = slow_flush_check(run)
    if p is None:
        run.suite.results.skip("audit_slow_flush", info)
    else:
        run.suite.results.report("audit_slow_flush", p, info=[info] if info and run.args.verbose else ())

    if run.args.verbose:
        for path in (run.audit_path + ".1", run.audit_path):
            print("    --- %s ---" % path)
            for r in run.records(path):
                print("    " + r["_line"])
        for key in MXS:
            print("    %s: %s" % (key, "; ".join(describe_conns(run.mxs[key]))))


# ------------------------------------------------------------------ main

def main(argv=None):
    args = harness.arg_parser(__doc__, keep_help="audit file, logs, MX records",
                              verbose_help="show the records, the MXs' view, logs").parse_args(argv)
    results = harness.Results()

    def report(name, problems):
        results.report(name, problems)
        if problems and args.verbose:
            for x in problems[5:]:
                print("    " + x)

    with harness.Run(results, keep=args.keep,
                     root="audit_run.py must run as root (cgroups, port 25, Postfix)") as suite:
        try:
            harness.require_tools(args.tlsguardd, args.tlsguardctl, postfix=True)
            tmp, cgroup = suite.workspace("tlsguard-e2e-audit", 0o755)
            child = Cgroup(os.path.join(cgroup.path, "postfix-reuse"))
            suite.push(child.remove)
            os.mkdir(child.path)
            jsonl = os.path.join(tmp, "mx.jsonl")
            mxs = {key: suite.started(TestMX(host, 25, name=key, jsonl_path=jsonl, tls=opts))
                   for key, (host, opts) in MXS.items()}
            suite.started(HostileMX(LATIN1_MX, 25, name="latin1", greeting=LATIN1_GREETING))
            mailboxes = ["%s" % s for s in SENDER.values()] + ["postmaster@mta.test"]
            pfa = PostfixInstance(os.path.join(tmp, "postfix-a"), cgroup,
                                  {DOMAINS[k]: "smtp:[%s]:25" % MXS[k][0] for k in ("tls13", "tls12", "plain",
                                                                                      "held", "weak")},
                                  MAILBOX_DOMAINS, mailboxes=mailboxes, extra_main=POSTFIX_MAIN)
            suite.push(pfa.stop)
            pfb = ReusePostfix(os.path.join(tmp, "postfix-b"), child,
                               {DOMAINS["reuse"]: "smtp:[%s]:25" % MXS["reuse"][0]}, MAILBOX_DOMAINS,
                               mailboxes=mailboxes, extra_main=dict(POSTFIX_MAIN, smtp_tls_connection_reuse="yes"))
            suite.push(pfb.stop)
            for pf in (pfa, pfb):
                os.makedirs(pf.root)
                pf.start()
            audit_path = os.path.join(tmp, "audit.jsonl")
            # A ring buffer of 4 MiB (1 MiB by default): audit_load_reopen_stop's load outran a
            # tlsguardd built with AddressSanitizer (three times slower) by a few dozen records.
            daemon = suite.daemon(args, cgroup, SENDERS_FILE, "--audit", audit_path, "-v",
                                  "--ringbuf-size", str(LOAD_RINGBUF))
            run = Run(args, tmp, cgroup, pfa, pfb, mxs, daemon, audit_path)
            run.suite = suite

            def kill_clients():
                for c in run.clients:
                    c.kill()
            suite.push(kill_clients)
        except (PostfixMissing, PostfixError, RuntimeError, OSError) as e:
            report("setup", [str(e)])
        else:
            with suite.guard():
                run_all(run, report)
            if args.verbose and results.failed:
                print(daemon.log_tail(60))
                for pf in (pfa, pfb):
                    print(pf.log_tail(40))
    return suite.finish()


if __name__ == "__main__":
    sys.exit(main())
