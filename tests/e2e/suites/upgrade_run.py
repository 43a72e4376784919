#!/usr/bin/python3
"""Upgrades with no gap: one build of tlsguardd replaced by another whose maps
have another layout, and back, while Postfix sends.

Usage (as root; builds nothing):
    /usr/bin/python3 tests/e2e/suites/upgrade_run.py [--tlsguardd build/tlsguardd]
        [--tlsguardctl build/tlsguardctl] --tlsguardd2 build-layout2/tlsguardd
        [--keep] [-v]

The two builds: ``--tlsguardd`` (N) and ``--tlsguardd2`` (N+1), the same tree
built with ``make layout2`` (TG_LAYOUT_PAD: tg_stats' value is larger), so
that N+1 cannot reuse N's pinned maps.  Both pin, as every tlsguardd does.

Setup: a temp dir, a cgroup v2 directory, two recording test MXs without
STARTTLS (mx.py): 127.0.0.180 for plain.test, 127.0.0.181 for other.test; a
private Postfix whose master runs in the cgroup, retrying within seconds
(``queue_run_delay = 1s``, backoff 2-4 s, reply timeouts 15 s), caching its
connections to both MXs (``smtp_connection_cache_destinations``, with
``smtp_tls_security_level = none``: Postfix caches no TLS-capable session
without a tlsproxy, and neither MX offers STARTTLS) and reusing
one for at most 30 s (``smtp_connection_reuse_time_limit``): at each upgrade
the old generation has live connections, which carry mail under its
programs after the swap and close within 30 s; the senders file guarantees
``@guarded.test``.  A stream thread injects one mail every 150 ms for the
whole run, alternating a guaranteed sender to plain.test and a sender of
mta.test (not guaranteed) to other.test; every mail has its own sender and
marker.  A sampler thread runs ``bpftool cgroup show CGROUP`` every 50 ms
during each transition.

The agents pin under a pin_dir of the run's own (``--pin-dir
/sys/fs/bpf/tlsguard-upgrade-RANDOM``), never another daemon's.

Cases, in order (each transition starts the next build at once):
  start_n -- N: one generation directory L<digest> under the
     pin_dir, the three cgroup links pinned at its top.
  upgrade_kill9 -- SIGKILL N, start N+1.  N+1 logs "pinned state of another
     layout", its own generation directory differs from N's; ``tlsguardctl
     status --json`` names it as "pinned" and N's as "draining"; within 90 s
     N's directory is gone ("drained" in N+1's log); ``bpftool cgroup show``
     lists exactly tg_connect4, tg_connect6 and tg_sockops, and each of them
     uses maps of N+1's generation only (``bpftool prog show`` map_ids against
     the maps pinned in the new directory); the sampler never saw the
     cgroup without tg_sockops, tg_connect4 and tg_connect6.
  downgrade_kill9 -- SIGKILL N+1, start N: the same, back.
  upgrade_sigterm -- SIGTERM N (exit 0, pins kept), start N+1: the same.
  downgrade_sigterm -- SIGTERM N+1, start N: the same.
  same_layout_restart -- SIGKILL N, start N: it adopts (logs "adopted the
     state pinned under") its generation: the directory is the same, none
     drains.
  old_connections_drained -- at one upgrade at least, ``tlsguardctl status
     --json`` named the old generation with live connections (the cached
     ones); printed: how many MAIL commands arrived at 127.0.0.181, after the
     new agent was ready, on connections opened before the old one was
     stopped (mail that went under the old generation's programs after the
     swap; 249 in a run on this machine's kernel).
  no_guaranteed_in_clear -- the stream stops; over both MXs' whole record,
     no MAIL FROM of @guarded.test, no RCPT or marker of a guaranteed mail.
  others_delivered -- every non-guaranteed mail is status=sent exactly once
     at 127.0.0.181, none bounced (refused); the deferrals on the way are
     counted and printed.
  guaranteed_bounced -- every guaranteed mail ends bounced 5.7.10 with "TLS
     is required, but was not offered by host", never sent; deferrals (a
     mail held while no agent ran fails closed and is retried) are counted.

Output: ``PASS name`` / ``FAIL name: why`` per case (with -v, failures are
followed by the tlsguardd logs), then exactly ``N passed, M failed`` alone on
a line; exit status 0 only if none failed.  Everything created is removed in
a ``finally``, also on Ctrl-C or SIGTERM: every tlsguardd started (detach,
then SIGKILL by pid), the pins (``tlsguardctl --pin-dir DIR detach``;
checked gone, and nothing left on the cgroup),
Postfix, the MXs, the cgroup, the temp dir unless --keep.
"""

