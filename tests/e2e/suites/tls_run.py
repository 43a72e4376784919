#!/usr/bin/python3
"""End-to-end TLS run for tlsguard: Postfix in a cgroup -> STARTTLS test MXs on loopback.

Usage (as root; builds nothing):
    /usr/bin/python3 tests/e2e/suites/tls_run.py [--tlsguardd build/tlsguardd]
        [--tlsguardctl build/tlsguardctl] [--keep] [-v]

Setup: a temp dir, a cgroup v2 directory, recording test MXs (mx.py, real
OpenSSL handshakes) and a STARTTLS-stripping proxy (tlsproxy.py) on
127.0.0.40 and up, port 25:

    .40 TLS 1.3 only            .41 TLS 1.2 only
    .42 TLS 1.3 only  <- .43 StripProxy (removes STARTTLS from EHLO replies)
    .44 STARTTLS refused (454)
    .45 STARTTLS 220, then the handshake broken by FIN (fail="close")
    .46 STARTTLS 220, then a fatal handshake_failure alert (fail="alert")
    .47 TLS 1.0 only            .48 TLS 1.1 only
    .49 TLS 1.3 only, .50 TLS 1.0 only: for the live ``tlsguardctl flows`` case

a private Postfix instance (postfix_env.py) whose master runs in the cgroup,
at ``smtp_tls_security_level = may`` with Postfix's default protocols and
ciphers (Postfix 3.7 then negotiates 1.0 and 1.1, see tls_selftest.py),
``smtp_tls_loglevel = 1`` and ``minimal_backoff_time = queue_run_delay = 2s``
(``maximal_backoff_time = 10s``), so that Postfix's plaintext retry after a
failed TLS handshake or session comes seconds after the first attempt, and
``tlsguardd --cgroup DIR --senders FILE --port 25 --socket SOCK`` (daemon.py's
``Daemon``).  Guaranteed senders: ``@guarded.test``; every case has its own
sender addresses, so "no MAIL FROM of that sender at any MX" is exact.

Every mail case injects its mails first; then the run waits once for all
final statuses and the DSNs the log announces, noting when each was first
seen.  Expected outcomes:
  * ``sent`` -- status=sent, no DSN, exactly one transaction at the expected
    MX carrying the marker, with that MAIL FROM and RCPT, whose MAIL FROM
    arrived under the expected TLS version (``Transaction.tls_version``;
    ``None``: plaintext);
  * ``bounced`` -- status=bounced dsn=5.7.10 with the expected cause "(in
    reply to MAIL FROM command)", exactly one DSN "Undelivered Mail Returned
    to Sender" in the sender's mailbox naming the recipient and the cause, and
    nothing of the transaction at any MX in any connection, plaintext or TLS
    (no MAIL FROM of that sender, no RCPT of its recipient, no marker).
Cases: tls13_delivered, tls12_delivered, strip_proxy, starttls_refused,
handshake_fail_close, handshake_fail_alert, weak_tls10, weak_tls11 (their
time from injection to the bounce is printed: Postfix's ``delay=`` and when
the DSN was first seen in the mailbox), then flows_live: two Python smtplib
clients in the test cgroup pause after EHLO inside TLS 1.3 / TLS 1.0 while
``tlsguardctl flows`` must list them as ``tls TLSv1.3`` and ``weak-tls
TLSv1.0``; then they QUIT and their flows must leave the list.

Output: ``PASS name`` / ``FAIL name: why`` per case (with indented detail
lines for the weak and handshake cases), then exactly ``N passed, M
failed`` alone on a line; exit status 0 only if none failed (2 on a usage
error).  Everything created is removed in a ``finally``, also on Ctrl-C or
SIGTERM: the flows clients (by pid), tlsguardd (SIGTERM by pid, must exit 0:
the ``tlsguardd_shutdown`` case), Postfix, the MXs and the proxy, the cgroup,
and the temp dir unless --keep.
"""

import os
import re
import secrets
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "fixtures"))
sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree

