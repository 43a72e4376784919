#!/usr/bin/python3
"""End-to-end run of tlsguard with each MTA Debian ships: Postfix, Exim, OpenSMTPD.

Usage (as root; builds nothing):
    /usr/bin/python3 tests/e2e/suites/mta_run.py [--mta exim|opensmtpd|postfix|all]
        [--tlsguardd build/tlsguardd] [--tlsguardctl build/tlsguardctl]
        [--deps build/deps/root] [--keep] [-v]

For each MTA chosen (default ``all``) that can run here: a cgroup v2
directory, a private instance of the MTA started inside it (postfix_env.py,
mta_env.py), and ``tlsguardd --cgroup DIR --senders FILE --port 25 --audit
FILE`` attached to it.  An MTA that is not installed (Postfix: the package;
Exim, OpenSMTPD: ``make mta-deps``) is skipped, and the run says loudly which
and why (a ``SKIP`` line); ``--mta NAME`` for a missing MTA is a failure.

The recording test MX hosts (mx.py, real OpenSSL) and a STARTTLS-stripping
proxy (tlsproxy.py) listen on 127.0.0.200 and up, port 25, for all MTAs:

    .200 no STARTTLS       .201 TLS 1.3 only     .202 TLS 1.2 only
    .203 TLS 1.0 only      .205 StripProxy -> .204 (TLS 1.3 only)
    .206 TLS 1.0 only (Exim's continued connection)

Guaranteed senders: ``@guarded.test``.  Every sender and recipient carries
the MTA's name and the run's id, so that what each MX saw is exact.  Cases,
for each MTA (expected outcome of the MTA's log, the sender's mailbox, the
MX's record and the audit trail):
  * plain_guaranteed -- no STARTTLS: the MTA's own bounce to the sender,
    which carries "TLS is required, but was not offered by host"; the MX
    never sees the MAIL FROM, a RCPT or the body;
  * plain_other -- another sender to the same host: delivered in plaintext;
  * tls13_guaranteed, tls12_guaranteed -- delivered over that version, and
    the audit record (sender, recipient, version, ``delivered``) comes from
    inside TLS: the TLS library's uprobes read it (GnuTLS for Exim, libssl
    for Postfix and OpenSMTPD);
  * strip_guaranteed -- a man in the middle removes STARTTLS from the EHLO
    reply: bounced as plain_guaranteed, and STARTTLS never reaches the MX;
  * weak_tls10 -- a TLS 1.0-only host: the guaranteed sender's envelope never
    reaches the MX, and the audit trail has a ``held-weak-tls`` record with
    ``TLSv1.0``; what becomes of the mail then is the MTA's (see WEAK below
    and the README); another sender's mail is delivered over TLS 1.0 where
    the MTA negotiates it;
  * weak_tls10_continued (Exim) -- another sender's mail and then the
    guaranteed sender's to a second TLS 1.0-only host (.206, a domain Exim
    holds until a forced two-stage queue run), so that Exim sends the second
    down the open connection, through the TLS proxy child it forks: held
    there, and its ``held-weak-tls`` record names that connection.
Times from injection to the final status and to the bounce in the mailbox
are printed for each case.

Output: ``PASS mta/case`` / ``FAIL mta/case: why`` / ``SKIP mta: why``, then
exactly ``N passed, M failed`` (``, K skipped`` when MTAs were skipped)
alone on a line; exit status 0 only if none
failed (2 on a usage error).  Everything created is removed in a
``finally``, also on Ctrl-C or SIGTERM: tlsguardd and the MTAs (by pid), the
MXs and the proxy, the cgroups, and the temp dir unless --keep.
"""

import json
import os
import re
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "fixtures"))
sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree

from mta_env import (DEFAULT_DEPS, EximInstance, MTAError, MTAMissing, SmtpdInstance,  # noqa: E402
                     check_exim, check_smtpd)
import harness  # noqa: E402
from dns_env import LeakWatch, is_test_name  # noqa: E402
from mx import TestMX, TLSOptions  # noqa: E402
from postfix_env import (Cgroup, PostfixError, PostfixInstance, PostfixMissing, bounce_report,  # noqa: E402
                         check_postfix_installed)
