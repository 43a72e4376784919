#!/usr/bin/python3
"""End-to-end test run for tlsguard: Postfix in a cgroup -> test MXs on loopback.

Usage (as root; builds nothing):
    /usr/bin/python3 tests/e2e/suites/hold_run.py [--tlsguardd build/tlsguardd]
        [--tlsguardctl build/tlsguardctl] [--no-tlsguard] [--keep] [-v]

Setup: a temp dir, a cgroup v2 directory, recording test MXs on
127.0.0.2:25 (PIPELINING), 127.0.0.3:25 (no PIPELINING) and [::1]:25, a
private Postfix instance whose master runs in the cgroup, a senders file, and
(unless --no-tlsguard) ``tlsguardd --cgroup DIR --senders FILE --port 25
--socket SOCK``, ready once ``tlsguardctl --socket SOCK status`` exits 0.

Every case injects its mails first; then the run waits once for all
outcomes (Postfix log statuses, then the expected DSNs).  Expected outcome
of each recipient:
  * guaranteed sender (per the senders file, see ``Senders``) with tlsguard:
    ``tls``  -- status=bounced dsn=5.7.10 "TLS is required, but was not
    offered by host", exactly one DSN in the sender's mailbox naming every
    recipient, and nothing of the transaction (MAIL FROM of that sender, RCPT
    of its recipients, the body marker) at any MX; where Postfix used a fresh
    connection, the MX has a connection that saw EHLO and nothing but
    RSET/QUIT/NOOP after it;
  * local part ``reject-*`` (the test MX refuses it): ``rejected`` -- bounced
    with the MX's 550 text (the harness self-check of the bounce plumbing);
  * otherwise ``sent`` -- status=sent and exactly one transaction at the
    expected MX carrying the marker, with that MAIL FROM and RCPTs.
With --no-tlsguard nobody is guaranteed, so every mail but the self-check's
rejected recipient must be delivered: that validates the harness itself.

Output: ``PASS name`` / ``FAIL name: why`` per case, then exactly
``N passed, M failed`` alone on a line; exit status 0 only if none failed
(2 on a usage error).  Everything created is removed in a ``finally``, also on
Ctrl-C or SIGTERM: tlsguardd (SIGTERM by pid, must exit 0: reported as the
``tlsguardd_shutdown`` case), Postfix (stop, master gone), the MXs, the
cgroup, and the temp dir unless --keep.
"""

import concurrent.futures
import os
import secrets
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "fixtures"))
sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree

import harness  # noqa: E402
from daemon import MAILBOX_DOMAINS, TLS_DSN, TLS_TEXT, Senders, check_nothing_at_mx, ehlo_only  # noqa: E402
from mx import TestMX  # noqa: E402
from postfix_env import (BOUNCE_SUBJECT, PostfixError, PostfixInstance,  # noqa: E402
                         PostfixMissing, bounce_report, check_postfix_installed)

# Test MXs: key -> (address, pipelining) and the domain Postfix routes there.
MXS = {
    "mx2": ("127.0.0.2", True),
    "mx3": ("127.0.0.3", False),
    "mx6": ("::1", True),
}
TRANSPORTS = {
    "mx2.test": "smtp:[127.0.0.2]:25",
    "mx3.test": "smtp:[127.0.0.3]:25",
    "mx6.test": "smtp:[ipv6:::1]:25",
}

SENDERS_FILE = """\
# tlsguard e2e: guaranteed senders (one a line: address or @domain)
alice@mta.test
@guarded.test

# explicit addresses for the concurrency case
""" + "".join("g%d@mta.test\n" % i for i in range(1, 6))

TIMEOUT_STATUS = 60.0  # all Postfix log statuses
TIMEOUT_BOUNCE = 30.0  # all expected DSNs, after the statuses