import harness  # noqa: E402
from daemon import GUARDED_SENDERS, MAILBOX_DOMAINS, TLS_TEXT, WEAK_TEXT, Senders  # noqa: E402
from flows import FlowsClient, flows_for, flows_table  # noqa: E402
from mx import TestMX, TLSOptions  # noqa: E402
from postfix_env import PostfixError, PostfixInstance, PostfixMissing  # noqa: E402
from tlsproxy import StripProxy  # noqa: E402
from wants import Ctx, Want, carriers_of, check_want, describe_conns, mail_verbs, short  # noqa: E402


# key -> (address, TLSOptions): the recording MXs.
MXS = {
    "tls13": ("127.0.0.40", TLSOptions(version="1.3")),
    "tls12": ("127.0.0.41", TLSOptions(version="1.2")),
    "strip-up": ("127.0.0.42", TLSOptions(version="1.3")),
    "refuse": ("127.0.0.44", TLSOptions(starttls="refuse")),
    "fail-close": ("127.0.0.45", TLSOptions(starttls="fail", fail="close")),
    "fail-alert": ("127.0.0.46", TLSOptions(starttls="fail", fail="alert")),
    "tls10": ("127.0.0.47", TLSOptions(version="1.0")),
    "tls11": ("127.0.0.48", TLSOptions(version="1.1")),
    "flows13": ("127.0.0.49", TLSOptions(version="1.3")),
    "flows10": ("127.0.0.50", TLSOptions(version="1.0")),
}
STRIP = "127.0.0.43"  # the proxy; its upstream is MXS["strip-up"]
# domain -> (address Postfix connects to, key of the MX that records the session)
ROUTES = {
    "tls13.test": (MXS["tls13"][0], "tls13"),
    "tls12.test": (MXS["tls12"][0], "tls12"),
    "strip.test": (STRIP, "strip-up"),
    "refuse.test": (MXS["refuse"][0], "refuse"),
    "failclose.test": (MXS["fail-close"][0], "fail-close"),
    "failalert.test": (MXS["fail-alert"][0], "fail-alert"),
    "tls10.test": (MXS["tls10"][0], "tls10"),
    "tls11.test": (MXS["tls11"][0], "tls11"),
}
SENDERS_FILE = GUARDED_SENDERS
POSTFIX_MAIN = {  # spelled out although postfix_env.py has the same values: the run depends on them
    "smtp_tls_security_level": "may",
    "smtp_tls_loglevel": "1",
    "queue_run_delay": "2s",
    "minimal_backoff_time": "2s",  # Postfix's plaintext fallback needs the mail this old when it goes active
    "maximal_backoff_time": "10s",
}

TIMEOUT_STATUS = 75.0  # all final statuses
TIMEOUT_BOUNCE = 20.0  # the announced DSNs, after the statuses
TIMEOUT_CLIENT = 20.0  # a flows client reaching "READY"
TIMEOUT_FLOW_GONE = 5.0


class Case:
    def __init__(self, name, plan, extra_check=None, info=None):
        self.name, self.plan, self.extra_check, self.info = name, plan, extra_check, info
        self.wants = []

    def inject(self, ctx):
        self.wants = self.plan(ctx)

    def check(self, ctx):
        problems = []
        for w in self.wants:
            problems += check_want(ctx, w)
        if self.extra_check:
            problems += self.extra_check(ctx, self)
        return problems


# ------------------------------------------------------------------ checks

def tls_established(ctx, addr):
    """Versions in Postfix's "... TLS connection established to ADDR[ADDR]:25: VERSION with cipher" lines."""
    rx = re.compile(r"TLS connection established to %s\[%s\]:25: (\S+) with cipher" % (
        re.escape(addr), re.escape(addr)))
    return [m.group(1) for m in map(rx.search, ctx.pf.log_lines()) if m]


# ------------------------------------------------------------------ cases

def pair(name, key_domain, guaranteed, other=None):
    """guaranteed / other: (outcome, tls, text) for a guaranteed and (optionally) a non-guaranteed sender."""
    def plan(ctx):
        wants = []
        specs = [("%s@guarded.test" % name.replace("_", "-"), "g", guaranteed)]
        if other:
            specs.append(("%s@mta.test" % name.replace("_", "-"), "n", other))
        for sender, tag, (outcome, tls, text) in specs:
            rcpt = ctx.rcpt("%s-%s" % (name.replace("_", "-"), tag), key_domain)
            mail = ctx.pf.send(sender, [rcpt], subject=name)
            wants.append(Want(mail, ROUTES[key_domain][1], outcome, tls, text))
        return wants
    return plan