import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "fixtures"))
sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree

import harness  # noqa: E402
from mx import TestMX  # noqa: E402
from postfix_env import PostfixError, PostfixInstance, PostfixMissing, agent_gone_settings  # noqa: E402
from daemon import TLS_DSN, TLS_TEXT, Daemon, normalize, run_cmd  # noqa: E402

# The run's own pin_dir (--pin-dir), named in main(): no other daemon's.
PIN_DIR = None
BPFTOOL = "bpftool"
ADOPT_TEXT = "adopted the state pinned under"
OTHER_LAYOUT_TEXT = "pinned state of another layout"
DRAINED_TEXT = "drained in"

MX_PLAIN = "127.0.0.180"  # the guaranteed senders' recipients: no STARTTLS
MX_OTHER = "127.0.0.181"  # the other senders' recipients: no STARTTLS either
GUARANTEED_DOMAIN, OTHER_DOMAIN = "guarded.test", "mta.test"
PLAIN_RCPT, OTHER_RCPT = "plain.test", "other.test"
# Port 25 left implicit: a nexthop with ":" could not be named in
# smtp_connection_cache_destinations (a list entry with ":" is a table).
TRANSPORTS = {PLAIN_RCPT: "smtp:[%s]" % MX_PLAIN, OTHER_RCPT: "smtp:[%s]" % MX_OTHER}
SENDERS_FILE = "# upgrade_run: every sender of this domain is guaranteed\n@%s\n" % GUARANTEED_DOMAIN
PROGRAMS = ["tg_connect4", "tg_connect6", "tg_sockops"]

POSTFIX_EXTRA = dict(agent_gone_settings(), **{
    # Connections stay open between mails (cached, reused for up to 30 s,
    # longer than a new agent takes to load under TCG), so that an old
    # generation still has live connections once the new agent is ready.
    "smtp_connection_cache_destinations": "%s %s" % (MX_PLAIN, MX_OTHER),  # the nexthop without []
    # Postfix caches no connection of a TLS level above none without a
    # tlsproxy; neither MX offers STARTTLS, so the wire is the same.
    "smtp_tls_security_level": "none",
    "smtp_connection_reuse_time_limit": "30s",
})

STREAM_EVERY = 0.15
RUN_BETWEEN = 3.0  # seconds of stream under each new agent before the next step
TIMEOUT_DRAIN = 90.0
TIMEOUT_FINAL = 90.0
TIMEOUT_EXIT = 15.0


def bpftool_json(*argv):
    rc, out, err = run_cmd([BPFTOOL, "-j", *argv])
    if rc != 0:
        raise RuntimeError("bpftool %s: exit %s: %s" % (" ".join(argv), rc, err.strip()))
    return json.loads(out or "null")


def attached(cgroup):
    """[(prog id, name)] attached to the cgroup itself."""
    return [(p["id"], p.get("name", "")) for p in bpftool_json("cgroup", "show", cgroup) or []]


def generations():
    try:
        return sorted(d for d in os.listdir(PIN_DIR) if d.startswith("L"))
    except FileNotFoundError:
        return []


def gen_map_ids(gen):
    ids = set()
    d = os.path.join(PIN_DIR, gen)
    for name in os.listdir(d):
        ids.add(bpftool_json("map", "show", "pinned", os.path.join(d, name))["id"])
    return ids


class Agent(Daemon):
    """daemon.py's Daemon with a build, on the run's pin_dir."""

    def __init__(self, binary, args, cgroup, senders_path, sock, log_path, label):
        super().__init__(binary, args.tlsguardctl, cgroup, senders_path, sock, log_path, pins=PIN_DIR)
        self.label = label


class Stream(threading.Thread):
    """One mail every STREAM_EVERY seconds, guaranteed and not alternating."""

    def __init__(self, pf, run_id):
        super().__init__(daemon=True)
        self.pf, self.run_id = pf, run_id
        self.mails, self.errors = [], []
        self.stopping = threading.Event()

    def run(self):
        n = 0
        while not self.stopping.is_set():
            n += 1
            g = n % 2 == 1
            sender = "%s%d-%s@%s" % ("g" if g else "n", n, self.run_id, GUARANTEED_DOMAIN if g else OTHER_DOMAIN)
            rcpt = "r%d-%s@%s" % (n, self.run_id, PLAIN_RCPT if g else OTHER_RCPT)
            try:
                self.mails.append((g, self.pf.send(sender, [rcpt], subject="upgrade")))
            except (PostfixError, OSError, subprocess.SubprocessError) as e:
                self.errors.append(str(e))
            self.stopping.wait(STREAM_EVERY)