from daemon import GUARDED_SENDERS, MAILBOX_DOMAINS, TLS_TEXT, WEAK_TEXT, Daemon, normalize  # noqa: E402
from tlsproxy import StripProxy  # noqa: E402
from wants import over  # noqa: E402

MTAS = ["postfix", "exim", "opensmtpd"]
WEAK_TLS10 = WEAK_TEXT % "TLSv1.0"

MXS = {
    "plain": ("127.0.0.200", None),
    "tls13": ("127.0.0.201", TLSOptions(version="1.3")),
    "tls12": ("127.0.0.202", TLSOptions(version="1.2")),
    "tls10": ("127.0.0.203", TLSOptions(version="1.0")),
    "strip-up": ("127.0.0.204", TLSOptions(version="1.3")),
    "tls10b": ("127.0.0.206", TLSOptions(version="1.0")),
}
STRIP = "127.0.0.205"
# domain -> (the address the MTA connects to, the MX that records the session)
ROUTES = {
    "plain.test": (MXS["plain"][0], "plain"),
    "tls13.test": (MXS["tls13"][0], "tls13"),
    "tls12.test": (MXS["tls12"][0], "tls12"),
    "tls10.test": (MXS["tls10"][0], "tls10"),
    "strip.test": (STRIP, "strip-up"),
    "tls10b.test": (MXS["tls10b"][0], "tls10b"),
}
SENDERS_FILE = GUARDED_SENDERS
POSTFIX_MAIN = {
    "smtp_tls_security_level": "may",
    "queue_run_delay": "2s",
    "minimal_backoff_time": "2s",
    "maximal_backoff_time": "10s",
}

TIMEOUT_FINAL = 90.0  # every mail final
TIMEOUT_BOUNCE = 30.0  # more, for the bounces in the mailboxes
HELD_WATCH = 20.0  # how long a held mail is watched for a leak when its MTA only defers it


@dataclass
class Expect:
    outcome: str  # "sent" | "bounced" | "held" (never delivered: deferred or bounced, whichever)
    tls: str = None  # sent: Transaction.tls_version at the MX (None: plaintext)
    text: str = None  # bounced: the cause in the log and in the bounce
    audit: str = None  # a verdict the audit trail must have for this mail
    audit_tls: str = None  # ... with this tls.version (None: any)


S_PLAIN = Expect("sent")
B_NOTLS = Expect("bounced", text=TLS_TEXT, audit="held-no-tls")

# What becomes of a guaranteed sender's mail to a TLS 1.0-only host, and of
# another sender's, per MTA (measured; see the README).
WEAK = {
    "postfix": (Expect("bounced", text=WEAK_TLS10, audit="held-weak-tls", audit_tls="TLSv1.0"),
                Expect("sent", tls="TLSv1")),
    "exim": (Expect("held", audit="held-weak-tls", audit_tls="TLSv1.0"), Expect("sent", tls="TLSv1")),
    # smtpd's OpenSSL refuses TLS 1.0 (security level 1): the handshake
    # fails, smtpd reconnects at once in plaintext (smtp+notls), where the
    # agent holds the guaranteed sender with the host's version.
    "opensmtpd": (Expect("bounced", text=WEAK_TLS10, audit="held-weak-tls"), Expect("sent")),
}


@dataclass
class Want:
    case: str
    mail: object
    mx: str
    expect: Expect

    @property
    def rcpt(self):
        return self.mail.recipients[0]


@dataclass
class Case:
    name: str
    domain: str
    specs: list  # [(tag "g"|"n", Expect)]
    extra: object = None
    only: tuple = ()  # the MTAs it applies to (empty: all)
    after: object = None  # run(MTARun) once every case has injected
    wants: list = field(default_factory=list)


def cases_for(mta):
    weak_g, weak_n = WEAK[mta]
    return [c for c in all_cases(weak_g, weak_n) if not c.only or mta in c.only]


