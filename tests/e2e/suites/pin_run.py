#!/usr/bin/python3
"""Fail closed, always: tlsguardd killed or stopped, Postfix keeps being guarded.

Usage (as root; builds nothing):
    /usr/bin/python3 tests/e2e/suites/pin_run.py [--tlsguardd build/tlsguardd]
        [--tlsguardctl build/tlsguardctl] [--keep] [-v]

Setup: a temp dir, a cgroup v2 directory, one recording test MX without
STARTTLS (mx.py) on 127.0.0.140:25, a private Postfix (postfix_env.py) whose
master runs in the cgroup, with ``queue_run_delay = 1s``,
``minimal_backoff_time = 2s``, ``maximal_backoff_time = 4s`` (a deferred mail
is tried again within seconds) and the smtp client's reply timeouts at 15s (a
flow held at the very moment of the kill waits for replies that nobody
sends; Postfix's defaults would make that 5 minutes), and tlsguardd started
by flags only, as README's "Running it" does: ``tlsguardd --cgroup DIR
--senders FILE --port 25 --socket SOCK --pin-dir PINS`` (daemon.py's
``Daemon``; no configuration file, no --pin: the kernel must keep enforcing
whichever way the daemon was started).  PINS is the run's own directory,
/sys/fs/bpf/tlsguard-pin-XXXXXXXX, so that other tlsguardd instances on the
host are left alone; every start logs to its own file.  Guaranteed senders:
``@guarded.test``; every mail has its own sender address, so "no MAIL FROM
of that sender at the MX" is exact, and no MAIL FROM of the whole domain may
reach the MX before tlsguard is detached.

Cases, in order, on one Postfix instance:
  1. pinned_bounce -- with tlsguardd running, a guaranteed sender is bounced
     as usual (status=bounced dsn=5.7.10 "TLS is required, but was not
     offered by host", one DSN, nothing at the MX); the sock_ops link is
     pinned under PINS, the maps in its generation directory PINS/L<digest>
     (pins() lists both); the agent did not "adopt" anything (it started
     fresh).
  1b. weak_session_across_kill -- a raw client in the cgroup opens a TLS 1.0
     session (Python's ssl: the uprobes tie it) to a second test MX
     (127.0.0.141, STARTTLS, TLS 1.0 only) and says EHLO inside it; the
     agent is SIGKILLed (its uprobes go with it); the client then writes a
     guaranteed MAIL FROM inside the same session: the write must fail and
     the MX must never see it (a write no uprobe licensed fails the flow).
     Then tlsguardd again, for the cases below.
  2. killed_fail_closed -- SIGKILL the agent (by pid); inject 4 guaranteed
     and 4 other senders' mails: no guaranteed MAIL/RCPT/DATA/body reaches
     the MX, each guaranteed mail is status=deferred, each other one is
     delivered exactly once; ``bpftool cgroup show CGROUP`` still lists
     tg_sockops while no tlsguardd of ours runs; the pins are still there.
  3. restart_adopts -- tlsguardd again: it logs "adopted the state pinned
     under PINS"; on Postfix's next attempt each deferred mail of case 2 is
     bounced with 550 5.7.10 and the TLS text (one DSN per message, never
     sent, nothing at the MX).  The time from the restart to each bounce is
     printed.  The pinned tg_injects (cookie -> slot of the agent's
     injection sockets) holds this agent's 256 sockets, each the one its
     slot names in tg_slots, and none of the killed agent's: without
     forgetting them at start, every restart would leave 256 more behind
     until the map is full.
  4. kill_mid_burst -- 20 mails, guaranteed and other alternating, injected
     one every 50 ms; SIGKILL the agent once some of them have a status and
     at least 8 are injected; restart 2 s after the last injection.  Every
     guaranteed mail ends bounced 5.7.10 with one DSN and nothing at the MX,
     every other one is delivered exactly once.  The split (done before the
     kill, deferred while down, ...) is printed, and a ``note:`` when a
     guaranteed flow diverted around the kill got no reply at all and
     waited for Postfix's smtp_mail_timeout (with the MX connection's timing
     relative to the SIGKILL): not a failure here (nothing leaks), but
     Postfix suspends the destination meanwhile.
  5. stopped_fail_closed, 6. restart_adopts_after_stop -- cases 2 and 3
     with SIGTERM instead of SIGKILL: tlsguardd exits 0 and says the kernel
     keeps enforcing, and everything of case 2 holds (a stop is no
     detach).
Before case 7 the check ``no_guaranteed_mail_from`` asserts that no MAIL
FROM of @guarded.test reached the MX in cases 1-6.
  7. detach_running -- ``tlsguardctl --pin-dir PINS detach`` with the
     agent running: exit 0, the agent exits 0, PINS is gone, ``bpftool
     cgroup show CGROUP`` lists nothing, and a guaranteed sender's mail is
     then delivered to the MX (tlsguard is gone: mail flows unguarded).
  8. detach_after_kill -- tlsguardd, SIGKILL, ``tlsguardctl --pin-dir PINS
     detach`` (no agent answers): exit 0, the pins are gone, nothing
     attached to the cgroup, and a guaranteed sender is delivered.

On a tlsguardd that detaches when it exits unless told to pin (before
pinning was always on), cases 2, 4, 5 and 6 fail: the guaranteed mail
reaches the MX in clear once the agent is gone.

``tlsguardctl`` is always given ``--socket SOCK`` (the run's own socket): a
bare ``tlsguardctl detach`` would ask any tlsguardd on the default socket
(another suite's) to detach.

Output: ``PASS name`` / ``FAIL name: why`` per case (indented detail lines
where useful; with -v, failures are followed by the tlsguardd logs, the
mails' Postfix log lines, the MX record and ``bpftool map dump pinned
PINS/L*/tg_flows``), then exactly ``N passed, M failed`` alone on a line; exit
status 0 only if none failed (2 on a usage error).  Everything created is
removed in a ``finally``, also on Ctrl-C or SIGTERM: tlsguardd and the pins
(``tlsguardctl --socket SOCK --pin-dir PINS detach``, SIGKILL by pid if it
does not exit; the run checks that PINS is gone and nothing is attached to
the cgroup at the end, ``cleanup`` case), Postfix, the MX, the cgroup, and
the temp dir unless --keep.
"""