class Sampler(threading.Thread):
    """bpftool cgroup show every 50 ms: the samples missing a program."""

    def __init__(self, cgroup):
        super().__init__(daemon=True)
        self.cgroup = cgroup
        self.samples, self.gaps = 0, []
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            try:
                names = sorted(n for _, n in attached(self.cgroup))
            except (RuntimeError, ValueError) as e:
                names = ["error: %s" % e]
            self.samples += 1
            if names != PROGRAMS:
                self.gaps.append("%.3f %s" % (time.monotonic(), names))
            self.stopping.wait(0.05)


class Ctx:
    def __init__(self, args, tmp, cgroup, senders_path):
        self.args, self.tmp, self.cgroup, self.senders_path = args, tmp, cgroup, senders_path
        self.sock = os.path.join(tmp, "tlsguardd.sock")
        self.daemons = []
        self.draining = []  # connections of the old generation at each upgrade
        self.swaps = []  # (old agent stopped, new one ready) of each upgrade, wall clock

    @property
    def agent(self):
        return self.daemons[-1] if self.daemons else None

    def start(self, which):
        binary, label = (self.args.tlsguardd, "N") if which == 1 else (self.args.tlsguardd2, "N+1")
        d = Agent(binary, self.args, self.cgroup.path, self.senders_path, self.sock,
                  os.path.join(self.tmp, "tlsguardd-%d.log" % (len(self.daemons) + 1)), label)
        self.daemons.append(d)
        d.start()
        return d

    def ctl(self, *cmd):
        return run_cmd([self.args.tlsguardctl, "--socket", self.sock, *cmd], timeout=30)

    def diagnostics(self):
        out = []
        for i, d in enumerate(self.daemons, 1):
            out.append("--- tlsguardd #%d %s (%s)" % (i, d.label, d.log_path))
            out += ["  " + ln for ln in d.log_text().splitlines()[-15:]]
        return out


def only_new_programs(ctx, gen, old_gen):
    """Exactly the three programs on the cgroup, each using maps of gen and none of old_gen's."""
    p = []
    progs = attached(ctx.cgroup.path)
    names = sorted(n for _, n in progs)
    if names != PROGRAMS:
        p.append("bpftool cgroup show lists %s, expected %s" % (names, PROGRAMS))
    new_ids = gen_map_ids(gen)
    for pid, name in progs:
        used = set(bpftool_json("prog", "show", "id", str(pid)).get("map_ids", []))
        if old_gen and used & old_gen:
            p.append("%s (prog %d) uses maps of the old generation" % (name, pid))
        if not used & new_ids:
            p.append("%s (prog %d) uses no map of %s" % (name, pid, gen))
    return p


def same_build(old, to, ctx):
    return old.argv[0] == (ctx.args.tlsguardd if to == 1 else ctx.args.tlsguardd2)


def carried_after_swap(ctx, mx):
    """MAIL commands at mx, after an upgrade's new agent was ready, on
    connections opened before the old agent was stopped: mail that went
    under the old generation's programs after the swap."""
    n = 0
    for c in mx.connections():
        ev = c.snapshot()
        if not ev:
            continue
        for t_stop, t_ready in ctx.swaps:
            if ev[0].t < t_stop:
                n += sum(1 for e in ev if e.kind == "line" and e.t > t_ready
                         and e.data.upper().startswith("MAIL FROM:"))
    return n


