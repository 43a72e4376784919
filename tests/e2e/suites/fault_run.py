#!/usr/bin/python3
"""Exhaustion and faults: every one fails closed, is counted and logged once.

Usage (as root; builds nothing; uses /sys/fs/bpf/tlsguard in agent_killed,
so run it under the e2e lock as make e2e does):
    /usr/bin/python3 tests/e2e/suites/fault_run.py [--tlsguardd build/tlsguardd]
        [--tlsguardctl build/tlsguardctl] [--only NAME[,NAME]] [--keep] [-v]

Setup: a temp dir, a cgroup v2 directory, a recording test MX without
STARTTLS (mx.py) on 127.0.0.161:25 (domain mx.fault), a private Postfix
(postfix_env.py) in the cgroup with deferred mail retried within seconds and
the smtp client's reply timeouts at 6 s (a held flow nobody answers waits
for that, not Postfix's 5 minutes).  Each case starts its own ``tlsguardd
--metrics 127.0.0.160:19025`` with the options the case needs, scrapes the
metrics page, reads the agent's log and its VmRSS/VmHWM (/proc/PID/status)
before and after.  Guaranteed senders: g1..g5@mta.test; n@mta.test is not.

Raw connections in the cgroup come from this file run with ``--client``
(``hold N`` keeps N connections to the MX open until told; ``churn N`` opens
and closes N connections one after another): a shell writes its pid into
CGROUP/cgroup.procs and execs it.

Cases:
  metrics_page -- ``--metrics`` refuses 10.0.0.1, 0.0.0.0, [::2], a
     missing port and a name (exit 1, naming the value); with three clients
     connected that never finish a request, the page is still served at
     once and holds the expected names; another path gets 404, a request
     over 2 KiB (or a reset: it is not read to its end) and a POST get 400; the stuck clients are cut within 12 s.
  flow_table_full -- ``--max-flows 2``; two raw connections fill the flow
     table, then 50 more connects from the same client each fail in
     connect() itself with EPERM (refused by tg_connect4 before the SYN:
     the MX sees only the first two connections, so no byte of the flood
     is sent); a guaranteed and another sender's mail are deferred (Postfix's
     connects are refused, EPERM, by tg_connect: no connection is made to
     be failed later), the MX sees no MAIL of either; metrics:
     table_refused_total up by one per connect at least,
     failed_closed{flow_table_full} unchanged, the warning "flow table
     full" logged once.  The raw connections close: the guaranteed mail is
     bounced (550 5.7.10) and the other delivered; once idle, the
     connections counted equal the flows tracked.
  policy_map_full -- ``--max-senders 3`` and 5 senders: the warning "do
     not fit" once, metric policy_incomplete 1; a guaranteed sender (the
     last of the file, maybe not in the map) is bounced 550, the other is
     deferred (451 from the agent: deferred_451 counted), nothing of either
     at the MX.  A senders file of 2 entries and SIGHUP: "all 2 senders are
     in the kernel again", policy_incomplete 0, and the other mail is
     delivered on its next attempt.
  reload_no_memory -- g1..g5 and r@mta.test guaranteed; a senders file
     with r removed, n added and 300000 senders more (too many changes to
     note: the agent frees its list and reads the file a second time), and
     SIGHUP with the agent's address space limited (RLIMIT_AS, set on the
     running agent) to 1 MiB above its size: the second read finds no
     memory.  The warning says the 6 senders in force were read back from
     the kernel's map; ``sender check`` and mail agree: r bounced 550, n
     delivered, nothing of r at the MX, policy_incomplete 0.  SIGHUP
     without the limit: the file is in force (300006 senders), r is
     delivered, n bounced.  Skipped, with the reason, for a tlsguardd
     built with AddressSanitizer (make check SANITIZE=1), whose shadow
     memory no such limit can leave room for; the plain build's make check
     runs it.
  ringbuf_full -- ``--ringbuf-size 4096 --slots 1 --audit FILE``; SIGSTOP
     the agent (by pid); 200 raw connections come and go (their line and
     close events, which the audit trail asks for, overflow the ring); two guaranteed mails: one takes the only slot and waits for
     a reply nobody writes (Postfix's timeout: deferred), the other finds
     no slot (failed closed, its KILL event lost: deferred); another
     sender's mail is delivered meanwhile (the kernel path needs no agent).
     SIGCONT: the warning "ring buffer full" once, overruns counted, the
     slot whose close was lost is renewed (slots{use="held"} back to 0),
     and both guaranteed mails are then bounced 550.
  injection_stuck -- the agent SIGSTOPped (13 s at least) while
     guaranteed mails are held: Postfix times out and defers each, nothing
     at the MX, another sender is delivered; SIGCONT: the agent logs once
     that it did not run (agent_stalls_total +1), the mails are bounced on
     the next attempt, and the metrics count the held verdicts and 550
     replies.
  agent_killed -- SIGKILL (by pid); a guaranteed mail is
     deferred and not one byte of its envelope reaches the MX; a new
     tlsguardd on the same pin dir adopts the pinned maps, its metrics show
     the kernel's drops made while no agent ran and the flows failed closed
     for want of a live slot (failed_closed{slot_gone}), and the mail is
     bounced 550.  ``tlsguardctl --pin-dir DIR detach`` at the end: nothing
     left pinned or attached.

Memory bound, asserted for each case: the agent's VmRSS after the case is
at most 16 MiB above its VmRSS before, and below 64 MiB.

Output: ``PASS name`` / ``FAIL name: why`` / ``SKIP name: why`` per case,
detail lines (figures: metrics deltas, RSS), then exactly ``N passed, M
failed`` alone on a line; exit status 0 only if none failed.  Everything
created is removed in a ``finally``, also on Ctrl-C or SIGTERM: clients and
tlsguardd by pid (a stopped agent is continued first), the pins (each
agent's own pin dir, ``tlsguardctl --pin-dir DIR detach``),
Postfix, the MX, the cgroup, the temp dir unless --keep.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "fixtures"))
sys.dont_write_bytecode = True

from daemon import TLS_TEXT, detach_problems, page_problems, pin_dir, rss, scrape_metrics  # noqa: E402

METRICS = "127.0.0.160:19025"
MX_ADDR = "127.0.0.161"
GUARANTEED = ["g%d@mta.test" % i for i in range(1, 6)]
OTHER = "n@mta.test"
# reload_no_memory's sender that a reload removes: mail of it reaches the MX at the end,
# so it is not one of GUARANTEED, which no case may see there
REMOVED = "r@mta.test"
RSS_GROWTH_KB = 16 * 1024
RSS_MAX_KB = 64 * 1024
POSTFIX_MAIN = {
    "queue_run_delay": "1s",
    "minimal_backoff_time": "2s",
    "maximal_backoff_time": "4s",
    "smtp_helo_timeout": "6s",
    "smtp_mail_timeout": "6s",
    "smtp_rcpt_timeout": "6s",
    "smtp_data_init_timeout": "6s",
    "smtp_data_xfer_timeout": "6s",
    "smtp_data_done_timeout": "6s",
    "smtp_quit_timeout": "6s",
    # A failed connection must not stall the destination for long.
    "default_destination_concurrency_failed_cohort_limit": "100",
}
TIMEOUT = 90.0
FLOOD = 50  # connects past a full flow table, each refused in connect()


# ====================================================================== client

def client_main(argv):
    """Inside the cgroup: hold N [FLOOD] | churn N, against the MX.  hold
    then tries FLOOD connects more, each of which must fail in connect()
    itself: its "ready" line says "ready refused K" for the K that failed
    with EPERM (one line: Client.expect() reads a line at a time), after a
    line "connected" for each that did not (with a line sent on it)."""
    what, n = argv[0], int(argv[1])
    if what == "hold":
        socks = []
        for _ in range(n):
            s = socket.create_connection((MX_ADDR, 25), timeout=10)
            s.recv(1024)  # the greeting: the flow is established and tracked
            socks.append(s)
        refused = 0
        for _ in range(int(argv[2]) if len(argv) > 2 else 0):
            s = socket.socket()
            s.settimeout(10)
            try:
                s.connect((MX_ADDR, 25))
                s.sendall(b"EHLO flood.test\r\n")
                print("connected", flush=True)
            except PermissionError:
                refused += 1
            except OSError as e:
                print("error %s" % e, flush=True)
            finally:
                s.close()
        print("ready refused %d" % refused if len(argv) > 2 else "ready", flush=True)
        sys.stdin.readline()
        for s in socks:
            s.close()
        print("closed", flush=True)
        return 0
    if what == "churn":
        for _ in range(n):
            s = socket.create_connection((MX_ADDR, 25), timeout=10)
            s.recv(1024)
            s.close()
        print("done", flush=True)
        return 0
    return 2


class Client:
    def __init__(self, cgroup, *args):
        script = 'echo $$ > "$1" && shift && exec /usr/bin/python3 "$@"'
        self.proc = subprocess.Popen(["/bin/sh", "-c", script, "sh", cgroup.procs_file, os.path.abspath(__file__),
                                      "--client", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)

    def expect(self, word, timeout=60):
        import select
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if r:
                line = self.proc.stdout.readline()
                if line.strip() == word.encode():
                    return
                if not line:
                    break
        raise RuntimeError("client %s: wanted %r, got %r: %s" % (self.proc.args[-2:], word, line,
                                                                 self.proc.stderr.read(400) if self.proc.poll()
                                                                 is not None else ""))

    def release(self):
        try:
            self.proc.stdin.write(b"\n")
            self.proc.stdin.flush()
        except OSError:
            pass

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()  # by pid: our own child
        self.proc.wait(10)


# ====================================================================== runner

def scrape():
    return scrape_metrics(METRICS, timeout=10, check=True)


def delta(after, before, name):
    return after.get(name, 0) - before.get(name, 0)


class Agent:
    """tlsguardd with --metrics and the case's options; log in its own file."""

    def __init__(self, env, name, extra, senders=None, pins=None):
        from daemon import Daemon
        self.env = env
        self.log_path = os.path.join(env.tmp, "tlsguardd-%s.log" % name)
        self.d = Daemon(env.args.tlsguardd, env.args.tlsguardctl, env.cgroup.path, senders or env.senders,
                        os.path.join(env.tmp, "tlsguardd.sock"), self.log_path, pins=pins)
        self.d.argv += ["--metrics", METRICS] + list(extra)
        self.stopped = False

    def start(self):
        self.d.start()
        deadline = time.monotonic() + 30
        while True:  # the metrics listener comes up before the control socket; be sure
            try:
                scrape()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.rss0 = rss(self.pid)
        return self

    @property
    def pid(self):
        return self.d.proc.pid

    def signal(self, sig):
        if self.d.proc.poll() is None:
            os.kill(self.pid, sig)  # our own child, by pid
        self.stopped = sig == signal.SIGSTOP

    def stop(self):
        if self.stopped:
            self.signal(signal.SIGCONT)
        return self.d.stop()

    def stop_into(self, problems):
        """stop(), and why it did not exit 0 among ``problems``."""
        why = self.stop()
        if why:
            problems.append(why)

    def log(self):
        return self.d.log_text()

    def count(self, pattern):
        return len(re.findall(pattern, self.log()))

    def rss_check(self, problems, info):
        r1 = rss(self.pid)
        info.append("tlsguardd VmRSS %d kB -> %d kB, VmHWM %d kB -> %d kB (bound: +%d kB, < %d kB)" % (
            self.rss0["VmRSS"], r1["VmRSS"], self.rss0["VmHWM"], r1["VmHWM"], RSS_GROWTH_KB, RSS_MAX_KB))
        if r1["VmRSS"] > self.rss0["VmRSS"] + RSS_GROWTH_KB or r1["VmRSS"] > RSS_MAX_KB:
            problems.append("tlsguardd VmRSS grew from %d kB to %d kB" % (self.rss0["VmRSS"], r1["VmRSS"]))