import concurrent.futures
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "fixtures"))
sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree

import harness  # noqa: E402
from mx import TestMX, TLSOptions  # noqa: E402
from postfix_env import PostfixError, PostfixInstance, PostfixMissing, agent_gone_settings, bounce_report  # noqa: E402
from daemon import TLS_DSN, TLS_TEXT, Daemon, attached, normalize, pin_dir, run_cmd  # noqa: E402

PIN_DIR = pin_dir("pin")
ADOPT_TEXT = "adopted the state pinned under %s" % PIN_DIR
BPFTOOL = "bpftool"
SLOTS = 256  # tlsguardd's injection slots by default (--slots)

MX_HOST = "127.0.0.140"
WEAK_MX_HOST = "127.0.0.141"  # STARTTLS, TLS 1.0 only

# The raw client of weak_session_across_kill: it runs inside the cgroup and
# says READY once EHLO was answered inside TLS 1.0, waits for a line on its
# standard input (the agent is killed meanwhile), then writes a guaranteed
# MAIL FROM in the session and prints what became of it.
WEAK_CLIENT = r"""
import socket, ssl, sys, warnings
host, sender = sys.argv[1], sys.argv[2]
s = socket.create_connection((host, 25), timeout=10)
f = s.makefile("rb")
def reply(f):
    while True:
        line = f.readline()
        if not line or line[3:4] != b"-":
            return line
reply(f)
s.sendall(b"EHLO weak.client.test\r\n"); reply(f)
s.sendall(b"STARTTLS\r\n"); r = reply(f)
if not r.startswith(b"220"):
    print("NOTLS %r" % r, flush=True); sys.exit(1)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1
ctx.set_ciphers("ALL:@SECLEVEL=0")
t = ctx.wrap_socket(s)
tf = t.makefile("rb")
t.sendall(b"EHLO weak.client.test\r\n"); reply(tf)
print("READY %s %d" % (t.version(), t.getsockname()[1]), flush=True)
sys.stdin.readline()
try:
    t.sendall(b"MAIL FROM:<%s>\r\n" % sender.encode())
    r = reply(tf)
    print("ANSWERED %r" % r, flush=True)
except (OSError, ssl.SSLError) as e:
    print("CUT %s" % type(e).__name__, flush=True)
"""
RCPT_DOMAIN = "plain.test"
TRANSPORTS = {RCPT_DOMAIN: "smtp:[%s]:25" % MX_HOST}
GUARANTEED_DOMAIN = "guarded.test"
OTHER_DOMAIN = "mta.test"
SENDERS_FILE = "# tlsguard pin_run: every sender of this domain is guaranteed\n@%s\n" % GUARANTEED_DOMAIN

POSTFIX_EXTRA = agent_gone_settings()

TIMEOUT_STATUS = 40.0
TIMEOUT_BOUNCE = 20.0
TIMEOUT_EXIT = 15.0


# ------------------------------------------------------------------ helpers

class PinDaemon(Daemon):
    """daemon.py's Daemon (flags only) on the run's pin dir; SIGKILL or SIGTERM by pid."""

    def __init__(self, args, cgroup, senders_path, sock, log_path):
        super().__init__(args.tlsguardd, args.tlsguardctl, cgroup, senders_path, sock, log_path, pins=PIN_DIR)

    def end(self, sig):
        """Send sig (by pid) and wait; the exit status."""
        if self.alive():
            os.kill(self.proc.pid, sig)
        if self.proc is not None:
            self.proc.wait(TIMEOUT_EXIT)
            return self.proc.returncode
        return None


def bpftool_cgroup(path):
    """(sock_ops program names attached to the cgroup, raw output)."""
    rc, out, err = run_cmd([BPFTOOL, "cgroup", "show", path])
    names = [ln.split()[-1] for ln in out.splitlines()
             if any(f in ("sock_ops", "cgroup_sock_ops") for f in ln.split())]
    return names, ("exit %s: %s%s" % (rc, out, err)).strip()


def pins():
    """The pins under PIN_DIR: the links at its top, the maps in the
    generation directory (L<digest>) of their layout."""
    try:
        top = os.listdir(PIN_DIR)
    except FileNotFoundError:
        return None
    out = []
    for name in top:
        path = os.path.join(PIN_DIR, name)
        out += os.listdir(path) if name.startswith("L") and os.path.isdir(path) else [name]
    return sorted(out)