def transition(ctx, how, to, info):
    """Stop the running agent (kill9 or sigterm), start build ``to`` at once;
    check the new generation, the drain of the old one and the cgroup."""
    p = []
    old = ctx.agent
    before = generations()
    old_ids = set()
    for g in before:
        old_ids |= gen_map_ids(g)
    sampler = Sampler(ctx.cgroup.path)
    sampler.start()
    t0 = time.monotonic()
    t_stop = time.time()
    try:
        if how == "kill9":
            old.kill9()
        else:
            why = old.sigterm()  # not stop(): that detaches too
            if why:
                p.append(why)
        new = ctx.start(to)
    finally:
        ready = time.monotonic() - t0
    if not same_build(old, to, ctx):
        ctx.swaps.append((t_stop, time.time()))
    text = new.log_text()
    gens = generations()
    same = same_build(old, to, ctx)
    if same:
        if ADOPT_TEXT not in text:
            p.append("the same build restarted did not adopt its generation")
        if gens != before:
            p.append("generations %s became %s on a restart of the same build" % (before, gens))
        new_gen = gens[0] if gens else None
        old_gen_ids = set()
    else:
        if OTHER_LAYOUT_TEXT not in text:
            p.append("%s did not log %r" % (new.label, OTHER_LAYOUT_TEXT))
        fresh = [g for g in gens if g not in before]
        if len(fresh) != 1:
            p.append("generations before %s, after %s: expected one new" % (before, gens))
        new_gen = fresh[0] if fresh else None
        old_gen_ids = old_ids
        rc, out, err = ctx.ctl("status", "--json")
        try:
            st = json.loads(out.split("\n", 1)[1] if out.startswith("ok") else out)
        except (ValueError, IndexError):
            st = {}
        if st.get("pinned", "").rpartition("/")[2] != new_gen:
            p.append("status --json names %r as pinned, expected %s" % (st.get("pinned"), new_gen))
        draining = [d["dir"].rpartition("/")[2] for d in st.get("draining", [])]
        gone = set(before) - set(generations())  # drained since: no longer listed
        if not set(draining) <= set(before) or set(before) - set(draining) - gone:
            p.append("status --json drains %s, expected the old generation %s" % (draining, before))
        conns = sum(d.get("connections", 0) for d in st.get("draining", []))
        ctx.draining.append(conns)
        info.append("right after the start, %d connection(s) of %s drain under their own programs" % (
            conns, ", ".join(draining) or "no generation"))
        deadline = time.monotonic() + TIMEOUT_DRAIN
        while time.monotonic() < deadline and (generations() != [new_gen] or DRAINED_TEXT not in new.log_text()):
            time.sleep(0.25)
        if generations() != [new_gen]:
            p.append("after %.0fs the generations are %s, expected only %s" % (TIMEOUT_DRAIN, generations(),
                                                                                  new_gen))
        info.append("drained: %s" % "; ".join(ln.split(": ", 1)[-1] for ln in new.log_text().splitlines()
                                             if DRAINED_TEXT in ln))
    sampler.stopping.set()
    sampler.join()
    if sampler.gaps:
        p.append("the cgroup lacked a program in %d of %d samples: %s" % (
            len(sampler.gaps), sampler.samples, "; ".join(sampler.gaps[:3])))
    if new_gen:
        p += only_new_programs(ctx, new_gen, old_gen_ids)
    info.append("%s -> %s (%s): ready in %.1fs, %s -> %s, %d cgroup samples" % (
        old.label, new.label, how, ready, before, generations(), sampler.samples))
    time.sleep(RUN_BETWEEN)
    if not new.alive():
        p.append("%s exited: %s" % (new.label, new.log_tail()))
    return p


def statuses(pf, mails):
    """{marker: [Status...]} in log order."""
    out = {m.marker: [] for _, m in mails}
    for m, qid, rcpt, st in pf.mail_log([m for _, m in mails]):
        if st is not None:
            out[m.marker].append(st)
    return out


def settle(pf, mails, timeout):
    deadline = time.monotonic() + timeout
    while True:
        h = statuses(pf, mails)
        if all(h[m.marker] and h[m.marker][-1].status in ("sent", "bounced") for _, m in mails):
            return h
        if time.monotonic() >= deadline:
            return h
        time.sleep(0.5)