def tls_delivered_check(domain, version):
    def check(ctx, case):
        addr = ROUTES[domain][0]
        got = tls_established(ctx, addr)
        if version not in got:
            return ["Postfix logged no %s connection established to %s (saw %s)" % (version, addr, got or "none")]
        return []
    return check


def strip_check(ctx, case):
    p = []
    conns = ctx.proxy.connections()
    if not any(c.stripped() for c in conns):
        p.append("the proxy stripped no STARTTLS (harness problem)")
    up = ctx.mxs["strip-up"]
    if any("STARTTLS" in mail_verbs(c) or c.tls_version for c in up.connections()):
        p.append("STARTTLS reached the upstream MX: %s" % describe_conns(up))
    if tls_established(ctx, STRIP):
        p.append("Postfix logged a TLS connection to the proxy")
    return p


def refuse_check(ctx, case):
    mx = ctx.mxs["refuse"]
    if not any("STARTTLS" in mail_verbs(c) and not c.tls_version for c in mx.connections()):
        return ["no connection at the MX sent STARTTLS and stayed in plaintext: %s" % describe_conns(mx)]
    return []


def handshake_check(key):
    """Both mails met the broken handshake first (4.7.5 deferral), and the MX never saw TLS."""
    def check(ctx, case):
        p = []
        mx = ctx.mxs[key]
        if any(c.tls_version for c in mx.connections()):
            p.append("a handshake at %s completed (harness problem)" % key)
        if not any(c.tls_error for c in mx.connections()):
            p.append("no broken handshake recorded at %s" % key)
        for w in case.wants:
            h = ctx.history(w.mail)
            if not any(st == "deferred" and dsn == "4.7.5" for st, dsn, _, _, _ in h):
                p.append("%s from <%s>: no 4.7.5 deferral before the final status (%s)" % (
                    w.mail.marker, w.mail.sender, [(st, dsn) for st, dsn, _, _, _ in h]))
            if w.outcome == "sent":
                for _, c, _ in carriers_of(ctx, w.mail):
                    if "STARTTLS" in mail_verbs(c):
                        p.append("%s: delivered on a connection that sent STARTTLS" % w.mail.marker)
        return p
    return check


def weak_check(key, version):
    """The guaranteed mail's TLS session(s) at the MX: EHLO inside TLS and nothing more."""
    def check(ctx, case):
        mx = ctx.mxs[key]
        cut = [c for c in mx.connections() if c.tls_version == version and mail_verbs(c, tls=True) <= {"EHLO"}
               and "EHLO" in mail_verbs(c, tls=True)]
        if not cut:
            return ["no %s session at %s with EHLO inside TLS and nothing more: %s" % (
                version, key, describe_conns(mx))]
        return []
    return check


def timing_info(ctx, case):
    """For each bounced mail: its attempts and its time from injection to bounce."""
    out = []
    for w in case.wants:
        h = ctx.history(w.mail)
        tries = ", ".join("%s %s (%s) delay=%s" % (st, dsn, short(text), d) for st, dsn, text, d, _ in h)
        out.append("<%s>: %s" % (w.mail.sender, tries or "no status"))
        if w.outcome != "bounced":
            continue
        final = [d for st, _, _, d, _ in h if st == "bounced"]
        dsn_at = ctx.dsn_seen.get(w.mail.marker)
        out.append("<%s>: time to bounce: Postfix delay=%ss (arrival to bounce); DSN in the mailbox %s after "
                   "injection" % (w.mail.sender, final[-1] if final else "?",
                                  "%.1fs" % (dsn_at - w.mail.injected_at) if dsn_at else "never"))
    key = case.wants[0].mx if case.wants else None
    if key:
        out.append("%s connections: %s" % (key, "; ".join(describe_conns(ctx.mxs[key]))))
    return out


S_TLS13 = ("sent", "TLSv1.3", None)
S_TLS12 = ("sent", "TLSv1.2", None)
S_PLAIN = ("sent", None, None)
B_NOTLS = ("bounced", None, TLS_TEXT)