def pinned_flows():
    for name in sorted(os.listdir(PIN_DIR)) if os.path.isdir(PIN_DIR) else []:
        path = os.path.join(PIN_DIR, name, "tg_flows")
        if os.path.exists(path):
            return path
    return None


def pinned_map(name):
    for gen in sorted(os.listdir(PIN_DIR)) if os.path.isdir(PIN_DIR) else []:
        path = os.path.join(PIN_DIR, gen, name)
        if os.path.exists(path):
            return path
    return None


def map_entries(path):
    """[(key bytes, value bytes)] of a pinned map, or a str saying why not."""
    import json
    rc, out, err = run_cmd([BPFTOOL, "-j", "map", "dump", "pinned", path])
    if rc != 0:
        return "bpftool map dump pinned %s: exit %s: %s" % (path, rc, err.strip())
    try:
        return [(bytes(int(b, 16) for b in e["key"]), bytes(int(b, 16) for b in e["value"]))
                for e in json.loads(out)]
    except (ValueError, KeyError, TypeError) as e:
        return "bpftool map dump pinned %s: unreadable (%s)" % (path, e)


def check_injects(p, info, slots):
    """tg_injects holds the running agent's injection sockets, and only
    them: one per slot, each the near end its slot names in tg_slots; the
    previous agent's sockets died with it and are forgotten."""
    inj, sl = pinned_map("tg_injects"), pinned_map("tg_slots")
    if not inj or not sl:
        p.append("no pinned tg_injects or tg_slots under %s" % PIN_DIR)
        return
    # a slot renewed between the two dumps differs once: read again
    for _ in range(10):
        injects, slotv = map_entries(inj), map_entries(sl)
        for what in (injects, slotv):
            if isinstance(what, str):
                p.append(what)
                return
        have = {int.from_bytes(k, "little"): int.from_bytes(v, "little") for k, v in injects}
        want = {}
        for k, v in slotv:
            idx = int.from_bytes(k, "little")
            if idx < slots:
                want[int.from_bytes(v[8:16], "little")] = idx
        if have == want:
            break
        time.sleep(0.3)
    if have != want:
        stale = sorted(set(have) - set(want))
        p.append("tg_injects has %d entries, want the %d injection sockets of tg_slots (%d not among "
                 "them, e.g. %s; %d missing)" % (len(have), len(want), len(stale), stale[:3],
                                                len(set(want) - set(have))))
    else:
        info.append("tg_injects: the %d injection sockets of this agent, no other" % len(have))


def flows_dump():
    path = pinned_flows()
    if path is None:
        return "(no tg_flows under %s)" % PIN_DIR
    rc, out, err = run_cmd([BPFTOOL, "map", "dump", "pinned", path])
    return (out + err).strip()


def our_tlsguardd_pids(sock):
    """tlsguardd processes whose command line names our control socket."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"tlsguardd") and sock.encode() in argv:
            found.append(int(d))
    return found


class Ctx:
    def __init__(self, args, tmp, cgroup, pf, mx, senders_path):
        self.args, self.tmp, self.cgroup, self.pf, self.mx = args, tmp, cgroup, pf, mx
        self.senders_path = senders_path
        self.sock = os.path.join(tmp, "tlsguardd.sock")
        self.run_id = secrets.token_hex(3)
        self.daemons = []  # every tlsguardd started, in order
        self.n = 0

    @property
    def agent(self):
        return self.daemons[-1] if self.daemons else None

    def start_agent(self):
        d = PinDaemon(self.args, self.cgroup.path, self.senders_path, self.sock,
                      os.path.join(self.tmp, "tlsguardd-%d.log" % (len(self.daemons) + 1)))
        self.daemons.append(d)
        d.start()
        return d

    def ctl(self, *cmd):
        return run_cmd([self.args.tlsguardctl, "--socket", self.sock, *cmd], timeout=30)

    def detach(self):
        """The deliberate removal: ``tlsguardctl --socket SOCK --pin-dir PINS detach``."""
        return self.ctl("--pin-dir", PIN_DIR, "detach")

    def send(self, guaranteed, tag):
        """One mail from a fresh sender (guaranteed or not) to a fresh recipient at the MX."""
        self.n += 1
        local = "%s%d-%s" % ("g" if guaranteed else "n", self.n, self.run_id)
        sender = "%s@%s" % (local, GUARANTEED_DOMAIN if guaranteed else OTHER_DOMAIN)
        rcpt = "%s-%d.%s@%s" % (tag, self.n, self.run_id, RCPT_DOMAIN)
        return self.pf.send(sender, [rcpt], subject=tag)

    # ---- Postfix log: every status of every mail, in order

    def history(self, mails):
        """{marker: (queue_id, [Status...])} from the whole log."""
        out = {m.marker: [None, []] for m in mails}
        for m, qid, _, status in self.pf.mail_log(mails):
            if status is None:
                out[m.marker][0] = qid
            else:
                out[m.marker][1].append(status)
        return {k: (v[0], v[1]) for k, v in out.items()}

    def wait(self, mails, done, timeout, step=0.1):
        """Poll the log until done(history) or timeout; return the last history."""
        deadline = time.monotonic() + timeout
        while True:
            h = self.history(mails)
            if done(h) or time.monotonic() >= deadline:
                return h
            time.sleep(step)

    # ---- the MX record

    def transactions(self):
        return [(c, t) for c in self.mx.connections() for t in c.transactions()]

    def carriers(self, mail):
        return [(c, t) for c, t in self.transactions()
                if t.data is not None and any(mail.marker in ln for ln in t.data)]

    def mx_traces(self, mail):
        """Anything of this mail's transaction at the MX: its MAIL FROM, RCPT, marker."""
        sender = normalize(mail.sender)
        rcpts = {"<%s>" % r.lower() for r in mail.recipients}
        found = []
        for c in self.mx.connections():
            for ln in c.lines():
                low = ln.lower()
                if ((low.startswith("mail from:") and sender in low) or mail.marker in ln
                        or (low.startswith("rcpt to:") and any(r in low for r in rcpts))):
                    found.append("conn#%d %r" % (c.id, ln[:70]))
        return found

    def guaranteed_mail_from(self):
        return ["conn#%d %r" % (c.id, ln[:70]) for c in self.mx.connections() for ln in c.lines()
                if ln.lower().startswith("mail from:") and ("@%s" % GUARANTEED_DOMAIN) in ln.lower()]