class Env:
    def __init__(self, args, tmp, cgroup, pf, mx, senders):
        self.args, self.tmp, self.cgroup, self.pf, self.mx, self.senders = args, tmp, cgroup, pf, mx, senders
        self.n = 0

    def send(self, sender):
        self.n += 1
        return self.pf.send(sender, ["r%d-%s@mx.fault" % (self.n, os.urandom(3).hex())], subject="fault")

    def status(self, mail):
        o = self.pf.outcomes([mail])[mail.marker]
        s = o.status_of(mail.recipients[0])
        return s

    def wait_status(self, mails, want, timeout=TIMEOUT):
        """Wait until each mail's latest status is in want; return {marker: Status}."""
        deadline = time.monotonic() + timeout
        while True:
            res = self.pf.outcomes(mails)
            st = {m.marker: res[m.marker].status_of(m.recipients[0]) for m in mails}
            if all(s is not None and s.status in want for s in st.values()) or time.monotonic() > deadline:
                return st
            time.sleep(0.3)

    def mx_senders(self):
        """Every MAIL FROM and RCPT TO the MX ever received (lower case)."""
        seen = set()
        for c in self.mx.connections():
            for line in c.commands():
                m = re.match(r"(?i)(MAIL FROM|RCPT TO):\s*<([^>]*)>", line)
                if m:
                    seen.add(m.group(2).lower())
        return seen

    def flush(self):
        subprocess.run(["/usr/sbin/postqueue", "-c", self.pf.conf, "-f"], capture_output=True, timeout=30)