def main(argv=None):
    ap = harness.arg_parser(__doc__, keep_help="logs, queue, mailboxes",
                            verbose_help="show diagnostics of failed cases")
    ap.add_argument("--tlsguardd2", required=True, help="the other layout's build (make layout2)")
    args = ap.parse_args(argv)
    results = harness.Results(shown=6)
    global PIN_DIR
    PIN_DIR = "/sys/fs/bpf/tlsguard-upgrade-%s" % secrets.token_hex(4)

    def report(name, problems, info=()):
        results.report(name, problems, info)
        if problems and args.verbose and ctx is not None:
            for line in ctx.diagnostics():
                print("    " + line, flush=True)

    ctx = None
    with harness.Run(results, keep=args.keep,
                     root="upgrade_run.py must run as root (cgroups, bpffs, port 25, Postfix)") as suite:
        try:
            harness.require_tools(args.tlsguardd, args.tlsguardd2, args.tlsguardctl, postfix=True)
            if shutil.which(BPFTOOL) is None:
                raise RuntimeError("bpftool is missing (apt-get install bpftool)")
            tmp, cgroup = suite.workspace("tlsguard-upgrade", 0o755)
            mx_plain = suite.started(TestMX(MX_PLAIN, 25, name="plain"))
            mx_other = suite.started(TestMX(MX_OTHER, 25, name="other"))
            pf = suite.postfix(PostfixInstance(os.path.join(tmp, "postfix"), cgroup, TRANSPORTS,
                                               [OTHER_DOMAIN, GUARANTEED_DOMAIN], mailboxes=["postmaster@mta.test"],
                                               extra_main=POSTFIX_EXTRA))
            senders_path = suite.write("senders", SENDERS_FILE)

            def unpin():
                """Every tlsguardd we started gone, the pins removed, nothing on the cgroup."""
                problems = []
                if ctx is not None:
                    if ctx.agent is not None and ctx.agent.alive():
                        ctx.ctl("--pin-dir", PIN_DIR, "detach")
                        try:
                            ctx.agent.proc.wait(TIMEOUT_EXIT)
                        except subprocess.TimeoutExpired:
                            problems.append("tlsguardd did not exit after detach (SIGKILL)")
                    for d in ctx.daemons:
                        if d.alive():
                            d.kill9()
                if os.path.lexists(PIN_DIR):
                    sock = ctx.sock if ctx is not None else os.path.join(tmp, "none.sock")
                    rc, out, err = run_cmd([args.tlsguardctl, "--socket", sock, "--pin-dir", PIN_DIR, "detach"])
                    if rc != 0:
                        problems.append("tlsguardctl detach: exit %s: %s%s" % (rc, out, err))
                if os.path.lexists(PIN_DIR):
                    problems.append("%s still exists" % PIN_DIR)
                try:
                    if attached(cgroup.path):
                        problems.append("programs left on the cgroup: %s" % attached(cgroup.path))
                except (RuntimeError, ValueError):
                    pass
                return problems
            suite.push(unpin)
            ctx = Ctx(args, tmp, cgroup, senders_path)
        except (PostfixMissing, PostfixError, RuntimeError, OSError) as e:
            report("setup", [str(e)])
        else:
            run_cases(args, ctx, suite, pf, mx_plain, mx_other, report)
    return suite.finish()