def last(h, marker):
    sts = h[marker][1]
    return sts[-1] if sts else None


def final(st):
    return st is not None and st.status in ("sent", "bounced", "expired")


def check_bounced(ctx, h, mail, bounces):
    """A guaranteed mail: bounced 5.7.10 with the TLS text, never sent, one DSN, nothing at the MX."""
    p, who = [], "%s <%s>" % (mail.marker, mail.sender)
    qid, sts = h[mail.marker]
    if qid is None:
        return ["%s: never picked up" % who]
    st = sts[-1] if sts else None
    if st is None:
        p.append("%s: no status in the Postfix log" % who)
    elif st.status != "bounced" or st.dsn != TLS_DSN or TLS_TEXT not in st.text:
        p.append("%s: status=%s dsn=%s (%s), expected bounced %s %r" % (who, st.status, st.dsn, st.text,
                                                                          TLS_DSN, TLS_TEXT))
    if any(s.status == "sent" for s in sts):
        p.append("%s: status=sent in the log" % who)
    dsns = bounces.get(mail.marker, [])
    if len(dsns) != 1:
        p.append("%s: %d DSNs in the sender's mailbox, expected 1" % (who, len(dsns)))
    for msg in dsns:
        rep = " ".join(bounce_report(msg).split())
        if TLS_TEXT not in rep:
            p.append("%s: DSN lacks %r" % (who, TLS_TEXT))
        if "<%s>" % mail.recipients[0].lower() not in rep.lower():
            p.append("%s: DSN does not name <%s>" % (who, mail.recipients[0]))
    traces = ctx.mx_traces(mail)
    if traces:
        p.append("%s: LEAK at the MX: %s" % (who, "; ".join(traces[:3])))
    return p


def check_delivered(ctx, h, mail):
    """Sent, exactly one transaction at the MX with that MAIL FROM and RCPT, no DSN."""
    p, who = [], "%s <%s>" % (mail.marker, mail.sender)
    qid, sts = h[mail.marker]
    st = sts[-1] if sts else None
    if qid is None:
        return ["%s: never picked up" % who]
    if st is None or st.status != "sent":
        p.append("%s: %s, expected sent" % (who, "no status" if st is None else "status=%s (%s)" % (
            st.status, st.text)))
    carriers = ctx.carriers(mail)
    if len(carriers) != 1:
        p.append("%s: body at the MX %d times, expected once" % (who, len(carriers)))
    for c, t in carriers:
        if normalize(t.sender) != normalize(mail.sender):
            p.append("%s: MX saw MAIL FROM:<%s>" % (who, t.sender))
        if [r.lower() for r in t.recipients] != [r.lower() for r in mail.recipients]:
            p.append("%s: MX saw RCPT %s" % (who, t.recipients))
    if ctx.pf.bounces_for(mail.sender, mail.marker):
        p.append("%s: unexpected DSN" % who)
    return p


def collect_bounces(ctx, h, mails, timeout=TIMEOUT_BOUNCE):
    """DSNs per marker for the mails the log says bounced (waits for them, then settles)."""
    wanted = [(m.sender, m.marker) for m in mails if any(s.status == "bounced" for s in h[m.marker][1])]
    ctx.pf.wait_bounces(wanted, timeout)
    time.sleep(0.5)  # a second DSN would show up now
    return {m.marker: ctx.pf.bounces_for(m.sender, m.marker) for m in mails}


def diagnostics(ctx, mails):
    """What happened, for a failed case: tlsguardd logs, Postfix lines, MX record, tg_flows."""
    out = []
    for i, d in enumerate(ctx.daemons, 1):
        rc = d.proc.returncode if d.proc is not None else None
        out.append("--- tlsguardd #%d (pid %s, %s) %s" % (
            i, d.proc.pid if d.proc else "-", "running" if d.alive() else "exit %s" % rc, d.log_path))
        out += ["  " + ln for ln in d.log_text().splitlines()[-25:]]
    h = ctx.history(mails)
    qids = {q for q, _ in h.values()} - {None}
    out.append("--- Postfix log lines of these mails")
    out += ["  " + ln for ln in ctx.pf.log_lines() if any(q in ln for q in qids)][-60:]
    out.append("--- MX record (commands per connection)")
    for c in ctx.mx.connections():
        out.append("  conn#%d %s" % (c.id, " | ".join(x[:50] for x in c.commands())[:400]))
    out.append("--- bpftool map dump pinned %s" % pinned_flows())
    out += ["  " + ln for ln in flows_dump().splitlines()[:80]]
    return out