def want(problems, what, st, status, text=None):
    if st is None:
        problems.append("%s: no status" % what)
    elif st.status != status or (text and text not in st.text):
        problems.append("%s: status=%s (%s), want %s%s" % (what, st.status, st.text[:120], status,
                                                          " with %r" % text if text else ""))


def nothing_at_mx(env, problems, mails):
    seen = env.mx_senders()
    for m in mails:
        if m.sender.lower() in seen and m.sender in GUARANTEED:
            problems.append("MAIL FROM:<%s> reached the MX" % m.sender)
        if m.recipients[0].lower() in seen:
            problems.append("RCPT TO:<%s> (%s) reached the MX" % (m.recipients[0], m.sender))


# ---------------------------------------------------------------- cases

def case_flow_table_full(env, problems, info):
    ag = Agent(env, "flows", ["--max-flows", "2"]).start()
    try:
        m0 = scrape()
        conns0 = len(env.mx.connections())
        hold = Client(env.cgroup, "hold", "2", str(FLOOD))
        try:
            hold.expect("ready refused %d" % FLOOD)
            # the flood past the table never reached the MX: connect() failed
            time.sleep(0.5)
            made = len(env.mx.connections()) - conns0
            info.append("flood: 2 connections fill the table, %d more refused in connect() (EPERM); "
                        "the MX saw %d connection(s)" % (FLOOD, made))
            if made != 2:
                problems.append("the MX saw %d new connection(s), want the 2 that fit in the table" % made)
            g, n = env.send(GUARANTEED[0]), env.send(OTHER)
            st = env.wait_status([g, n], ("deferred",))
            want(problems, "guaranteed, table full", st[g.marker], "deferred")
            want(problems, "other, table full", st[n.marker], "deferred")
            nothing_at_mx(env, problems, [g, n])
            if any(n.recipients[0].lower() in env.mx_senders() for _ in [0]):
                problems.append("the other sender's RCPT reached the MX while the table was full")
            time.sleep(6)  # one agent timer tick at least: the warning
            m1 = scrape()
        finally:
            hold.release()
            hold.stop()
        full = delta(m1, m0, 'tlsguard_failed_closed_total{reason="flow_table_full"}')
        refused = delta(m1, m0, "tlsguard_table_refused_total")
        info.append("while full: refused at connect +%d, failed_closed{flow_table_full} +%d, "
                    "flows_tracked %d, connections counted %d" % (
                        refused, full, m1["tlsguard_flows_tracked"], m1["tlsguard_connections_counted"]))
        # Postfix's connects are refused at once, not failed at their first write.
        if refused < 2:
            problems.append("table_refused went up by %d, want >= 2 (one per Postfix connect)" % refused)
        if full != 0:
            problems.append("failed_closed{flow_table_full} went up by %d: a connection was made "
                            "and failed at its first write, not refused at connect" % full)
        if m1["tlsguard_map_max_entries{map=\"tg_flows\"}"] != 2:
            problems.append("map_max_entries{tg_flows} is %s" % m1["tlsguard_map_max_entries{map=\"tg_flows\"}"])
        warned = ag.count(r"warning: flow table full")
        if warned != 1:
            problems.append("'flow table full' logged %d times, want once" % warned)
        env.flush()
        st = env.wait_status([g, n], ("bounced", "sent"))
        want(problems, "guaranteed, after", st[g.marker], "bounced", TLS_TEXT)
        want(problems, "other, after", st[n.marker], "sent")
        nothing_at_mx(env, problems, [g])
        # Every connection counted at its connect is uncounted at its close.
        deadline = time.monotonic() + 10
        while scrape()["tlsguard_connections_counted"] != scrape()["tlsguard_flows_tracked"]:
            if time.monotonic() > deadline:
                m2 = scrape()
                problems.append("connections counted %d, flows tracked %d once idle: the count leaks" % (
                    m2["tlsguard_connections_counted"], m2["tlsguard_flows_tracked"]))
                break
            time.sleep(0.5)
        ag.rss_check(problems, info)
    finally:
        ag.stop_into(problems)