CASES = [
    Case("tls13_delivered", pair("tls13_delivered", "tls13.test", S_TLS13),
         tls_delivered_check("tls13.test", "TLSv1.3")),
    Case("tls12_delivered", pair("tls12_delivered", "tls12.test", S_TLS12),
         tls_delivered_check("tls12.test", "TLSv1.2")),
    Case("strip_proxy", pair("strip_proxy", "strip.test", B_NOTLS, S_PLAIN), strip_check),
    Case("starttls_refused", pair("starttls_refused", "refuse.test", B_NOTLS, S_PLAIN), refuse_check),
    Case("handshake_fail_close", pair("handshake_fail_close", "failclose.test", B_NOTLS, S_PLAIN),
         handshake_check("fail-close"), timing_info),
    Case("handshake_fail_alert", pair("handshake_fail_alert", "failalert.test", B_NOTLS, S_PLAIN),
         handshake_check("fail-alert"), timing_info),
    Case("weak_tls10", pair("weak_tls10", "tls10.test", ("bounced", None, WEAK_TEXT % "TLSv1.0"),
                            ("sent", "TLSv1", None)), weak_check("tls10", "TLSv1"), timing_info),
    Case("weak_tls11", pair("weak_tls11", "tls11.test", ("bounced", None, WEAK_TEXT % "TLSv1.1"),
                            ("sent", "TLSv1.1", None)), weak_check("tls11", "TLSv1.1"), timing_info),
]

MAILBOXES = ["%s@%s" % (c.name.replace("_", "-"), d) for c in CASES for d in MAILBOX_DOMAINS] + [
    "postmaster@mta.test"]


# ------------------------------------------------------------------ flows_live

def run_flows_case(cgroup, daemon, mxs, report, verbose):
    want = {"flows13": ("1.3", "tls", "TLSv1.3", "TLSv1.3"), "flows10": ("1.0", "weak-tls", "TLSv1.0", "TLSv1")}
    clients = {}
    p = []
    try:
        for key, (v, _, _, _) in want.items():
            clients[key] = FlowsClient(cgroup, MXS[key][0], v)
        for key, c in clients.items():
            line = c.readline(TIMEOUT_CLIENT)
            if not line or not line.startswith("READY"):
                c.kill()
                _, _, err = c.finish(1)
                p.append("client to %s did not get to EHLO inside TLS: %r %s" % (key, line, err[-300:]))
        if not p:
            table = flows_table(daemon)
            for key, (_, state, ver, _) in want.items():
                rows = flows_for(table, MXS[key][0])
                if len(rows) != 1:
                    p.append("%d rows for %s, expected 1" % (len(rows), MXS[key][0]))
                elif rows[0][1:4] != [state, ver, "offered"]:
                    p.append("%s: %s, expected STATE %s TLS %s STARTTLS offered" % (
                        MXS[key][0], " ".join(rows[0][1:]), state, ver))
            if p:
                p.append("flows output:\n    " + "\n    ".join(table))
            elif verbose:
                print("    " + "\n    ".join(table))
        for key, c in clients.items():
            rc, out, err = c.finish()
            if rc != 0 or not any(x.startswith("QUIT 221") for x in out):
                p.append("client to %s: exit %s, output %s %s" % (key, rc, out, err[-300:]))
        for key, (_, _, _, mx_ver) in want.items():
            conns = mxs[key].connections()
            if [c.tls_version for c in conns] != [mx_ver]:
                p.append("%s recorded %s, expected one %s session" % (key, [c.tls_version for c in conns], mx_ver))
        # Gone from the list once closed.
        deadline = time.monotonic() + TIMEOUT_FLOW_GONE
        while True:
            table = flows_table(daemon)
            left = [MXS[k][0] for k in want if flows_for(table, MXS[k][0])]
            if not left or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        if left:
            p.append("closed flows still listed %.0fs after QUIT: %s" % (TIMEOUT_FLOW_GONE, left))
    finally:
        for c in clients.values():
            c.kill()
    report("flows_live", p)


# ------------------------------------------------------------------ main