# ------------------------------------------------------------------ cases

def case_pinned_bounce(ctx, info):
    p = []
    agent = ctx.start_agent()
    mail = ctx.send(True, "pinned")
    h = ctx.wait([mail], lambda h: final(last(h, mail.marker)), TIMEOUT_STATUS)
    bounces = collect_bounces(ctx, h, [mail])
    p += check_bounced(ctx, h, mail, bounces)
    have = pins()
    if have is None:
        p.append("%s does not exist with tlsguardd running" % PIN_DIR)
    else:
        info.append("pins: %s" % " ".join(have))
        for want in ("tg_flows", "tg_socks", "tg_sockops_link"):
            if want not in have:
                p.append("%s/%s is missing" % (PIN_DIR, want))
    names, raw = bpftool_cgroup(ctx.cgroup.path)
    if "tg_sockops" not in names:
        p.append("bpftool cgroup show does not list tg_sockops: %s" % raw)
    if ADOPT_TEXT in agent.log_text():
        p.append("a fresh tlsguardd says it adopted a pinned state")
    return p, [mail]


def case_weak_session_across_kill(ctx, info, weak_mx):
    p = []
    agent = ctx.agent
    if agent is None or not agent.alive():
        return ["no tlsguardd running to kill: nothing tested"], []
    ctx.n += 1
    sender = "w%d-%s@%s" % (ctx.n, ctx.run_id, GUARANTEED_DOMAIN)
    script = 'echo $$ > "$1" && exec /usr/bin/python3 -c "$2" "$3" "$4"'
    client = subprocess.Popen(["/bin/sh", "-c", script, "sh", ctx.cgroup.procs_file, WEAK_CLIENT, WEAK_MX_HOST,
                               sender], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True)
    try:
        ready = client.stdout.readline().strip()
        if not ready.startswith("READY "):
            client.kill()
            return ["the client did not open a TLS 1.0 session: %r %s" % (
                ready, client.stderr.read()[-300:])], []
        info.append("client: %s" % ready)
        rc = agent.kill9()
        info.append("tlsguardd pid %d killed (SIGKILL): exit %s" % (agent.proc.pid, rc))
        client.stdin.write("\n")
        client.stdin.flush()
        try:
            out, err = client.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            client.kill()
            out, err = client.communicate()
        out = out.strip()
        info.append("client: %s" % (out or "(nothing) %s" % err.strip()[-200:]))
        if not out.startswith("CUT"):
            p.append("the guaranteed MAIL inside TLS 1.0 was not cut after the agent died: %s" % (out or err[-200:]))
    finally:
        if client.poll() is None:
            client.kill()  # by pid: our own child
            client.wait(5)
    time.sleep(0.3)
    leaks = [x for c in weak_mx.connections() for x in c.lines() if sender in x]
    if leaks:
        p.append("LEAK at the TLS 1.0 MX: %s" % "; ".join(leaks[:3]))
    ctx.start_agent()
    return p, []


def case_killed_fail_closed(ctx, info, state, sig=signal.SIGKILL):
    p = []
    agent = ctx.agent
    if agent is None or not agent.alive():
        return ["no tlsguardd running to end (%s): nothing tested" % (
            "never started" if agent is None else "exit %s" % agent.proc.returncode)], []
    rc = agent.end(sig)
    info.append("tlsguardd pid %d ended by %s: exit %s" % (agent.proc.pid, sig.name, rc))
    if sig == signal.SIGTERM:
        if rc != 0:
            p.append("tlsguardd exited %s on SIGTERM, expected 0%s" % (rc, agent.log_tail()))
        if "the kernel keeps enforcing" not in agent.log_text():
            p.append("tlsguardd did not say the kernel keeps enforcing%s" % agent.log_tail())
    if our_tlsguardd_pids(ctx.sock):
        p.append("a tlsguardd of ours still runs: %s" % our_tlsguardd_pids(ctx.sock))
    g, n = [], []
    for _ in range(4):  # interleaved, so that both share connections and queue runs
        g.append(ctx.send(True, "down"))
        n.append(ctx.send(False, "down"))
    mails = g + n

    def done(h):
        return (all(any(s.status == "deferred" for s in h[m.marker][1]) or final(last(h, m.marker)) for m in g)
                and all(final(last(h, m.marker)) for m in n))
    h = ctx.wait(mails, done, TIMEOUT_STATUS)
    for m in g:
        sts, who = h[m.marker][1], "%s <%s>" % (m.marker, m.sender)
        if not sts:
            p.append("%s: no status while the agent is down, expected deferred" % who)
        elif sts[-1].status != "deferred":
            p.append("%s: status=%s (%s) while the agent is down, expected deferred" % (
                who, sts[-1].status, sts[-1].text))
        traces = ctx.mx_traces(m)
        if traces:
            p.append("%s: LEAK at the MX: %s" % (who, "; ".join(traces[:3])))
    texts = sorted({s.text for m in g for s in h[m.marker][1] if s.status == "deferred"})
    info += ["guaranteed deferred: %s" % t for t in texts[:4]]
    for m in n:
        p += check_delivered(ctx, h, m)
    ntexts = sorted({s.text for m in n for s in h[m.marker][1] if s.status == "deferred"})
    info += ["other sender deferred on the way (then delivered): %s" % t for t in ntexts[:3]]
    names, raw = bpftool_cgroup(ctx.cgroup.path)
    running = our_tlsguardd_pids(ctx.sock)
    if running:
        p.append("a tlsguardd of ours runs (%s): not the case under test" % running)
    if "tg_sockops" not in names:
        p.append("with no tlsguardd running, bpftool cgroup show does not list tg_sockops: %s" % raw)
    else:
        info.append("no tlsguardd of ours running; bpftool cgroup show: sock_ops %s" % " ".join(names))
    if pins() is None:
        p.append("%s vanished after %s" % (PIN_DIR, sig.name))
    state["deferred"] = g
    return p, mails