def all_cases(weak_g, weak_n):
    return [
        Case("plain_guaranteed", "plain.test", [("g", B_NOTLS)]),
        Case("plain_other", "plain.test", [("n", S_PLAIN)]),
        Case("tls13_guaranteed", "tls13.test", [("g", Expect("sent", tls="TLSv1.3", audit="delivered",
                                                              audit_tls="TLSv1.3"))]),
        Case("tls12_guaranteed", "tls12.test", [("g", Expect("sent", tls="TLSv1.2", audit="delivered",
                                                              audit_tls="TLSv1.2"))]),
        Case("strip_guaranteed", "strip.test", [("g", B_NOTLS)], extra=strip_check),
        # The other sender first: an MTA that takes the held attempt for a
        # failure of the host (Exim's retry hints) would make it wait.
        Case("weak_tls10", "tls10.test", [("n", weak_n), ("g", weak_g)]),
        # Exim sends a second message for a host down the open connection;
        # over TLS, the session then goes on in a child that Exim forks (its
        # TLS proxy) and that never gives the session a socket itself.
        Case("weak_tls10_continued", "tls10b.test", [("n", Expect("sent", tls="TLSv1")),
                                                      ("g", Expect("held", audit="held-weak-tls",
                                                                   audit_tls="TLSv1.0"))],
             extra=continued_check, only=("exim",), after=lambda run: run.inst.force_queue_run()),
    ]


# ------------------------------------------------------------------ one MTA

class MTARun:
    def __init__(self, name, inst, mxs, proxy, daemon, audit_path, run_id):
        self.name, self.inst, self.mxs, self.proxy, self.daemon = name, inst, mxs, proxy, daemon
        self.audit_path, self.run_id = audit_path, run_id
        self.cases = cases_for(name)
        self.outcomes = {}
        self.final_at = {}  # marker -> seconds from injection to the final status
        self.bounce_at = {}  # marker -> seconds from injection to the bounce in the mailbox
        self.proxy_before = len(proxy.connections())

    def address(self, case, tag, domain):
        local = "%s-%s-%s.%s" % (case.replace("_", "-"), tag, self.name, self.run_id)
        return "%s@%s" % (local, domain)

    def inject(self):
        for case in self.cases:
            for tag, exp in case.specs:
                sender = self.address(case.name, tag, "guarded.test" if tag == "g" else "mta.test")
                rcpt = self.address(case.name, "r" + tag, case.domain)
                mail = self.inst.send(sender, [rcpt], subject="%s/%s" % (self.name, case.name))
                case.wants.append(Want(case.name, mail, ROUTES[case.domain][1], exp))
        for case in self.cases:
            if case.after:
                case.after(self)

    def wants(self):
        return [w for c in self.cases for w in c.wants]

    def wait(self):
        """Poll until every mail is final and every bounce the log announces is in the mailbox, noting
        when each was first seen.  A "held" mail counts as final once it has been watched HELD_WATCH
        seconds (an MTA that defers it keeps it for hours)."""
        wants = self.wants()
        mails = [w.mail for w in wants]
        start = time.monotonic()
        while True:
            now = time.time()
            self.outcomes = self.inst.outcomes(mails)
            pending = 0
            for w in wants:
                o = self.outcomes[w.mail.marker]
                s = o.status_of(w.rcpt) if o.queue_id else None
                final = s is not None and s.status in ("sent", "bounced")
                if final and w.mail.marker not in self.final_at:
                    self.final_at[w.mail.marker] = now - w.mail.injected_at
                if final and s.status == "bounced" and w.mail.marker not in self.bounce_at:
                    if self.inst.bounces_for(w.mail.sender, w.mail.marker):
                        self.bounce_at[w.mail.marker] = now - w.mail.injected_at
                    else:
                        pending += 1
                if not final and not (w.expect.outcome == "held" and time.monotonic() - start >= HELD_WATCH):
                    pending += 1
            if not pending or time.monotonic() - start >= TIMEOUT_FINAL + TIMEOUT_BOUNCE:
                break
            time.sleep(0.3)
        time.sleep(0.5)  # let anything unexpected (a second bounce, late MX lines) show up
        self.outcomes = self.inst.outcomes(mails)

    def audit_records(self):
        recs = []
        try:
            with open(self.audit_path, errors="replace") as f:
                for line in f:
                    try:
                        recs.append(json.loads(line))
                    except ValueError:
                        recs.append({"_bad": line[:80]})
        except FileNotFoundError:
            pass
        return recs

    def all_connections(self):
        return [(key, c) for key, mx in self.mxs.items() for c in mx.connections()]