def wait_all(ctx, mails):
    """Poll the log and the mailboxes until every mail is final and every announced DSN is in;
    note when each was first seen."""
    deadline = time.monotonic() + TIMEOUT_STATUS
    bounce_deadline = None
    while True:
        now = time.time()
        ctx.outcomes = ctx.pf.outcomes(mails)
        for m in mails:
            o = ctx.outcomes[m.marker]
            if o.final and m.marker not in ctx.final_seen:
                ctx.final_seen[m.marker] = now
        wanted = [m for m in mails if m.sender and any(
            s.status == "bounced" for s in ctx.outcomes[m.marker].statuses.values())]
        for m in wanted:
            if m.marker not in ctx.dsn_seen and ctx.pf.bounces_for(m.sender, m.marker):
                ctx.dsn_seen[m.marker] = now
        all_final = all(o.final for o in ctx.outcomes.values())
        all_dsn = all(m.marker in ctx.dsn_seen for m in wanted)
        if all_final and all_dsn:
            break
        if time.monotonic() >= deadline and not all_final:
            break
        if all_final:
            bounce_deadline = bounce_deadline or time.monotonic() + TIMEOUT_BOUNCE
            if time.monotonic() >= bounce_deadline:
                break
        time.sleep(0.2)
    time.sleep(0.5)  # let anything unexpected (a second DSN, late MX lines) show up
    ctx.outcomes = ctx.pf.outcomes(mails)
    ctx.bounces = {(m.sender, m.marker): ctx.pf.bounces_for(m.sender, m.marker) for m in mails if m.sender}


def run_cases(args, pf, mxs, proxy, report):
    ctx = Ctx(pf, mxs, proxy, Senders(SENDERS_FILE), secrets.token_hex(3))
    for case in CASES:
        case.inject(ctx)
    mails = [w.mail for case in CASES for w in case.wants]
    wait_all(ctx, mails)
    for case in CASES:
        problems = case.check(ctx)
        report(case.name, problems)
        if case.info:
            for line in case.info(ctx, case):
                print("    " + line, flush=True)
        if problems and args.verbose:
            qids = {ctx.outcomes[w.mail.marker].queue_id for w in case.wants} - {None}
            for line in pf.log_lines():
                if any(q in line for q in qids):
                    print("    " + line)
            for key in sorted({w.mx for w in case.wants}):
                print("    %s: %s" % (key, "; ".join(describe_conns(mxs[key]))))
    return ctx


def main(argv=None):
    args = harness.arg_parser(__doc__, keep_help="logs, queue, mailboxes, MX records",
                              verbose_help="show log lines of failed cases").parse_args(argv)
    results = harness.Results()
    report = results.report
    with harness.Run(results, keep=args.keep, root="tls_run.py must run as root (cgroups, port 25, Postfix)") as suite:
        try:
            harness.require_tools(args.tlsguardd, args.tlsguardctl, postfix=True)
            tmp, cgroup = suite.workspace("tlsguard-e2e-tls", 0o755)
            jsonl = os.path.join(tmp, "mx.jsonl")
            mxs = {key: suite.started(TestMX(host, 25, name=key, jsonl_path=jsonl, tls=opts))
                   for key, (host, opts) in MXS.items()}
            proxy = suite.started(StripProxy(STRIP, 25, (MXS["strip-up"][0], 25), name="strip",
                                             jsonl_path=os.path.join(tmp, "proxy.jsonl")))
            pf = suite.postfix(PostfixInstance(os.path.join(tmp, "postfix"), cgroup,
                                               {d: "smtp:[%s]:25" % a for d, (a, _) in ROUTES.items()},
                                               MAILBOX_DOMAINS, mailboxes=MAILBOXES, extra_main=POSTFIX_MAIN))
            daemon = suite.daemon(args, cgroup, SENDERS_FILE)
        except (PostfixMissing, PostfixError, RuntimeError, OSError) as e:
            report("setup", [str(e)])
        else:
            with suite.guard():
                run_cases(args, pf, mxs, proxy, report)
                run_flows_case(cgroup, daemon, mxs, report, args.verbose)
            if args.verbose:
                print(daemon.log_tail(40))
    return suite.finish()


if __name__ == "__main__":
    sys.exit(main())