def case_restart_adopts(ctx, info, state):
    p = []
    g = state.get("deferred", [])
    t0 = time.monotonic()
    agent = ctx.start_agent()
    t_ready = time.monotonic() - t0
    seen = {}
    deadline = time.monotonic() + TIMEOUT_STATUS
    while time.monotonic() < deadline:
        h = ctx.history(g)
        now = time.monotonic()
        for m in g:
            st = last(h, m.marker)
            if m.marker not in seen and final(st):
                seen[m.marker] = now - t0
        if len(seen) == len(g):
            break
        time.sleep(0.05)
    h = ctx.history(g)
    if ADOPT_TEXT not in agent.log_text():
        p.append("the restarted tlsguardd did not log %r" % ADOPT_TEXT)
    else:
        info.append("tlsguardd #%d: %s" % (len(ctx.daemons), next(
            ln.strip() for ln in agent.log_text().splitlines() if ADOPT_TEXT in ln)))
    bounces = collect_bounces(ctx, h, g)
    for m in g:
        p += check_bounced(ctx, h, m, bounces)
    check_injects(p, info, SLOTS)
    if seen:
        times = sorted(seen.values())
        info.append("restart -> bounce: first %.2fs, last %.2fs for %d mails (agent ready %.2fs after "
                    "the start)" % (times[0], times[-1], len(times), t_ready))
    attempts = [sum(1 for s in h[m.marker][1] if s.status == "deferred") for m in g]
    info.append("deferrals before the bounce, per mail: %s" % attempts)
    return p, g


def case_kill_mid_burst(ctx, info):
    p = []
    agent = ctx.agent
    if agent is None or not agent.alive():
        return ["no tlsguardd running to kill (%s): nothing tested" % (
            "never started" if agent is None else "exit %s" % agent.proc.returncode)], []
    mails, lock = [], threading.Lock()
    stop = threading.Event()

    def inject():
        for i in range(20):
            if stop.is_set():
                return
            m = ctx.send(i % 2 == 0, "burst")
            with lock:
                mails.append(m)
            time.sleep(0.05)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        fut = pool.submit(inject)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not fut.done():
            with lock:
                snap = list(mails)
            if len(snap) >= 8 and any(ctx.history(snap)[m.marker][1] for m in snap):
                break
            time.sleep(0.02)
        with lock:
            snap = list(mails)
        h = ctx.history(snap)
        before = {m.marker: last(h, m.marker) for m in snap}
        sig_wall = time.time()
        agent.kill9()
        killed_at, killed_wall = time.monotonic(), time.time()
        try:
            fut.result(timeout=60)
        except Exception as e:  # noqa: BLE001 - reported as the case's problem
            stop.set()
            return ["injection failed: %s: %s" % (type(e).__name__, e)], list(mails)
    n_done = sum(1 for st in before.values() if final(st))
    n_status = sum(1 for st in before.values() if st is not None)
    info.append("SIGKILL after %d of 20 injected; %d of them had a status, %d final" % (
        len(before), n_status, n_done))
    time.sleep(2.0)
    h_down = ctx.history(mails)
    ctx.start_agent()
    restarted = time.monotonic()
    if ADOPT_TEXT not in ctx.agent.log_text():
        p.append("the restarted tlsguardd did not log %r" % ADOPT_TEXT)
    g = [m for m in mails if m.sender.endswith("@" + GUARANTEED_DOMAIN)]
    n = [m for m in mails if m not in g]
    h = ctx.wait(mails, lambda h: all(final(last(h, m.marker)) for m in mails), TIMEOUT_STATUS)
    bounces = collect_bounces(ctx, h, g)
    for m in g:
        p += check_bounced(ctx, h, m, bounces)
    for m in n:
        p += check_delivered(ctx, h, m)
    # How the guaranteed mails went.
    split = {"bounced before the kill": 0, "deferred while down, bounced after restart": 0,
             "not tried while down, bounced after restart": 0, "other": 0}
    for m in g:
        st_before = before.get(m.marker)
        down = [s for s in h_down[m.marker][1] if final(s) or s.status == "deferred"]
        if final(st_before) and st_before.status == "bounced":
            split["bounced before the kill"] += 1
        elif any(s.status == "deferred" for s in down) and last(h, m.marker) and \
                last(h, m.marker).status == "bounced":
            split["deferred while down, bounced after restart"] += 1
        elif last(h, m.marker) and last(h, m.marker).status == "bounced":
            split["not tried while down, bounced after restart"] += 1
        else:
            split["other"] += 1
    info.append("guaranteed (%d): %s" % (len(g), ", ".join("%s %d" % kv for kv in split.items() if kv[1])))
    for label, group in (("guaranteed", g), ("other senders'", n)):
        texts = sorted({s.text for m in group for s in h[m.marker][1] if s.status == "deferred"})
        k = sum(1 for m in group if any(s.status == "deferred" for s in h[m.marker][1]))
        if k:
            info.append("%s mail deferred on the way: %d of %d (%s)" % (label, k, len(group), "; ".join(texts)))
    # A session of its own that timed out (not "delivery temporarily suspended: ..." citing another).
    stalled = [m for m in g if any(s.status == "deferred" and s.text.startswith("conversation with")
                                   and "timed out" in s.text for s in h[m.marker][1])]
    if stalled:
        info.append("note: %d guaranteed flow(s) diverted around the kill got no reply until Postfix's "
                    "timeout (smtp_mail_timeout: %s here, 300s by default; the restarted agent did not "
                    "release them), and Postfix suspended the destination meanwhile: %s" % (
                        len(stalled), POSTFIX_EXTRA["smtp_mail_timeout"],
                        ", ".join("%s <%s>" % (m.marker, m.sender) for m in stalled)))
        long_lived = []
        for c in ctx.mx.connections():
            ev = c.snapshot()
            if ev and ev[-1].kind == "close" and ev[-1].t - ev[0].t >= 5:
                long_lived.append("conn#%d opened %+.2fs after SIGKILL (the agent was reaped %.2fs after "
                                  "it), verbs %s, closed after %.1fs (%s)" % (
                                      c.id, ev[0].t - sig_wall, killed_wall - sig_wall, c.verbs(),
                                      ev[-1].t - ev[0].t, ev[-1].data))
        info += ["  MX: %s" % x for x in long_lived]
    info.append("kill -> restart %.1fs; all final %.1fs after the restart" % (
        restarted - killed_at, time.monotonic() - restarted))
    return p, mails