# ------------------------------------------------------------------ checks

def carriers_of(run, mail):
    return [(key, c, t) for key, c in run.all_connections() for t in c.transactions()
            if t.data is not None and any(mail.marker in line for line in t.data)]


def nothing_at_mx(run, mail, who):
    p = []
    rcpts = {"<%s>" % r.lower() for r in mail.recipients}
    sender = normalize(mail.sender)
    for key, c in run.all_connections():
        where = "%s#%d" % (key, c.id)
        if any(t.sender and normalize(t.sender) == sender for t in c.transactions()):
            p.append("%s: MAIL FROM of the sender reached %s" % (who, where))
        for line in c.lines():
            low = line.lower()
            if mail.marker in line or (low.startswith("rcpt to:") and any(r in low for r in rcpts)):
                p.append("%s: %s received %r" % (who, where, line[:60]))
    return p


def check_want(run, w):
    p = []
    mail, e = w.mail, w.expect
    who = "<%s>" % mail.sender
    o = run.outcomes.get(mail.marker)
    if o is None or o.queue_id is None:
        return ["%s: the MTA never logged the mail%s" % (who, run.inst.log_tail(8))]
    s = o.status_of(w.rcpt)
    status = s.status if s else None
    bounces = run.inst.bounces_for(mail.sender, mail.marker)
    if e.outcome == "sent":
        carriers = carriers_of(run, mail)
        if status != "sent":
            p.append("%s: status %s (%s), expected sent" % (who, status, s.text if s else "-"))
        if len(carriers) != 1:
            p.append("%s: the body reached the MXs %d times, expected once" % (who, len(carriers)))
        for key, c, t in carriers:
            if key != w.mx:
                p.append("%s: delivered to %s, expected %s" % (who, key, w.mx))
            if normalize(t.sender or "") != normalize(mail.sender):
                p.append("%s: MX saw MAIL FROM:<%s>" % (who, t.sender))
            if t.tls_version != e.tls:
                p.append("%s: MAIL FROM reached %s %s, expected %s" % (who, key, over(t.tls_version), over(e.tls)))
        if bounces:
            p.append("%s: %d unexpected bounce(s)" % (who, len(bounces)))
    else:
        p += nothing_at_mx(run, mail, who)
        if e.outcome == "bounced":
            if status != "bounced":
                p.append("%s: status %s (%s), expected bounced" % (who, status, s.text if s else "-"))
            elif e.text not in " ".join(s.text.split()):
                p.append("%s: bounced for another cause: %s" % (who, s.text))
            if len(bounces) != 1:
                p.append("%s: %d bounces in the mailbox, expected 1" % (who, len(bounces)))
            for msg in bounces:
                report = " ".join(bounce_report(msg).split())
                if w.rcpt.lower() not in report.lower():
                    p.append("%s: the bounce does not name %s" % (who, w.rcpt))
                if e.text not in report:
                    p.append("%s: the bounce lacks %r: %r" % (who, e.text, report[:300]))
        elif status == "sent":
            p.append("%s: status sent, expected held" % who)
    if e.audit:
        recs = [r for r in run.audit_records() if normalize(r.get("sender") or "") == normalize(mail.sender)]
        good = [r for r in recs if r.get("verdict") == e.audit and (
            e.audit_tls is None or (r.get("tls") or {}).get("version") == e.audit_tls)]
        if not good:
            p.append("%s: no audit record %s%s (records: %s)" % (
                who, e.audit, " over " + e.audit_tls if e.audit_tls else "",
                ["%s tls=%s" % (r.get("verdict"), (r.get("tls") or {}).get("version")) for r in recs]))
        for r in good:
            if e.audit == "delivered":
                got = [x.get("address", "").lower() for x in r.get("recipients") or []]
                if w.rcpt.lower() not in got:
                    p.append("%s: audit record without recipient %s: %s" % (who, w.rcpt, got))
                if not str(r.get("data_reply", "")).startswith("250"):
                    p.append("%s: audit record data_reply %r" % (who, r.get("data_reply")))
    return p