def run_cases(args, ctx, suite, pf, mx_plain, mx_other, report):
    """The transitions under the stream, then the MXs' record."""
    stream = Stream(pf, secrets.token_hex(3))
    suite.push(lambda: (stream.stopping.set(), stream.join(10)) and None)
    steps = [
        ("start_n", None, 1),
        ("upgrade_kill9", "kill9", 2),
        ("downgrade_kill9", "kill9", 1),
        ("upgrade_sigterm", "sigterm", 2),
        ("downgrade_sigterm", "sigterm", 1),
        ("same_layout_restart", "kill9", 1),
    ]
    broken = False
    for name, how, to in steps:
        info = []
        if broken:
            report(name, ["not run: an earlier transition failed to start its agent"])
            continue
        try:
            if how is None:
                ctx.start(to)
                gens = generations()
                links = sorted(f for f in os.listdir(PIN_DIR) if f.endswith("_link"))
                problems = [] if len(gens) == 1 else ["generations: %s, expected one" % gens]
                if links != ["tg_connect4_link", "tg_connect6_link", "tg_sockops_link"]:
                    problems.append("links pinned: %s" % links)
                info.append("generation %s, links %s" % (gens, links))
                stream.start()
                time.sleep(RUN_BETWEEN)
            else:
                problems = transition(ctx, how, to, info)
        except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as e:
            problems = ["%s: %s" % (type(e).__name__, e)]
            broken = ctx.agent is None or not ctx.agent.alive()
        report(name, problems, info)

    stream.stopping.set()
    stream.join(10)
    carried = carried_after_swap(ctx, mx_other)
    p = [] if any(ctx.draining) else [
        "no old generation had a live connection at any upgrade (%s): draining was not exercised" % ctx.draining]
    # Which cached connection Postfix reuses after the swap is its own choice
    # (under TCG the only one left may be the guaranteed sender's): the
    # count is reported, the outcome of each mail is asserted below.
    report("old_connections_drained", p, [
        "connections left to each old generation at the swap: %s; %d non-guaranteed MAIL(s) carried over them "
        "after the swap, under the old programs" % (ctx.draining, carried)])
    mails = list(stream.mails)
    h = settle(pf, mails, TIMEOUT_FINAL)

    # The whole MX record: no guaranteed envelope, ever.
    leaks = []
    for mx in (mx_plain, mx_other):
        for c in mx.connections():
            for ln in c.lines():
                low = ln.lower()
                if low.startswith("mail from:") and "@" + GUARANTEED_DOMAIN in low:
                    leaks.append("%s#%d %r" % (mx.name, c.id, ln[:70]))
    g_mails = [m for g, m in mails if g]
    n_mails = [m for g, m in mails if not g]
    for m in g_mails:
        rc = m.recipients[0].lower()
        for mx in (mx_plain, mx_other):
            for c in mx.connections():
                if any(m.marker in ln or (ln.lower().startswith("rcpt to:") and rc in ln.lower())
                       for ln in c.lines()):
                    leaks.append("%s#%d carries %s" % (mx.name, c.id, m.marker))
    report("no_guaranteed_in_clear", ["LEAK: %s" % "; ".join(leaks[:5])] if leaks else [],
           ["%d guaranteed mails streamed, %d MX connections" % (
               len(g_mails), len(mx_plain.connections()) + len(mx_other.connections()))])

    p, deferred, deferred_mails = [], 0, 0
    carriers = {}
    for c in mx_other.connections():
        for t in c.transactions():
            for ln in (t.data or []):
                if "marker: " in ln:
                    carriers.setdefault(ln.split("marker: ", 1)[1].strip(), []).append(t)
    for m in n_mails:
        sts = h[m.marker]
        d = sum(1 for s in sts if s.status == "deferred")
        deferred += d
        deferred_mails += d > 0
        if not sts or sts[-1].status != "sent":
            p.append("%s <%s>: %s" % (m.marker, m.sender, "no status" if not sts else "status=%s (%s)" % (
                sts[-1].status, sts[-1].text)))
        if any(s.status == "bounced" for s in sts):
            p.append("%s <%s>: REFUSED (bounced)" % (m.marker, m.sender))
        got = carriers.get(m.marker, [])
        if len(got) != 1:
            p.append("%s <%s>: at the MX %d times, expected once" % (m.marker, m.sender, len(got)))
        elif normalize(got[0].sender) != normalize(m.sender):
            p.append("%s: MX saw MAIL FROM:<%s>" % (m.marker, got[0].sender))
    if stream.errors:
        p.append("sendmail failed %d times: %s" % (len(stream.errors), stream.errors[0]))
    sent = sum(1 for m in n_mails if h[m.marker] and h[m.marker][-1].status == "sent")
    report("others_delivered", p, ["%d non-guaranteed mails, %d sent, none refused; %d deferral(s) of %d "
                                   "mail(s) on the way" % (len(n_mails), sent, deferred, deferred_mails)])

    p, deferred, deferred_mails = [], 0, 0
    for m in g_mails:
        sts = h[m.marker]
        d = sum(1 for s in sts if s.status == "deferred")
        deferred += d
        deferred_mails += d > 0
        if any(s.status == "sent" for s in sts):
            p.append("%s <%s>: status=sent" % (m.marker, m.sender))
        if not sts:
            p.append("%s <%s>: no status" % (m.marker, m.sender))
        elif sts[-1].status != "bounced" or sts[-1].dsn != TLS_DSN or TLS_TEXT not in sts[-1].text:
            p.append("%s <%s>: status=%s dsn=%s (%s)" % (m.marker, m.sender, sts[-1].status, sts[-1].dsn,
                                                         sts[-1].text))
    bounced = sum(1 for m in g_mails if h[m.marker] and h[m.marker][-1].status == "bounced")
    report("guaranteed_bounced", p, ["%d guaranteed mails, %d bounced %s; %d deferral(s) of %d mail(s) "
                                     "on the way (held while no agent ran: failed closed)" % (
                                         len(g_mails), bounced, TLS_DSN, deferred, deferred_mails)])


if __name__ == "__main__":
    sys.exit(main())