class Ctx:
    """What the cases share: the instance, the MXs, the results."""

    def __init__(self, pf, mxs, senders, tlsguard, run_id):
        self.pf, self.mxs, self.senders, self.tlsguard, self.run_id = pf, mxs, senders, tlsguard, run_id
        self.outcomes = {}
        self.bounces = {}

    def expect(self, sender, rcpt):
        if self.tlsguard and self.senders.guaranteed(sender):
            return "tls"
        if rcpt.lower().startswith("reject-"):
            return "rejected"
        return "sent"

    def rcpt(self, tag, mx):
        return "%s.%s@%s.test" % (tag, self.run_id, mx)

    # MX views over all hosts
    def all_connections(self):
        return [(key, c) for key, mx in self.mxs.items() for c in mx.connections()]


class Case:
    """A named group of mails; ``mails`` are (Mail, mx key) pairs once injected."""

    def __init__(self, name, plan, extra_check=None):
        self.name, self.plan, self.extra_check = name, plan, extra_check
        self.mails = []

    def inject(self, ctx):
        self.mails = self.plan(ctx)

    def check(self, ctx):
        problems = []
        for mail, mx in self.mails:
            problems += check_mail(ctx, mail, mx)
        if self.extra_check:
            problems += self.extra_check(ctx, self)
        return problems


# ------------------------------------------------------------------ checks

def check_mail(ctx, mail, mx_key):
    """Problems with one mail's outcome, as short strings."""
    p = []
    who = "%s from <%s>" % (mail.marker, mail.sender)
    o = ctx.outcomes.get(mail.marker)
    expect = {r: ctx.expect(mail.sender, r) for r in mail.recipients}
    if o is None or o.queue_id is None:
        return ["%s: never picked up (no cleanup message-id log line)" % who]
    for r, e in expect.items():
        s = o.status_of(r)
        if s is None:
            p.append("%s to <%s>: no final status in the log (expected %s)" % (who, r, e))
            continue
        want = "sent" if e == "sent" else "bounced"
        if s.status != want:
            p.append("%s to <%s>: status=%s (%s), expected %s" % (who, r, s.status, s.text, want))
        elif e == "tls" and (s.dsn != TLS_DSN or TLS_TEXT not in s.text):
            p.append("%s to <%s>: bounced with dsn=%s (%s), expected %s %r" % (who, r, s.dsn, s.text, TLS_DSN,
                                                                            TLS_TEXT))
        elif e == "rejected" and "Recipient address rejected" not in s.text:
            p.append("%s to <%s>: bounced for another reason: %s" % (who, r, s.text))

    # What the MXs saw.
    carriers = [(key, c, t) for key, c in ctx.all_connections() for t in c.transactions()
                if t.data is not None and any(mail.marker in line for line in t.data)]
    delivered = [r for r, e in expect.items() if e == "sent"]
    if delivered:
        if len(carriers) != 1:
            p.append("%s: body reached the MXs %d times, expected once" % (who, len(carriers)))
        for key, c, t in carriers:
            if key != mx_key:
                p.append("%s: delivered to %s, expected %s" % (who, key, mx_key))
            if t.sender != mail.sender:
                p.append("%s: MX saw MAIL FROM:<%s>" % (who, t.sender))
            missing = {r.lower() for r in delivered} - {r.lower() for r in t.recipients}
            if missing:
                p.append("%s: MX transaction lacks RCPT %s" % (who, sorted(missing)))
    if any(e == "tls" for e in expect.values()):
        p += check_nothing_at_mx(ctx, mail, who, carriers)
        p += check_diverted_connection(ctx, mail, mx_key, o, who)

    # The DSN back to the sender.
    bounced = [r for r, e in expect.items() if e != "sent"]
    dsns = ctx.bounces.get((mail.sender, mail.marker), []) if mail.sender else []
    if bounced:
        if len(dsns) != 1:
            p.append("%s: %d DSNs in the mailbox of <%s>, expected 1" % (who, len(dsns), mail.sender))
        for msg in dsns:
            report = bounce_report(msg)
            for r in bounced:
                if "<%s>" % r.lower() not in report.lower():
                    p.append("%s: DSN does not name <%s>" % (who, r))
            for r in delivered:
                if "<%s>" % r.lower() in report.lower():
                    p.append("%s: DSN names delivered recipient <%s>" % (who, r))
            if any(expect[r] == "tls" for r in bounced) and TLS_TEXT not in " ".join(report.split()):
                p.append("%s: DSN lacks %r" % (who, TLS_TEXT))
    elif mail.sender:
        extra = ctx.pf.bounces_for(mail.sender, mail.marker)
        if extra:
            p.append("%s: unexpected DSN in the mailbox of <%s>" % (who, mail.sender))
    return p


