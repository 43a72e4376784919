#!/usr/bin/python3
"""tlsguard demo: real Postfix, simulated MX hosts.

Shows a mail administrator what tlsguardd does, on a fresh machine (as root):
a private Postfix instance runs in a test cgroup and routes example.net to a
simulated MX host on 127.0.0.2:25 that offers no STARTTLS; alice@mta.test is
a guaranteed sender (her mail goes out over TLS or not at all), bob@mta.test
is not.  With tlsguardd guarding the cgroup, one mail from each:
  * alice's bounces: Postfix logs ``status=bounced ... 550 5.7.10 TLS is
    required, but was not offered by host ...``, alice gets a DSN, and the
    MX sees only EHLO -- not her MAIL FROM, recipient or message;
  * bob's is delivered as usual.
The mails are sent one after the other so that each has its own connection
to the MX.  Exit status 0 only if both outcomes are as described.

Usage: tools/demo.py [--tlsguardd build/tlsguardd] [--tlsguardctl build/tlsguardctl] [--keep]
Everything it creates (tlsguardd, Postfix, the MX, the cgroup, the temp dir
unless --keep) is removed on exit, also on Ctrl-C.  Stopping tlsguardd
leaves the kernel enforcing, as it always does; the demo then removes
tlsguard as an administrator would, with ``tlsguardctl --pin-dir DIR
detach`` (DIR is the demo's own, /sys/fs/bpf/tlsguard-test-XXXXXXXX).
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "e2e", "fixtures"))

from mx import TestMX  # noqa: E402
from postfix_env import (BOUNCE_SUBJECT, Cgroup, PostfixError, PostfixInstance,  # noqa: E402
                         bounce_report, check_postfix_installed)
from harness import REPO, sigterm_interrupts  # noqa: E402
from daemon import TLS_DSN, TLS_TEXT, Daemon, ehlo_only  # noqa: E402

ALICE, BOB = "alice@mta.test", "bob@mta.test"
ALICE_RCPT, BOB_RCPT = "carol@example.net", "dave@example.net"
MX_HOST = "127.0.0.2"
SENDERS_FILE = "# guaranteed senders: their mail leaves over TLS or bounces\n%s\n" % ALICE


def say(text=""):
    print(text, flush=True)


def show_status(daemon):
    r = subprocess.run(daemon.ctl + ["status"], capture_output=True, text=True, timeout=10)
    say("$ tlsguardctl status")
    for line in (r.stdout + r.stderr).splitlines():
        say("  " + line)


def send_and_wait(pf, sender, rcpt):
    mail = pf.send(sender, [rcpt], subject="tlsguard demo")
    outcome = pf.wait_final([mail], 60)[mail.marker]
    return mail, outcome.status_of(rcpt)


def show_alice(pf, mail, status, conns):
    """Print what happened to alice's mail; return the problems."""
    problems = []
    say("\n== alice@mta.test (guaranteed) -> %s" % ALICE_RCPT)
    if status is None:
        return ["alice: no final status in the Postfix log"]
    say("Postfix log:\n  " + status.line)
    if status.status != "bounced" or status.dsn != TLS_DSN or TLS_TEXT not in status.text:
        problems.append("alice: status=%s dsn=%s (%s), expected bounced %s" % (
            status.status, status.dsn, status.text, TLS_DSN))
    dsn_wait = 30 if status.status == "bounced" else 0  # a DSN is on its way only then
    dsns = pf.wait_bounces([(ALICE, mail.marker)], dsn_wait)[(ALICE, mail.marker)]
    if len(dsns) != 1:
        problems.append("alice: %d DSNs in her mailbox, expected 1" % len(dsns))
    for dsn in dsns:
        say("DSN in alice's mailbox:\n  Subject: %s" % dsn["Subject"])
        report = bounce_report(dsn)
        # The paragraph naming the recipient, and the delivery-status fields.
        for para in report.split("\n\n"):
            if "<%s>" % ALICE_RCPT in para:
                say("  " + " ".join(para.split()))
        for line in report.splitlines():
            if line.startswith(("Final-Recipient:", "Action:", "Status:", "Diagnostic-Code:")):
                say("  " + line)
        if BOUNCE_SUBJECT not in str(dsn["Subject"]) or ALICE_RCPT not in report \
                or TLS_TEXT not in " ".join(report.split()):
            problems.append("alice: the DSN does not name <%s> and %r" % (ALICE_RCPT, TLS_TEXT))
    say("What the MX saw:")
    for c in conns:
        closed = [e.data for e in c.snapshot() if e.kind == "close"]
        say("  connection %d from %s: %s; %s" % (c.id, c.peer, " ".join(c.verbs()) or "no command",
                                                 "closed (%s)" % closed[0] if closed else "still open"))
    if not conns:
        say("  (no connection)")
    if not any(ehlo_only(c) for c in conns):
        problems.append("alice: no MX connection with EHLO and nothing after it")
    return problems


