#!/usr/bin/python3
"""End-to-end implicit-TLS (SMTPS, port 465) run for tlsguard: Postfix in a cgroup -> implicit-TLS test MXs.

Usage (as root; builds nothing):
    /usr/bin/python3 tests/e2e/suites/smtps_run.py [--tlsguardd build/tlsguardd]
        [--tlsguardctl build/tlsguardctl] [--keep] [-v]

Setup: a temp dir, a cgroup v2 directory, recording test MXs (mx.py with
``TLSOptions(implicit=True)``: the handshake right after accept, then the
whole SMTP dialogue, greeting included, inside TLS) on port 465:

    .110 TLS 1.3 only     .111 TLS 1.0 only
    .112 TLS 1.3 only, .113 TLS 1.0 only: for the live ``tlsguardctl flows`` case

a private Postfix (postfix_env.py, master in the cgroup) with one more
master.cf service, ``smtps unix ... smtp -o smtp_tls_wrappermode=yes -o
smtp_tls_security_level=encrypt -o smtp_tls_mandatory_protocols=>=TLSv1``
(postconf(5): wrapper mode needs ``encrypt`` or stronger; ``>=TLSv1`` is
3.7's default, spelled out because the TLS 1.0 cases depend on it: Postfix
itself would accept TLS 1.0 here, so whatever holds a mail is tlsguard), and
transport_maps ``DOMAIN smtps:[127.0.0.11x]:465``;
``tlsguardd --port 25 --tls-port 465`` (daemon.py's ``Daemon``).  Guaranteed
senders: ``@guarded.test``.

Cases (mails injected together, then one wait):
  * ``smtps_tls13_delivered`` -- guaranteed sender to the TLS 1.3 MX: sent,
    one transaction at the MX whose MAIL FROM arrived inside TLSv1.3, Postfix
    logged "TLS connection established to ...:465: TLSv1.3";
  * ``smtps_tls10_guaranteed_held`` -- guaranteed sender to the TLS 1.0 MX:
    never sent; deferred on every attempt (at least ``MIN_DEFERRALS``) and,
    since wrapper mode has no plaintext fallback, not bounced within the run
    (the queue lifetime would end it); no MAIL FROM, RCPT or body of it at
    any MX; each of its sessions at the MX: TLSv1, EHLO at most inside TLS,
    closed without QUIT; Postfix logged the TLSv1 session (it would have sent);
    tlsguardd logged one ``held: ... TLSv1.0: connection destroyed`` a deferral;
  * ``smtps_tls10_other_delivered`` -- a non-guaranteed sender to the same
    TLS 1.0 MX: sent, MAIL FROM inside TLSv1;
  * ``smtps_flows_live`` -- Python clients in the test cgroup (SMTP_SSL to
    465) pause after EHLO inside TLS 1.3 / TLS 1.0 while ``tlsguardctl
    flows`` lists ``tls TLSv1.3`` / ``weak-tls TLSv1.0`` for them; after QUIT
    the rows go.

Output: ``PASS name`` / ``FAIL name: why`` per case (indented detail lines
for the held case), then exactly ``N passed, M failed``; exit status 0 only if
none failed.  Everything created is removed in a ``finally`` (clients and
tlsguardd by pid, Postfix, MXs, cgroup, temp dir unless --keep).
"""

import os
import re
import secrets
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "fixtures"))
sys.dont_write_bytecode = True

import harness  # noqa: E402
from mx import TestMX, TLSOptions  # noqa: E402
from postfix_env import PostfixError, PostfixInstance, PostfixMissing  # noqa: E402
from daemon import GUARDED_SENDERS, MAILBOX_DOMAINS, Senders, check_nothing_at_mx  # noqa: E402
from flows import FlowsClient, flows_for, flows_table  # noqa: E402
from wants import Ctx, Want, carriers_of, check_want, describe_conns, mail_verbs, short  # noqa: E402

PORT = 465
MXS = {
    "tls13": ("127.0.0.110", TLSOptions(version="1.3", implicit=True)),
    "tls10": ("127.0.0.111", TLSOptions(version="1.0", implicit=True)),
    "flows13": ("127.0.0.112", TLSOptions(version="1.3", implicit=True)),
    "flows10": ("127.0.0.113", TLSOptions(version="1.0", implicit=True)),
}
ROUTES = {"tls13.test": "tls13", "tls10.test": "tls10"}
SMTPS_SERVICE = """\
# smtps_run.py: implicit TLS (SMTPS) client
smtps      unix  -       -       n       -       -       smtp
  -o smtp_tls_wrappermode=yes
  -o smtp_tls_security_level=encrypt
  -o smtp_tls_mandatory_protocols=>=TLSv1
"""
SENDERS_FILE = GUARDED_SENDERS
MAILBOXES = ["smtps-tls13@guarded.test", "smtps-tls10@guarded.test", "smtps-tls10@mta.test", "postmaster@mta.test"]
MIN_DEFERRALS = 3
TIMEOUT_MAIL = 60.0
TIMEOUT_CLIENT = 20.0