def case_policy_map_full(env, problems, info):
    ag = Agent(env, "policy", ["--max-senders", "3"]).start()
    try:
        m0 = scrape()
        if m0.get("tlsguard_policy_incomplete") != 1:
            problems.append("policy_incomplete is %s with 5 senders in 3 entries" % m0.get(
                "tlsguard_policy_incomplete"))
        g, n = env.send(GUARANTEED[-1]), env.send(OTHER)
        st = env.wait_status([g, n], ("bounced", "deferred"))
        want(problems, "guaranteed, policy incomplete", st[g.marker], "bounced", TLS_TEXT)
        want(problems, "other, policy incomplete", st[n.marker], "deferred", "451 4.3.0")
        nothing_at_mx(env, problems, [g, n])
        m1 = scrape()
        d451 = delta(m1, m0, 'tlsguard_replies_total{kind="deferred_451"}')
        d550 = delta(m1, m0, 'tlsguard_replies_total{kind="bounced_550"}')
        info.append("policy incomplete: bounced_550 +%d, deferred_451 +%d, map entries %d of %d" % (
            d550, d451, m1['tlsguard_map_entries{map="tg_senders"}'],
            m1['tlsguard_map_max_entries{map="tg_senders"}']))
        if d550 < 1 or d451 < 1:
            problems.append("bounced_550 +%d, deferred_451 +%d: want both >= 1" % (d550, d451))
        warned = ag.count(r"do not fit in tg_senders")
        if warned != 1:
            problems.append("'do not fit' logged %d times, want once" % warned)
        with open(env.senders, "w") as f:
            f.write("".join(a + "\n" for a in GUARANTEED[:2]))
        ag.signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while "in the kernel again" not in ag.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        if "all 2 senders are in the kernel again" not in ag.log():
            problems.append("no 'all 2 senders are in the kernel again' after SIGHUP")
        m2 = scrape()
        if m2.get("tlsguard_policy_incomplete") != 0:
            problems.append("policy_incomplete is %s after SIGHUP" % m2.get("tlsguard_policy_incomplete"))
        env.flush()
        st = env.wait_status([n], ("sent",))
        want(problems, "other, after SIGHUP", st[n.marker], "sent")
        ag.rss_check(problems, info)
    finally:
        with open(env.senders, "w") as f:
            f.write("".join(a + "\n" for a in GUARANTEED))
        ag.stop_into(problems)