def strip_check(run, case):
    p = []
    conns = run.proxy.connections()[run.proxy_before:]
    if not any(c.stripped() for c in conns):
        p.append("the proxy stripped no STARTTLS (harness problem)")
    for c in run.mxs["strip-up"].connections():
        if c.tls_version or any(v.upper().startswith("STARTTLS") for v in c.commands()):
            p.append("STARTTLS reached the MX behind the proxy (#%d)" % c.id)
    return p


def continued_check(run, case):
    """The guaranteed mail was tried on the connection that had just carried the other one, and
    held there: its held-weak-tls record names that connection."""
    n, g = case.wants
    conns = [c for key, c, _ in carriers_of(run, n.mail)]
    if len(conns) != 1:
        return ["harness: the other sender's mail was carried by %d connections" % len(conns)]
    peer = conns[0].peer
    recs = [r for r in run.audit_records() if normalize(r.get("sender") or "") == normalize(g.mail.sender)]
    if not any(r.get("verdict") == "held-weak-tls" and (r.get("flow") or {}).get("local") == peer for r in recs):
        return ["no held-weak-tls record of <%s> on the continued connection %s (records: %s); %s" % (
            g.mail.sender, peer, [((r.get("flow") or {}).get("local"), r.get("verdict")) for r in recs],
            "Exim did not continue the connection" if not any(
                "*" in l and "tls10b" in l for l in run.inst.log_lines()) else "")]
    return []


def describe(run, w):
    o = run.outcomes.get(w.mail.marker)
    s = o.status_of(w.rcpt) if o and o.queue_id else None
    fin = run.final_at.get(w.mail.marker)
    b = run.bounce_at.get(w.mail.marker)
    return "<%s>: %s%s%s%s" % (
        w.mail.sender, s.status if s else "no status", " after %.1fs" % fin if fin is not None else "",
        ", bounce in the mailbox after %.1fs" % b if b is not None else "",
        ": %s" % short(s.text) if s and s.status != "sent" else "")


def short(text, n=110):
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n - 3] + "..."


# ------------------------------------------------------------------ main

def make_instance(name, root, cgroup, deps):
    routes = {d: a for d, (a, _) in ROUTES.items()}
    if name == "postfix":
        return PostfixInstance(root, cgroup, {d: "smtp:[%s]:25" % a for d, a in routes.items()}, MAILBOX_DOMAINS,
                               mailboxes=[], extra_main=POSTFIX_MAIN)
    if name == "exim":
        return EximInstance(root, cgroup, routes, MAILBOX_DOMAINS, mailboxes=[], deps=deps,
                            hold_domains=["tls10b.test"])
    return SmtpdInstance(root, cgroup, routes, MAILBOX_DOMAINS, mailboxes=[], deps=deps)


def availability(name, deps):
    """None if the MTA can run here, else why not."""
    try:
        if name == "postfix":
            check_postfix_installed()
        elif name == "exim":
            check_exim(deps)
        else:
            check_smtpd(deps)
    except (PostfixMissing, MTAMissing) as e:
        return str(e).splitlines()[0]
    return None