def show_bob(mx, mail, status):
    problems = []
    say("\n== bob@mta.test (not guaranteed) -> %s" % BOB_RCPT)
    if status is None:
        return ["bob: no final status in the Postfix log"]
    say("Postfix log:\n  " + status.line)
    if status.status != "sent":
        problems.append("bob: status=%s (%s), expected sent" % (status.status, status.text))
    got = [t for t in mx.transactions() if t.data is not None and any(mail.marker in x for x in t.data)]
    say("What the MX received:")
    for t in got:
        say("  MAIL FROM:%s" % t.mail_from)
        for r in t.rcpts:
            say("  RCPT TO:%s" % r)
        say("  DATA: %d lines, Subject: %s, queued as %s" % (
            len(t.data), next((x[9:] for x in t.data if x.startswith("Subject: ")), "?"), t.queue_id))
    if len(got) != 1 or got[0].sender != BOB or got[0].recipients != [BOB_RCPT]:
        problems.append("bob: the MX did not receive exactly one transaction from <%s> to <%s>" % (BOB, BOB_RCPT))
    return problems


def leaked(mx, mail):
    """What of alice's transaction reached the MX (any connection)."""
    ts = mx.transactions()
    seen = [("her MAIL FROM", any(t.sender.lower() == ALICE for t in ts)),
            ("her RCPT", any(ALICE_RCPT in (r.lower() for r in t.recipients) for t in ts)),
            ("her message", any(mail.marker in x for c in mx.connections() for x in c.lines()))]
    return [what for what, yes in seen if yes]