def case_ringbuf_full(env, problems, info):
    # With the audit trail on, every flow's lines and close are events (without it, only held
    # flows and weak handshakes wake the agent): 200 flows overflow a 4 KiB ring.
    ag = Agent(env, "ringbuf", ["--ringbuf-size", "4096", "--slots", "1",
                                "--audit", os.path.join(env.tmp, "audit-ringbuf.jsonl")]).start()
    try:
        m0 = scrape()
        ag.signal(signal.SIGSTOP)
        churn = Client(env.cgroup, "churn", "200")
        churn.expect("done", timeout=120)
        churn.stop()
        g1 = env.send(GUARANTEED[0])
        time.sleep(1)  # g1 first: it takes the only slot
        g2, n = env.send(GUARANTEED[1]), env.send(OTHER)
        st = env.wait_status([g1, g2, n], ("deferred", "sent"))
        want(problems, "guaranteed, slot held, agent stopped", st[g1.marker], "deferred")
        want(problems, "guaranteed, no slot, agent stopped", st[g2.marker], "deferred")
        want(problems, "other, agent stopped", st[n.marker], "sent")
        nothing_at_mx(env, problems, [g1, g2])
        info.append("while stopped: %s: %s; %s: %s" % (g1.sender, st[g1.marker].text[:70], g2.sender,
                                                        st[g2.marker].text[:70]))
        ag.signal(signal.SIGCONT)
        time.sleep(7)  # a timer tick: the watch
        m1 = scrape()
        lost = delta(m1, m0, "tlsguard_ringbuf_overruns_total")
        info.append("ring buffer overruns +%d, failed_closed{no_slot} +%d, slots held now %d" % (
            lost, delta(m1, m0, 'tlsguard_failed_closed_total{reason="no_slot"}'),
            m1['tlsguard_slots{use="held"}']))
        if lost < 100:
            problems.append("ring buffer overruns +%d, want >= 100 (200 audited flows into a 4 KiB ring)" % lost)
        if ag.count(r"warning: event ring buffer full") != 1:
            problems.append("'ring buffer full' logged %d times, want once" % ag.count(r"event ring buffer full"))
        if m1['tlsguard_slots{use="held"}'] != 0 or m1['tlsguard_slots{use="free"}'] != 1:
            problems.append("slots after recovery: held %d, free %d (want 0, 1)" % (
                m1['tlsguard_slots{use="held"}'], m1['tlsguard_slots{use="free"}']))
        env.flush()
        st = env.wait_status([g1, g2], ("bounced",))
        want(problems, "guaranteed 1, after SIGCONT", st[g1.marker], "bounced", TLS_TEXT)
        want(problems, "guaranteed 2, after SIGCONT", st[g2.marker], "bounced", TLS_TEXT)
        nothing_at_mx(env, problems, [g1, g2])
        ag.rss_check(problems, info)
    finally:
        ag.stop_into(problems)


def case_injection_stuck(env, problems, info):
    ag = Agent(env, "stuck", []).start()
    try:
        m0 = scrape()
        ag.signal(signal.SIGSTOP)
        t0 = time.monotonic()
        gs = [env.send(a) for a in GUARANTEED[:3]]
        n = env.send(OTHER)
        st = env.wait_status(gs + [n], ("deferred", "sent"))
        for g in gs:
            want(problems, "%s, agent stopped" % g.sender, st[g.marker], "deferred")
        want(problems, "other, agent stopped", st[n.marker], "sent")
        nothing_at_mx(env, problems, gs)
        while time.monotonic() - t0 < 13:  # long enough for the agent to see it was stopped
            time.sleep(0.5)
        info.append("stopped %.0f s: %s" % (time.monotonic() - t0, st[gs[0].marker].text[:90]))
        ag.signal(signal.SIGCONT)
        env.flush()
        st = env.wait_status(gs, ("bounced",))
        for g in gs:
            want(problems, "%s, after SIGCONT" % g.sender, st[g.marker], "bounced", TLS_TEXT)
        nothing_at_mx(env, problems, gs)
        time.sleep(1)
        m1 = scrape()
        held = delta(m1, m0, 'tlsguard_flows_diverted_total')
        b550 = delta(m1, m0, 'tlsguard_replies_total{kind="bounced_550"}')
        info.append("held +%d, bounced_550 +%d, slots held now %d" % (held, b550, m1['tlsguard_slots{use="held"}']))
        if held < 6 or b550 < 3:
            problems.append("held +%d (want >= 6: 3 stuck, 3 answered), bounced_550 +%d (want >= 3)" % (held, b550))
        if m1['tlsguard_slots{use="held"}'] != 0:
            problems.append("%d slots still held" % m1['tlsguard_slots{use="held"}'])
        stalls = ag.count(r"warning: tlsguardd did not run for")
        if stalls != 1 or delta(m1, m0, "tlsguard_agent_stalls_total") != 1:
            problems.append("the stop was logged %d times and counted %d times, want once" % (
                stalls, delta(m1, m0, "tlsguard_agent_stalls_total")))
        ag.rss_check(problems, info)
    finally:
        ag.stop_into(problems)


def vm_size_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1])
    raise RuntimeError("no VmSize for pid %d" % pid)


RELOAD_FILLER = 300000  # senders more: 2.3 MiB of keys, too many changes to note (pass 2)
RELOAD_HEADROOM_KB = 1024  # address space left to the agent: enough for pass 1, not pass 2