class SmtpsPostfix(PostfixInstance):
    def write_config(self):
        super().write_config()
        with open(os.path.join(self.conf, "master.cf"), "a") as f:
            f.write(SMTPS_SERVICE)


def established(ctx, key):
    addr = MXS[key][0]
    rx = re.compile(r"TLS connection established to %s\[%s\]:%d: (\S+) with cipher" % (
        re.escape(addr), re.escape(addr), PORT))
    return [m.group(1) for m in map(rx.search, ctx.pf.log_lines()) if m]


def check_held(ctx, w):
    """The guaranteed mail to the TLS 1.0 MX: deferred, never sent, nothing of it at any MX."""
    mail, p = w.mail, []
    h = ctx.history(mail)
    defers = [x for x in h if x[0] == "deferred"]
    if any(st != "deferred" for st, _, _, _, _ in h):
        p.append("statuses %s, expected only deferrals" % [(st, dsn) for st, dsn, _, _, _ in h])
    if len(defers) < MIN_DEFERRALS:
        p.append("%d deferrals, expected at least %d" % (len(defers), MIN_DEFERRALS))
    p += check_nothing_at_mx(ctx, mail, mail.marker, carriers_of(ctx, mail))
    if ctx.pf.bounces_for(mail.sender, mail.marker):
        p.append("a DSN reached <%s>" % mail.sender)
    # Its sessions: TLSv1 with at most EHLO inside, ended without QUIT.  The other sender's session carries MAIL.
    mx = ctx.mxs["tls10"]
    cut = [c for c in mx.connections() if "MAIL" not in mail_verbs(c)]
    bad = [c for c in cut if c.tls_version != "TLSv1" or not mail_verbs(c, tls=True) <= {"EHLO"}
           or mail_verbs(c, tls=False) or not c.closed or "QUIT" in mail_verbs(c)]
    if len(cut) < len(defers) or bad or not any("EHLO" in mail_verbs(c, tls=True) for c in cut):
        p.append("sessions without MAIL at tls10: %d for %d deferrals, bad: %s" % (
            len(cut), len(defers), describe_conns(mx)))
    if "TLSv1" not in established(ctx, "tls10"):
        p.append("Postfix logged no TLSv1 session to tls10 (so it was not Postfix's choice to stop)")
    held = [x for x in daemon_lines(ctx) if "%s]:%d: " % (MXS["tls10"][0], PORT) in x and ": held: " in x
            and "TLSv1.0" in x]
    if len(held) < len(defers):
        p.append("tlsguardd logged %d holds at tls10 for %d deferrals" % (len(held), len(defers)))
    return p, h, held


def daemon_lines(ctx):
    with open(ctx.daemon.log_path, errors="replace") as f:
        return f.read().splitlines()


def run_mail_cases(ctx, report, verbose):
    r = ctx.run_id
    g13 = Want(ctx.pf.send("smtps-tls13@guarded.test", ["g13.%s@tls13.test" % r], "smtps"), "tls13", "sent",
               "TLSv1.3")
    g10 = Want(ctx.pf.send("smtps-tls10@guarded.test", ["g10.%s@tls10.test" % r], "smtps"), "tls10", "held")
    n10 = Want(ctx.pf.send("smtps-tls10@mta.test", ["n10.%s@tls10.test" % r], "smtps"), "tls10", "sent", "TLSv1")
    mails = [g13.mail, g10.mail, n10.mail]
    deadline = time.monotonic() + TIMEOUT_MAIL
    while time.monotonic() < deadline:
        ctx.outcomes = ctx.pf.outcomes(mails)
        if (ctx.outcomes[g13.mail.marker].final and ctx.outcomes[n10.mail.marker].final
                and len([x for x in ctx.history(g10.mail) if x[0] == "deferred"]) >= MIN_DEFERRALS):
            break
        time.sleep(0.3)
    time.sleep(0.5)
    ctx.outcomes = ctx.pf.outcomes(mails)
    ctx.bounces = {(m.sender, m.marker): ctx.pf.bounces_for(m.sender, m.marker) for m in mails}
    p = check_want(ctx, g13)
    if "TLSv1.3" not in established(ctx, "tls13"):
        p.append("Postfix logged no TLSv1.3 session to tls13 (saw %s)" % established(ctx, "tls13"))
    report("smtps_tls13_delivered", p)
    p, h, held = check_held(ctx, g10)
    report("smtps_tls10_guaranteed_held", p)
    for st, dsn, text, delay, _ in h:
        print("    <%s>: %s %s (%s) delay=%s" % (g10.mail.sender, st, dsn, short(text, 110), delay))
    print("    tls10 sessions: %s" % "; ".join(describe_conns(ctx.mxs["tls10"])))
    print("    %s (x%d)" % (held[0] if held else "tlsguardd logged no hold", len(held)))
    report("smtps_tls10_other_delivered", check_want(ctx, n10))
    if verbose:
        qids = {o.queue_id for o in ctx.outcomes.values()} - {None}
        for line in ctx.pf.log_lines():
            if any(q in line for q in qids) or ":%d:" % PORT in line:
                print("    " + line)