def demo(args, tmp, state):
    cgroup = state["cgroup"] = Cgroup.create("tlsguard-demo")
    mx = state["mx"] = TestMX(MX_HOST, 25, name="mx.example.net",
                              jsonl_path=os.path.join(tmp, "mx.jsonl")).start()
    pf = state["pf"] = PostfixInstance(os.path.join(tmp, "postfix"), cgroup,
                                       {"example.net": "smtp:[%s]:25" % MX_HOST}, ["mta.test"],
                                       mailboxes=[ALICE, BOB])
    os.makedirs(pf.root)
    pf.start()
    senders = os.path.join(tmp, "senders")
    with open(senders, "w") as f:
        f.write(SENDERS_FILE)
    say("== Setup")
    say("senders file %s:" % senders)
    for line in SENDERS_FILE.splitlines():
        say("  " + line)
    say("test cgroup:     %s" % cgroup.path)
    say("Postfix:         %s (master pid %d in the cgroup), log %s" % (pf.conf, pf.master_pid, pf.maillog))
    say("route:           example.net -> smtp:[%s]:25" % MX_HOST)
    say("simulated MX:    mx.example.net on %s:25, no STARTTLS" % MX_HOST)

    daemon = state["daemon"] = Daemon(args.tlsguardd, args.tlsguardctl, cgroup.path, senders,
                                      os.path.join(tmp, "tlsguardd.sock"), os.path.join(tmp, "tlsguardd.log"),
                                      postfix_config=pf.conf)
    say("\n== Starting %s" % " ".join(daemon.argv))
    daemon.start()
    show_status(daemon)

    say("\n== Sending %s -> %s, then %s -> %s" % (ALICE, ALICE_RCPT, BOB, BOB_RCPT))
    a_mail, a_status = send_and_wait(pf, ALICE, ALICE_RCPT)
    a_conns = mx.connections()
    b_mail, b_status = send_and_wait(pf, BOB, BOB_RCPT)
    state["sent"] = True

    problems = show_alice(pf, a_mail, a_status, a_conns)
    got = leaked(mx, a_mail)
    if got:
        problems.append("alice: the MX received %s" % ", ".join(got))
    problems += show_bob(mx, b_mail, b_status)

    say("\n== tlsguardd log about held mail (%s)" % daemon.log_path)
    with open(daemon.log_path, errors="replace") as f:
        held = [x for x in f.read().splitlines() if "held" in x or "from=<" in x]
    for line in held or ["(none)"]:
        say("  " + line)
    if not any(ALICE in x and "held" in x for x in held):
        problems.append("tlsguardd logged no held mail from <%s>" % ALICE)
    show_status(daemon)
    return problems


def cleanup(state, interrupted):
    problems = []
    daemon = state.get("daemon")
    if daemon is not None:
        say("\n== Stopping tlsguardd, then removing tlsguard: tlsguardctl --pin-dir %s detach" % daemon.pin_dir)
        why = daemon.stop()
        if why and not interrupted and not daemon.died_early:  # those are reported already
            problems.append(why)
    if state.get("pf") is not None:
        try:
            state["pf"].stop()
        except (PostfixError, OSError, subprocess.SubprocessError) as e:
            problems.append(str(e))
    if state.get("mx") is not None:
        state["mx"].stop()
    if state.get("cgroup") is not None:
        try:
            state["cgroup"].remove()
        except (RuntimeError, OSError) as e:
            problems.append(str(e))
    return problems


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tlsguardd", default=os.path.join(REPO, "build", "tlsguardd"))
    ap.add_argument("--tlsguardctl", default=os.path.join(REPO, "build", "tlsguardctl"))
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, queue, mailboxes)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("demo: must run as root (cgroups, port 25, Postfix)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, sigterm_interrupts)
    state, problems, tmp, interrupted = {}, [], None, False
    try:
        check_postfix_installed()
        for path in (args.tlsguardd, args.tlsguardctl):
            if not os.access(path, os.X_OK):
                raise RuntimeError("%s is missing or not executable (run make)" % path)
        tmp = tempfile.mkdtemp(prefix="tlsguard-demo-")
        os.chmod(tmp, 0o755)
        problems = demo(args, tmp, state)
    except KeyboardInterrupt:
        interrupted, problems = True, ["interrupted (Ctrl-C or SIGTERM)"]
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        problems = ["%s: %s" % (type(e).__name__, e)]
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # cleanup is bounded; let it finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        problems += ["cleanup: %s" % x for x in cleanup(state, interrupted)]
        if tmp is not None:
            if args.keep:
                say("demo: kept %s" % tmp)
            else:
                shutil.rmtree(tmp, ignore_errors=True)

    say()
    alice_bad = [p for p in problems if p.startswith("alice")]
    bob_bad = [p for p in problems if p.startswith("bob")]
    if state.get("sent"):
        say("demo: %s (guaranteed): %s" % (ALICE, "NOT as expected" if alice_bad else
                                           "bounced, nothing reached the MX"))
        say("demo: %s: %s" % (BOB, "NOT as expected" if bob_bad else "delivered"))
    for p in problems:
        say("demo: FAILED: %s" % p)
    return 130 if interrupted else 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