def asan_built(binary):
    """The binary was built with AddressSanitizer (make check SANITIZE=1)."""
    with open(binary, "rb") as f:
        return b"libasan.so" in f.read()


def case_reload_no_memory(env, problems, info):
    import resource
    if asan_built(env.args.tlsguardd):
        # Run by the plain build's make check.
        return ("SKIP", "tlsguardd is built with AddressSanitizer, whose shadow memory takes terabytes of "
                "address space: no limit on it (RLIMIT_AS) can sit just above the agent's size")
    with open(env.senders, "w") as f:
        f.write("".join(a + "\n" for a in GUARANTEED + [REMOVED]))
    ag = Agent(env, "reload", []).start()
    sock = os.path.join(env.tmp, "tlsguardd.sock")
    limit = None
    try:
        # r out, n in, and 300000 more: the agent frees its list and reads the file again
        with open(env.senders, "w") as f:
            f.write("".join(a + "\n" for a in GUARANTEED + [OTHER]) + "".join(
                "f%d@filler.test\n" % i for i in range(RELOAD_FILLER)))
        limit = resource.prlimit(ag.pid, resource.RLIMIT_AS)
        vm = vm_size_kb(ag.pid)
        resource.prlimit(ag.pid, resource.RLIMIT_AS, ((vm + RELOAD_HEADROOM_KB) * 1024, limit[1]))
        ag.signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while "keeping the senders in force" not in ag.log() and "reloaded" not in ag.log() \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        resource.prlimit(ag.pid, resource.RLIMIT_AS, limit)
        limit = None
        line = re.search(r"warning: .*keeping the senders in force.*", ag.log())
        info.append("VmSize %d kB, limit +%d kB: %s" % (vm, RELOAD_HEADROOM_KB, line.group(0) if line else None))
        n_old = len(GUARANTEED) + 1
        if not re.search(r"warning: %s: out of memory; keeping the senders in force \(%d of %d read back "
                         r"from the kernel's map\)" % (re.escape(env.senders), n_old, n_old), ag.log()):
            problems.append("no warning that the senders in force were read back: %r" % ag.log()[-400:])
        for addr, code in ((REMOVED, 0), (GUARANTEED[0], 0), (OTHER, 3), ("f7@filler.test", 3)):
            res = subprocess.run([env.args.tlsguardctl, "--socket", sock, "sender", "check", addr],
                                 capture_output=True, text=True, timeout=30)
            if res.returncode != code:
                problems.append("after the failed reload, sender check %s: exit %d %r" % (
                    addr, res.returncode, res.stdout))
        m1 = scrape()
        if m1.get("tlsguard_policy_incomplete") != 0:
            problems.append("policy_incomplete is %s after the failed reload" % m1.get("tlsguard_policy_incomplete"))
        r, n = env.send(REMOVED), env.send(OTHER)
        st = env.wait_status([r, n], ("bounced", "sent"))
        want(problems, "r (in force), failed reload", st[r.marker], "bounced", TLS_TEXT)
        want(problems, "n (not in force), failed reload", st[n.marker], "sent")
        nothing_at_mx(env, problems, [r])
        # Without the limit the same file is put in force.
        ag.signal(signal.SIGHUP)
        want_line = "reloaded %s: %d senders" % (env.senders, len(GUARANTEED) + 1 + RELOAD_FILLER)
        deadline = time.monotonic() + 60
        while want_line not in ag.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        if want_line not in ag.log():
            problems.append("no %r after SIGHUP without the limit" % want_line)
        r, n = env.send(REMOVED), env.send(OTHER)
        st = env.wait_status([r, n], ("bounced", "sent"))
        want(problems, "r (out), after the reload", st[r.marker], "sent")
        want(problems, "n (in), after the reload", st[n.marker], "bounced", TLS_TEXT)
        nothing_at_mx(env, problems, [n])
        r1 = rss(ag.pid)
        info.append("tlsguardd VmHWM %d kB at start, %d kB after both reloads" % (ag.rss0["VmHWM"], r1["VmHWM"]))
        ag.rss_check(problems, info)
    finally:
        if limit is not None:
            resource.prlimit(ag.pid, resource.RLIMIT_AS, limit)
        with open(env.senders, "w") as f:
            f.write("".join(a + "\n" for a in GUARANTEED))
        ag.stop_into(problems)