def detached_check(ctx, p, when, tag):
    """After detach: no pins, nothing attached to the cgroup (``when`` ends that
    problem's text), and a guaranteed mail (``tag``) delivered.  Returns what
    bpftool printed and the mail."""
    if pins() is not None:
        p.append("%s still exists after detach: %s" % (PIN_DIR, pins()))
    names, raw = bpftool_cgroup(ctx.cgroup.path)
    if names:
        p.append("bpftool cgroup show still lists %s%s: %s" % (names, when, raw))
    left = [x for x in attached(ctx.cgroup.path) if x.startswith("tg_")]
    if left:
        p.append("still attached to the cgroup%s: %s" % (when, ", ".join(left)))
    mail = ctx.send(True, tag)
    h = ctx.wait([mail], lambda h: final(last(h, mail.marker)), TIMEOUT_STATUS)
    p += check_delivered(ctx, h, mail)
    return raw, mail


def case_detach_running(ctx, info):
    p = []
    agent = ctx.agent
    if not agent.alive():
        return ["no tlsguardd running before detach (exit %s)%s" % (agent.proc.returncode, agent.log_tail())], []
    rc, out, err = ctx.detach()
    if rc != 0:
        p.append("tlsguardctl detach: exit %s: %s%s" % (rc, out, err))
    try:
        arc = agent.proc.wait(TIMEOUT_EXIT)
        if arc != 0:
            p.append("tlsguardd exited with %s after detach%s" % (arc, agent.log_tail()))
    except subprocess.TimeoutExpired:
        p.append("tlsguardd still runs %ds after detach" % TIMEOUT_EXIT)
    raw, mail = detached_check(ctx, p, "", "detached")
    if not p:
        info.append("agent exited %s; no pins; bpftool cgroup show: %r; guaranteed mail delivered" % (
            agent.proc.returncode, raw.replace("exit 0:", "").strip()))
    return p, [mail]


def case_detach_after_kill(ctx, info):
    p = []
    agent = ctx.start_agent()
    if pins() is None:
        p.append("no %s with tlsguardd running" % PIN_DIR)
    rc9 = agent.kill9()
    names, raw = bpftool_cgroup(ctx.cgroup.path)
    if "tg_sockops" not in names or pins() is None:
        p.append("after SIGKILL (exit %s): pins %s, cgroup %s" % (rc9, pins(), raw))
    rc, out, err = ctx.detach()
    if rc != 0:
        p.append("tlsguardctl detach with no agent: exit %s: %s%s" % (rc, out, err))
    raw, mail = detached_check(ctx, p, " after detach", "detached2")
    if not p:
        info.append("SIGKILL exit %s; detach exit 0 with no agent; no pins; nothing attached; "
                    "guaranteed mail delivered" % rc9)
    return p, [mail]


def queue_empty(pf):
    r = subprocess.run(["/usr/sbin/postqueue", "-c", pf.conf, "-j"], capture_output=True, text=True, timeout=20)
    return [ln for ln in r.stdout.splitlines() if ln.strip()]


# ------------------------------------------------------------------ main