def run_mta(args, name, tmp, mxs, proxy, report):
    cgroup = inst = daemon = None
    try:
        try:
            cgroup = Cgroup.create("tlsguard-e2e-mta")
            root = os.path.join(tmp, name)
            os.makedirs(root)
            inst = make_instance(name, root, cgroup, args.deps)
            inst.start()
            senders = os.path.join(tmp, name + ".senders")
            with open(senders, "w") as f:
                f.write(SENDERS_FILE)
            audit = os.path.join(tmp, name + ".audit.jsonl")
            daemon = Daemon(args.tlsguardd, args.tlsguardctl, cgroup.path, senders,
                            os.path.join(tmp, name + ".sock"), os.path.join(tmp, name + ".tlsguardd.log"))
            daemon.argv += ["--audit", audit]
            daemon.start()
        except (PostfixMissing, PostfixError, MTAMissing, MTAError, RuntimeError, OSError) as e:
            report("%s/setup" % name, [str(e)])
            return
        run = MTARun(name, inst, mxs, proxy, daemon, audit, secrets.token_hex(3))
        t0 = time.monotonic()
        try:
            run.inject()
            run.wait()
        except (PostfixError, MTAError, OSError, subprocess.SubprocessError) as e:
            report("%s/inject" % name, [str(e)])
            return
        for case in run.cases:
            problems = []
            for w in case.wants:
                problems += check_want(run, w)
            if case.extra:
                problems += case.extra(run, case)
            report("%s/%s" % (name, case.name), problems)
            for w in case.wants:
                print("    " + describe(run, w), flush=True)
            if problems and args.verbose:
                print(inst.log_tail(20))
        print("    (%s: %.1fs from the first injection to the last outcome)" % (name, time.monotonic() - t0),
              flush=True)
    finally:
        if daemon is not None:
            why = daemon.stop()
            if not daemon.died_early:
                report("%s/tlsguardd_shutdown" % name, [why] if why else [])
        problems = []
        if inst is not None:
            try:
                inst.stop()
            except (PostfixError, MTAError, OSError, subprocess.SubprocessError) as e:
                problems.append(str(e))
        if cgroup is not None:
            try:
                cgroup.remove()
            except (RuntimeError, OSError) as e:
                problems.append(str(e))
        if problems:
            report("%s/cleanup" % name, problems)


def main(argv=None):
    ap = harness.arg_parser(__doc__, keep_help="logs, spools, mailboxes", verbose_help="show the MTA's log on failures")
    ap.add_argument("--mta", default="all", choices=MTAS + ["all"])
    ap.add_argument("--deps", default=DEFAULT_DEPS, help="where make mta-deps unpacked Exim and OpenSMTPD")
    args = ap.parse_args(argv)
    chosen = MTAS if args.mta == "all" else [args.mta]
    results = harness.Results()
    report = results.report
    with harness.Run(results, keep=args.keep, root="mta_run.py must run as root (cgroups, port 25, the MTAs)") as suite:
        runnable = []
        for name in chosen:
            why = availability(name, args.deps)
            if why is None:
                runnable.append(name)
            elif args.mta == "all":
                results.skip(name, "NOT TESTED: %s" % why)
            else:
                report("%s/setup" % name, [why])
        for path in (args.tlsguardd, args.tlsguardctl):
            if not os.access(path, os.X_OK):
                report("setup", ["%s is missing or not executable (run make)" % path])
                runnable = []
        proxy = None
        mxs = {}
        if runnable:
            tmp = suite.tempdir("tlsguard-e2e-mta-", 0o755)
            jsonl = os.path.join(tmp, "mx.jsonl")
            try:
                for key, (host, opts) in MXS.items():
                    mxs[key] = TestMX(host, 25, name=key, jsonl_path=jsonl, tls=opts).start()
                    suite.push(mxs[key].stop)
                proxy = StripProxy(STRIP, 25, (MXS["strip-up"][0], 25), name="strip",
                                   jsonl_path=os.path.join(tmp, "proxy.jsonl")).start()
                suite.push(proxy.stop)
            except OSError as e:
                report("setup", [str(e)])
                runnable = []
        for name in runnable:
            t = time.monotonic()
            # No DNS query of the MTA's may leave the machine (PTR names of
            # the test hosts, the test domains).
            watch = LeakWatch()
            watch.start()
            try:
                run_mta(args, name, tmp, mxs, proxy, report)
            finally:
                time.sleep(0.5)
                watch.stop()
            leaks = [x for x in watch.seen if is_test_name(x[3])]
            report("%s/dns_isolation" % name, ["a DNS query left the machine: %s via %s to %s" % (
                x[3], x[0], x[1]) for x in leaks] + ([watch.error] if watch.error else []))
            print("    (%s: %.1fs in all)" % (name, time.monotonic() - t), flush=True)
    return suite.finish()


if __name__ == "__main__":
    sys.exit(main())