def case_agent_killed(env, problems, info):
    ag = Agent(env, "pin1", []).start()
    ag2 = None
    try:
        m0 = scrape()
        ag.d.proc.kill()  # SIGKILL, by pid
        ag.d.proc.wait(10)
        g = env.send(GUARANTEED[2])
        st = env.wait_status([g], ("deferred",))
        want(problems, "guaranteed, agent killed", st[g.marker], "deferred")
        nothing_at_mx(env, problems, [g])
        ag2 = Agent(env, "pin2", [], pins=ag.d.pin_dir).start()
        if "adopted the state pinned" not in ag2.log():
            problems.append("the new agent did not adopt the pinned state")
        m1 = scrape()
        drops = delta(m1, m0, 'tlsguard_kernel_drops_total{program="tg_smtp_msg"}')
        info.append("while no agent ran: kernel drops (sk_msg) +%d, failed_closed{slot_gone} +%d" % (
            drops, delta(m1, m0, 'tlsguard_failed_closed_total{reason="slot_gone"}')))
        if drops < 1:
            problems.append("no kernel drop counted while the agent was away")
        if delta(m1, m0, 'tlsguard_failed_closed_total{reason="slot_gone"}') < 1:
            problems.append("failed_closed{slot_gone} did not go up while the agent was away")
        env.flush()
        st = env.wait_status([g], ("bounced",))
        want(problems, "guaranteed, after restart", st[g.marker], "bounced", TLS_TEXT)
        nothing_at_mx(env, problems, [g])
        ag2.rss_check(problems, info)
    finally:
        # the deliberate removal: the running agent detaches and exits
        problems.extend((ag2 or ag).d.detach())
    return None


def metrics_remote(env, problems):
    """--metrics-remote: the page on 0.0.0.0, read here over loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(os.path.join(env.tmp, "tlsguardd-remote.log"), "ab")
    pins, sock = pin_dir("fault"), os.path.join(env.tmp, "remote.sock")
    proc = subprocess.Popen([env.args.tlsguardd, "--cgroup", env.cgroup.path, "--senders", env.senders,
                             "--socket", sock, "--metrics", "0.0.0.0:%d" % port, "--pin-dir", pins,
                             "--metrics-remote"], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            start_new_session=True)
    try:
        deadline, m = time.monotonic() + 60, None
        while m is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                m = scrape_metrics("127.0.0.1:%d" % port, timeout=5, check=True)
            except OSError:
                time.sleep(0.3)
        if m is None or "tlsguard_flows_tracked" not in m:
            problems.append("--metrics 0.0.0.0:%d --metrics-remote: no page (exit %r)" % (port, proc.poll()))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        log.close()
        problems.extend(detach_problems(env.args.tlsguardctl, sock, pins, env.cgroup.path))


def case_metrics_page(env, problems, info):
    """The page's contract: loopback only unless --metrics-remote, read by
    Prometheus' own parser, 404, 400, a stuck client blocks nothing."""
    for bad in ("10.0.0.1:19025", "0.0.0.0:19025", "[::2]:19025", "127.0.0.1", "localhost:19025"):
        r = subprocess.run([env.args.tlsguardd, "--cgroup", env.cgroup.path, "--senders", env.senders,
                            "--socket", os.path.join(env.tmp, "bad.sock"), "--metrics", bad],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 1 or ("--metrics %s" % bad) not in r.stderr:
            problems.append("--metrics %s: exit %d, %r (want exit 1 naming it)" % (bad, r.returncode,
                                                                                 r.stderr.strip()[-160:]))
    metrics_remote(env, problems)
    ag = Agent(env, "page", []).start()
    try:
        host, port = METRICS.split(":")
        stuck = [socket.create_connection((host, int(port)), timeout=5) for _ in range(3)]
        stuck[0].sendall(b"GET /metr")  # a request that never ends
        t0 = time.monotonic()
        m = scrape()
        took = time.monotonic() - t0
        import urllib.request
        text = urllib.request.urlopen("http://%s/metrics" % METRICS, timeout=10).read().decode()
        problems.extend("Prometheus' parser: %s" % x for x in page_problems(text))
        on_page = {line.split("{")[0].split()[0] for line in text.splitlines() if line and line[0] != "#"}
        repo = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
        for shipped in ("dist/prometheus/tlsguard.rules.yml", "dist/grafana/tlsguard.json"):
            with open(os.path.join(repo, shipped)) as f:
                unknown = sorted(set(re.findall(r"\btlsguard_[a-z_]+", f.read())) - on_page)
            if unknown:
                problems.append("%s names metrics the page lacks: %s" % (shipped, unknown))
        if env.args.promtool:
            r = subprocess.run([env.args.promtool, "check", "metrics"], input=text, capture_output=True, text=True)
            if r.returncode != 0 or r.stdout.strip() or r.stderr.strip():
                problems.append("promtool check metrics: exit %d: %s" % (r.returncode, (r.stdout + r.stderr)[-600:]))
        version = open(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(HERE))), "VERSION")).read()
        if 'tlsguard_build_info{version="%s"}' % version.strip() not in m:
            problems.append("no tlsguard_build_info for version %s" % version.strip())
        for name in ("tlsguard_flows_tracked", 'tlsguard_flows_diverted_total',
                     'tlsguard_mail_commands_total{verdict="held"}', 'tlsguard_replies_total{kind="bounced_550"}',
                     'tlsguard_audit_records_dropped_total{reason="write_failed"}',
                     "tlsguard_syslog_lines_dropped_total",
                     "tlsguard_ringbuf_overruns_total", 'tlsguard_kernel_drops_total{program="tg_smtp_msg"}',
                     "tlsguard_policy_entries", 'tlsguard_map_max_entries{map="tg_flows"}',
                     'tlsguard_slots{use="free"}', "tlsguard_agent_resident_bytes"):
            if name not in m:
                problems.append("%s missing from the page" % name)
        if m.get("tlsguard_policy_entries") != len(GUARANTEED):
            problems.append("policy_entries %s, want %d" % (m.get("tlsguard_policy_entries"), len(GUARANTEED)))

        def raw(req):
            with socket.create_connection((host, int(port)), timeout=10) as c:
                c.sendall(req)
                data = b""
                while True:
                    try:
                        chunk = c.recv(65536)
                    except ConnectionResetError:  # closed with the rest of our request unread
                        chunk = b""
                        data = data or b"reset"
                    if not chunk:
                        return data.split(b"\r\n", 1)[0].decode(errors="replace")
                    data += chunk
        for req, want_line in ((b"GET /other HTTP/1.0\r\n\r\n", "HTTP/1.0 404 Not Found"),
                               (b"GET /metrics HTTP/1.0\r\n" + b"X: " + b"y" * 5000 + b"\r\n\r\n",
                                "HTTP/1.0 400 Bad Request"),
                               (b"POST /metrics HTTP/1.0\r\n\r\n", "HTTP/1.0 400 Bad Request")):
            got = raw(req)
            if got != want_line and not (got == "reset" and len(req) > 2048):
                problems.append("%r: got %r, want %r" % (req[:30], got, want_line))
        time.sleep(TIMEOUT_CLIENT)
        cut = 0
        for c in stuck:
            try:
                c.settimeout(2)
                cut += c.recv(1) == b""
            except OSError:
                cut += 1
            c.close()
        info.append("scrape with 3 stuck clients: %.2f s; stuck clients cut after %d s: %d of 3" % (
            took, TIMEOUT_CLIENT, cut))
        if cut != 3:
            problems.append("%d of 3 stuck metrics clients still connected after %d s" % (3 - cut, TIMEOUT_CLIENT))
        ag.rss_check(problems, info)
    finally:
        ag.stop_into(problems)