def main(argv=None):
    args = harness.arg_parser(__doc__, keep_help="logs, queue, mailboxes",
                              verbose_help="show diagnostics of failed cases").parse_args(argv)
    results = harness.Results(shown=6)

    def report(name, problems, info=(), diag=None):
        results.report(name, problems, info)
        if problems and args.verbose and diag:
            for line in diag():
                print("    " + line, flush=True)

    with harness.Run(results, keep=args.keep,
                     root="pin_run.py must run as root (cgroups, bpffs, port 25, Postfix)") as suite:
        try:
            harness.require_tools(args.tlsguardd, args.tlsguardctl, postfix=True)
            if shutil.which(BPFTOOL) is None:
                raise RuntimeError("bpftool is missing (apt-get install bpftool)")
            tmp, cgroup = suite.workspace("tlsguard-pin", 0o755)
            mx = suite.started(TestMX(MX_HOST, 25, name="plain", jsonl_path=os.path.join(tmp, "mx.jsonl")))
            weak_mx = suite.started(TestMX(WEAK_MX_HOST, 25, name="tls10", tls=TLSOptions(version="1.0")))
            pf = suite.postfix(PostfixInstance(os.path.join(tmp, "postfix"), cgroup, TRANSPORTS,
                                               [OTHER_DOMAIN, GUARANTEED_DOMAIN], mailboxes=["postmaster@mta.test"],
                                               extra_main=POSTFIX_EXTRA))
            senders_path = suite.write("senders", SENDERS_FILE)
            ctx = None

            def unpin():
                """Every tlsguardd we started gone, and the pins (ours: PIN_DIR did not exist) removed."""
                problems = []
                if ctx is not None:
                    agent = ctx.agent
                    if agent is not None and agent.alive():
                        rc, out, err = ctx.detach()
                        try:
                            agent.proc.wait(TIMEOUT_EXIT)
                        except subprocess.TimeoutExpired:
                            problems.append("tlsguardd pid %d did not exit after detach (SIGKILL)" % agent.proc.pid)
                            agent.kill9()
                    for d in ctx.daemons:  # every one we started is gone
                        if d.alive():
                            d.kill9()
                if os.path.lexists(PIN_DIR):
                    sock = ctx.sock if ctx is not None else os.path.join(tempfile.gettempdir(), "tlsguard-pin-nosock")
                    rc, out, err = run_cmd([args.tlsguardctl, "--socket", sock, "--pin-dir", PIN_DIR, "detach"])
                    if rc != 0:
                        problems.append("tlsguardctl detach: exit %s: %s%s" % (rc, out, err))
                if os.path.lexists(PIN_DIR):
                    problems.append("%s still exists" % PIN_DIR)
                left = [x for x in attached(cgroup.path) if x.startswith("tg_")]
                if left:
                    problems.append("still attached to %s: %s" % (cgroup.path, ", ".join(left)))
                return problems
            suite.push(unpin)
            ctx = Ctx(args, tmp, cgroup, pf, mx, senders_path)
        except (PostfixMissing, PostfixError, RuntimeError, OSError) as e:
            report("setup", [str(e)])
        else:
            state, upto4 = {}, []
            steps = [
                ("pinned_bounce", lambda info: case_pinned_bounce(ctx, info)),
                ("weak_session_across_kill", lambda info: case_weak_session_across_kill(ctx, info, weak_mx)),
                ("killed_fail_closed", lambda info: case_killed_fail_closed(ctx, info, state)),
                ("restart_adopts", lambda info: case_restart_adopts(ctx, info, state)),
                ("kill_mid_burst", lambda info: case_kill_mid_burst(ctx, info)),
                ("stopped_fail_closed", lambda info: case_killed_fail_closed(ctx, info, state, signal.SIGTERM)),
                ("restart_adopts_after_stop", lambda info: case_restart_adopts(ctx, info, state)),
                ("no_guaranteed_mail_from", None),
                ("detach_running", lambda info: case_detach_running(ctx, info)),
                ("detach_after_kill", lambda info: case_detach_after_kill(ctx, info)),
            ]
            for name, fn in steps:
                info = []
                if fn is None:  # the whole MX record of cases 1-4
                    leaks = ctx.guaranteed_mail_from()
                    left = queue_empty(pf)
                    problems = ["MAIL FROM of @%s at the MX: %s" % (GUARANTEED_DOMAIN, "; ".join(leaks[:5]))] \
                        if leaks else []
                    if left:
                        problems.append("%d mail(s) still queued before detach (deleted, so that no "
                                        "guaranteed mail leaves once tlsguard is gone)" % len(left))
                        subprocess.run(["/usr/sbin/postsuper", "-c", pf.conf, "-d", "ALL"],
                                       capture_output=True, timeout=20)
                    info.append("%d MX connections, %d transactions, none from @%s" % (
                        len(mx.connections()), len(ctx.transactions()), GUARANTEED_DOMAIN) if not leaks else
                        "see above")
                    report(name, problems, info, lambda: diagnostics(ctx, upto4))
                    continue
                try:
                    problems, mails = fn(info)
                except (PostfixError, RuntimeError, OSError, subprocess.SubprocessError) as e:
                    problems, mails = ["%s: %s" % (type(e).__name__, e)], []
                upto4 += mails
                report(name, problems, info, lambda: diagnostics(ctx, mails))
    return suite.finish()


if __name__ == "__main__":
    sys.exit(main())