def check_diverted_connection(ctx, mail, mx_key, outcome, who):
    fresh = any(s.conn_use == 1 for s in outcome.statuses.values())
    if not fresh:
        return []  # Postfix reused a cached connection: the MX saw an earlier transaction on it
    if not any(ehlo_only(c) for c in ctx.mxs[mx_key].connections()):
        return ["%s: no connection at %s with EHLO and no MAIL/RCPT/DATA" % (who, mx_key)]
    return []


# ------------------------------------------------------------------ cases

def single(name, sender, tags, mx="mx2", extra_check=None):
    def plan(ctx):
        rcpts = [ctx.rcpt(t, mx) for t in tags]
        return [(ctx.pf.send(sender, rcpts, subject=name), mx)]
    return Case(name, plan, extra_check)


def multi(name, specs):
    """specs: [(sender, [tags], mx)]"""
    def plan(ctx):
        return [(ctx.pf.send(s, [ctx.rcpt(t, mx) for t in tags], subject=name), mx) for s, tags, mx in specs]
    return Case(name, plan)


def concurrent_plan(ctx):
    specs = []
    mx_keys = list(MXS)
    for i in range(1, 11):
        sender = ("g%d@mta.test" % i) if i <= 5 else ("h%d@guarded.test" % i)  # file entry / domain entry
        specs.append((sender, "conc-g%d" % i, mx_keys[i % 3]))
        specs.append(("n%d@mta.test" % i, "conc-n%d" % i, mx_keys[(i + 1) % 3]))
    with concurrent.futures.ThreadPoolExecutor(len(specs)) as pool:
        futs = [(pool.submit(ctx.pf.send, s, [ctx.rcpt(t, mx)], "concurrent_20"), mx) for s, t, mx in specs]
        return [(f.result(), mx) for f, mx in futs]


def concurrent_extra(ctx, case):
    """Each guaranteed sender of this case gets exactly one DSN, all told."""
    p = []
    for mail, _ in case.mails:
        if ctx.expect(mail.sender, mail.recipients[0]) == "tls":
            n = sum(BOUNCE_SUBJECT in str(m.get("Subject", "")) for m in ctx.pf.mailbox(mail.sender))
            if n != 1:
                p.append("<%s> has %d DSNs, expected 1" % (mail.sender, n))
    return p


def three_rcpt_extra(ctx, case):
    """In the guaranteed case, the three recipients share one DSN (checked per mail) and
    Postfix tried them in one session: one status line per recipient, same queue id."""
    mail = case.mails[0][0]
    o = ctx.outcomes.get(mail.marker)
    if o is not None and len(o.statuses) != 3:
        return ["%d recipient status lines, expected 3" % len(o.statuses)]
    return []


CASES = [
    single("guaranteed_sender", "alice@mta.test", ["basic"]),
    single("other_sender", "bob@mta.test", ["other"]),
    single("domain_entry", "carol@guarded.test", ["domain"]),
    single("mixed_case_tag", "Alice+News@MTA.test", ["casetag"]),
    single("null_sender", "", ["null"]),
    single("three_recipients", "alice@mta.test", ["three1", "three2", "three3"], extra_check=three_rcpt_extra),
    multi("no_pipelining_mx", [("alice@mta.test", ["nopipe-g"], "mx3"), ("bob@mta.test", ["nopipe-n"], "mx3")]),
    multi("ipv6_mx", [("alice@mta.test", ["v6-g"], "mx6"), ("bob@mta.test", ["v6-n"], "mx6")]),
    Case("concurrent_20", concurrent_plan, concurrent_extra),
    # Harness self-check: the bounce plumbing works without tlsguard's help.
    single("selfcheck_mx_reject", "dave@mta.test", ["reject-self", "accept-self"]),
]