TIMEOUT_CLIENT = 12  # the agent cuts a metrics client after 5 to 10 s

CASES = [
    ("metrics_page", case_metrics_page),
    ("flow_table_full", case_flow_table_full),
    ("policy_map_full", case_policy_map_full),
    ("reload_no_memory", case_reload_no_memory),
    ("ringbuf_full", case_ringbuf_full),
    ("injection_stuck", case_injection_stuck),
    ("agent_killed", case_agent_killed),
]


def parse_args(argv):
    import harness
    ap = harness.arg_parser(__doc__)
    ap.add_argument("--only", help="comma-separated case names")
    ap.add_argument("--promtool", help="Prometheus' promtool: check the page with it too (make mta-deps)")
    return ap.parse_args(argv)


def main(argv=None):
    import harness
    from mx import TestMX
    from postfix_env import PostfixError, PostfixInstance, PostfixMissing

    args = parse_args(argv)
    promtool_missing = args.promtool and not os.access(args.promtool, os.X_OK)
    if promtool_missing:
        args.promtool = None
    cases = harness.only(CASES, args.only, lambda c: c[0])
    r = harness.Results(shown=6, more=False)
    if promtool_missing:
        r.skip("promtool_check_metrics", "no promtool (make mta-deps unpacks it)")
    with harness.Run(r, keep=args.keep, root="fault_run.py must run as root") as suite:
        try:
            harness.require_tools(args.tlsguardd, args.tlsguardctl)
            tmp, cgroup = suite.workspace("tlsguard-fault", 0o755)
            mx = suite.started(TestMX(MX_ADDR, 25, name="fault"))
            pf = suite.postfix(PostfixInstance(os.path.join(tmp, "postfix"), cgroup,
                                               {"mx.fault": "smtp:[%s]:25" % MX_ADDR}, ["mta.test"],
                                               mailboxes=GUARANTEED + [OTHER, REMOVED],
                                               extra_main=POSTFIX_MAIN))
            senders = suite.write("senders", "".join(a + "\n" for a in GUARANTEED))
            env = Env(args, tmp, cgroup, pf, mx, senders)
        except (PostfixMissing, PostfixError, RuntimeError, OSError) as e:
            r.report("setup", [str(e)])
        else:
            for name, fn in cases:
                problems, info = [], []
                c0 = time.monotonic()
                try:
                    res = fn(env, problems, info)
                except (RuntimeError, OSError, subprocess.SubprocessError, PostfixError) as e:
                    problems.append("%s: %s" % (type(e).__name__, e))
                    res = None
                info.append("(%.0f s)" % (time.monotonic() - c0))
                if res and res[0] == "SKIP":
                    r.skip(name, res[1], info, counted=True)  # a skipped case has always counted as passed here
                    continue
                if problems and args.verbose:
                    info += ["tlsguardd: " + x for x in open(os.path.join(tmp, sorted(
                        f for f in os.listdir(tmp) if f.startswith("tlsguardd-"))[-1])).read().splitlines()[-30:]]
                r.report(name, problems, info)
    return suite.finish()


if __name__ == "__main__":
    sys.exit(client_main(sys.argv[2:]) if sys.argv[1:2] == ["--client"] else main())