def run_flows_case(ctx, cgroup, report, verbose):
    daemon, mxs = ctx.daemon, ctx.mxs
    want = {"flows13": ("1.3", "tls", "TLSv1.3", "TLSv1.3"), "flows10": ("1.0", "weak-tls", "TLSv1.0", "TLSv1")}
    clients, p = {}, []

    def rows(table, key):
        return flows_for(table, MXS[key][0], PORT)
    try:
        for key, (v, _, _, _) in want.items():
            clients[key] = FlowsClient(cgroup, MXS[key][0], v, PORT, smtps=True)
        for key, c in clients.items():
            line = c.readline(TIMEOUT_CLIENT)
            if not line or not line.startswith("READY"):
                c.kill()
                p.append("client to %s did not get to EHLO inside TLS: %r %s" % (key, line, c.finish(1)[2][-300:]))
        if not p:
            table = flows_table(daemon)
            for key, (_, state, ver, _) in want.items():
                got = rows(table, key)
                if len(got) != 1 or got[0][1:3] != [state, ver]:
                    p.append("%s: rows %s, expected STATE %s TLS %s" % (MXS[key][0], got, state, ver))
            if p or verbose:
                print("    " + "\n    ".join(table))
        for key, c in clients.items():
            rc, out, err = c.finish()
            if rc != 0 or not any(x.startswith("QUIT 221") for x in out):
                p.append("client to %s: exit %s, output %s %s" % (key, rc, out, err[-300:]))
            if [x.tls_version for x in mxs[key].connections()] != [want[key][3]]:
                p.append("%s recorded %s" % (key, describe_conns(mxs[key])))
        deadline = time.monotonic() + 5
        while any(rows(flows_table(daemon), k) for k in want) and time.monotonic() < deadline:
            time.sleep(0.2)
        if any(rows(flows_table(daemon), k) for k in want):
            p.append("closed flows still listed 5s after QUIT")
    finally:
        for c in clients.values():
            c.kill()
    report("smtps_flows_live", p)


def main(argv=None):
    args = harness.arg_parser(__doc__, keep_help="logs, queue, mailboxes, MX records",
                              verbose_help="show log lines of failed cases").parse_args(argv)
    results = harness.Results()
    report = results.report
    with harness.Run(results, keep=args.keep,
                     root="smtps_run.py must run as root (cgroups, port 465, Postfix)") as suite:
        try:
            harness.require_tools(args.tlsguardd, args.tlsguardctl, postfix=True)
            tmp, cgroup = suite.workspace("tlsguard-e2e-smtps", 0o755)
            mxs = {key: suite.started(TestMX(host, PORT, name=key, jsonl_path=os.path.join(tmp, "mx.jsonl"), tls=opts))
                   for key, (host, opts) in MXS.items()}
            pf = suite.postfix(SmtpsPostfix(os.path.join(tmp, "postfix"), cgroup,
                                            {d: "smtps:[%s]:%d" % (MXS[k][0], PORT) for d, k in ROUTES.items()},
                                            MAILBOX_DOMAINS, mailboxes=MAILBOXES))
            daemon = suite.daemon(args, cgroup, SENDERS_FILE, "--tls-port", str(PORT))
        except (PostfixMissing, PostfixError, RuntimeError, OSError) as e:
            report("setup", [str(e)])
        else:
            with suite.guard():
                ctx = Ctx(pf, mxs, None, Senders(SENDERS_FILE), secrets.token_hex(3))
                ctx.daemon = daemon
                run_mail_cases(ctx, report, args.verbose)
                run_flows_case(ctx, cgroup, report, args.verbose)
            if args.verbose:
                print(daemon.log_tail(40))
    return suite.finish()


if __name__ == "__main__":
    sys.exit(main())