MAILBOXES = (["alice@mta.test", "bob@mta.test", "carol@guarded.test", "dave@mta.test", "postmaster@mta.test"]
             + ["g%d@mta.test" % i for i in range(1, 6)] + ["h%d@guarded.test" % i for i in range(6, 11)]
             + ["n%d@mta.test" % i for i in range(1, 11)])


# ------------------------------------------------------------------ main

def run_cases(args, pf, mxs, report):
    """Inject every case's mails, wait for all outcomes once, then check each case."""
    ctx = Ctx(pf, mxs, Senders(SENDERS_FILE), not args.no_tlsguard, secrets.token_hex(3))
    for case in CASES:
        case.inject(ctx)
    all_mails = [m for case in CASES for m, _ in case.mails]
    ctx.outcomes = pf.wait_final(all_mails, TIMEOUT_STATUS)
    # Wait for a DSN only where the log says one is coming; a missing one is a failure anyway.
    wanted = [(m.sender, m.marker) for m in all_mails
              if m.sender and any(s.status == "bounced" for s in ctx.outcomes[m.marker].statuses.values())]
    ctx.bounces = pf.wait_bounces(wanted, TIMEOUT_BOUNCE)
    time.sleep(0.5)  # let anything unexpected (a second DSN, late MX lines) show up
    ctx.bounces = {w: pf.bounces_for(*w) for w in wanted}
    for case in CASES:
        problems = case.check(ctx)
        report(case.name, problems)
        if problems and args.verbose:  # the log lines of the mails named in the problems
            qids = {ctx.outcomes[m.marker].queue_id for m, _ in case.mails
                    if any(m.marker in p for p in problems)} - {None}
            for line in pf.log_lines():
                if any(q in line for q in qids):
                    print("    " + line)


def parse_args(argv):
    ap = harness.arg_parser(__doc__, keep_help="logs, queue, mailboxes", verbose_help="show log lines of failed cases")
    ap.add_argument("--no-tlsguard", action="store_true",
                    help="do not start tlsguardd; expect every mail delivered (validates the harness)")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    results = harness.Results()
    report = results.report
    with harness.Run(results, keep=args.keep, root="hold_run.py must run as root (cgroups, port 25, Postfix)") as suite:
        try:
            check_postfix_installed()
            if not args.no_tlsguard:
                for path in (args.tlsguardd, args.tlsguardctl):
                    if not os.access(path, os.X_OK):
                        raise RuntimeError("%s is missing or not executable (run make, or use --no-tlsguard)"
                                           % path)
            tmp, cgroup = suite.workspace("tlsguard-e2e", 0o755)
            mxs = {key: suite.started(TestMX(host, 25, pipelining=pipelining, name=key,
                                             jsonl_path=os.path.join(tmp, "mx.jsonl")))
                   for key, (host, pipelining) in MXS.items()}
            pf = suite.postfix(PostfixInstance(os.path.join(tmp, "postfix"), cgroup, TRANSPORTS, MAILBOX_DOMAINS,
                                               mailboxes=MAILBOXES))
            if not args.no_tlsguard:
                # the test instance's settings: its routes and recipient_delimiter
                suite.daemon(args, cgroup, SENDERS_FILE, "--postfix-config", pf.conf)
        except (PostfixMissing, PostfixError, RuntimeError, OSError) as e:
            report("setup", [str(e)])
        else:
            with suite.guard(PostfixError, OSError, subprocess.SubprocessError):
                run_cases(args, pf, mxs, report)
    return suite.finish()


if __name__ == "__main__":
    sys.exit(main())
