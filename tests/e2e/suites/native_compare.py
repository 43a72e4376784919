#!/usr/bin/python3
"""Postfix's own settings beside tlsguard: the same cases through both, measured.

Usage (as root; builds nothing):
    /usr/bin/python3 tests/e2e/suites/native_compare.py [--tlsguardd build/tlsguardd]
        [--tlsguardctl build/tlsguardctl] [--deps build/deps/root] [--table] [--keep] [-v]

The question a Postfix administrator asks first: why not Postfix's own
settings?  The native setup (NATIVE_MAIN, NATIVE_MASTER, NATIVE_FILTER) is
the one postconf(5) leads to:

    sender_dependent_default_transport_maps = texthash:senders  (@guarded.test encrypt:)
    encrypt  unix  -  -  n  -  -  smtp
      -o smtp_tls_security_level=encrypt
      -o smtp_tls_mandatory_protocols=>=TLSv1.2
      -o smtp_delivery_status_filter=regexp:filter

with postconf(5)'s own filter, which turns "TLS is required, but was not
offered by host" and "... refused to start TLS" deferrals (4.7.4) into
bounces and leaves a handshake failure (4.7.5, "may result from a local
configuration problem") a deferral.  The tlsguard setup is Postfix at
``smtp_tls_security_level = may`` with nothing else changed, and tlsguardd
(``--mx-check`` at the test's DNS server, ``exempt = SRS0=, SRS1=``) on the
cgroup of its Postfix and Exim instances.  Each setup has a Postfix that
routes by DNS (MX records from unbound on 127.0.0.250, Postfix in a mount
namespace whose /etc/resolv.conf names it), with a transport_maps entry for
route.test and an smtpd listener for SMTP submission; a Postfix with a
relayhost; and an Exim (``make mta-deps``; skipped, and said so, when it is
not unpacked).  The native setup has a second Exim with Exim's own rule
for the guaranteed senders (a router on ``senders`` to a transport with
``hosts_require_tls``); the tlsguard setup a second Postfix with a second
tlsguardd, without ``--mx-check``.  The native sender map sends one
address (the case no_filter's) to the same transport without the filter.
Guaranteed senders: ``@guarded.test``.

The recording test MX hosts (mx.py, real OpenSSL) on 127.0.0.240 and up:

    .240 plain.test       no STARTTLS
    .242 strip.test       STARTTLS-stripping proxy (tlsproxy.py) -> .241 TLS 1.3
    .243 tls10.test       TLS 1.0 only
    .244 mixed.test MX 10 no STARTTLS;  .245 mixed.test MX 20 TLS 1.3
    .246 tls13.test       TLS 1.3 only
    .247 [127.0.0.247]    no STARTTLS: transport_maps' nexthop for route.test
    .248 [127.0.0.248]    no STARTTLS: the relayhost
    .249:10587, :10588    the native and the tlsguard Postfix's smtpd (submission)

Each case sends the same mail through both setups and records, per setup,
what the sender got (bounced, with the status and the seconds from
injection to the DSN in the sender's mailbox; deferred; delivered) and what
the MX hosts recorded (the guaranteed envelope in clear, delivered over
TLS, or nothing).  Every cell of CASES is asserted: a case passes only when
both setups did exactly what its row says.  ``--table`` prints the measured
table in Markdown (README "Postfix's own settings, compared" is made so;
``make native-table``).  Deferred mail is watched for WATCH seconds.
``minimal_backoff_time`` is 2 s here (300 s by default): it sets how long
a TLS 1.0 host's mail waits before tlsguard can bounce it.

Output: ``PASS case`` / ``FAIL case: why`` per case, then exactly ``N
passed, M failed`` alone on a line; exit status 0 only if none failed.
Everything made is removed at the end, also on Ctrl-C or SIGTERM.
"""

import os
import secrets
import smtplib
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "fixtures"))
sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree

import harness  # noqa: E402
from daemon import GUARDED_SENDERS, MAILBOX_DOMAINS, TLS_TEXT, WEAK_TEXT, Daemon, normalize  # noqa: E402
from dns_env import T_MX, Unbound, ensure_unbound  # noqa: E402
from mta_env import DEFAULT_DEPS, EximInstance, MTAError, MTAMissing, check_exim  # noqa: E402
from mx import TestMX, TLSOptions  # noqa: E402
from postfix_env import (Cgroup, Mail, NsPostfix, PostfixError, PostfixInstance,  # noqa: E402
                         PostfixMissing, bounce_report, write_resolv)
from tlsproxy import StripProxy  # noqa: E402

DNS_ADDR = "127.0.0.250"
TLS13 = TLSOptions(version="1.3")
# key -> (address, TLS options or None for no STARTTLS)
MXS = {
    "plain": ("127.0.0.240", None),
    "strip-up": ("127.0.0.241", TLS13),
    "tls10": ("127.0.0.243", TLSOptions(version="1.0")),
    "mixed1": ("127.0.0.244", None),
    "mixed2": ("127.0.0.245", TLS13),
    "tls13": ("127.0.0.246", TLS13),
    "route": ("127.0.0.247", None),
    "relay": ("127.0.0.248", None),
}
STRIP = "127.0.0.242"
SUBMIT = {"native": ("127.0.0.249", 10587), "tlsguard": ("127.0.0.249", 10588)}
ZONE = [
    "plain.test. 60 IN MX 10 mx.plain.test.",
    "mx.plain.test. 60 IN A 127.0.0.240",
    "strip.test. 60 IN MX 10 mx.strip.test.",
    "mx.strip.test. 60 IN A 127.0.0.242",
    "tls10.test. 60 IN MX 10 mx.tls10.test.",
    "mx.tls10.test. 60 IN A 127.0.0.243",
    "mixed.test. 60 IN MX 10 mx1.mixed.test.",
    "mixed.test. 60 IN MX 20 mx2.mixed.test.",
    "mx1.mixed.test. 60 IN A 127.0.0.244",
    "mx2.mixed.test. 60 IN A 127.0.0.245",
    "tls13.test. 60 IN MX 10 mx.tls13.test.",
    "mx.tls13.test. 60 IN A 127.0.0.246",
]
DNS_MAIN = {
    "default_transport": "smtp",
    "smtp_host_lookup": "dns",
    "disable_dns_lookups": "no",
}
ROUTE = {"route.test": "smtp:[127.0.0.247]:25"}
RELAY_MAIN = {"default_transport": "smtp", "relayhost": "[127.0.0.248]:25"}
EXIM_ROUTES = {"plain.test": "127.0.0.240"}

# postconf(5), smtp_delivery_status_filter, in regexp: syntax (pcre: is a
# package of its own): the two deferrals that a host causes become bounces.
NATIVE_FILTER = """\
/^4\\.([0-9]+\\.[0-9]+ TLS is required, but host [^ ]+ refused to start TLS: .+)/ 5.$1
/^4\\.([0-9]+\\.[0-9]+ TLS is required, but was not offered by host .+)/ 5.$1
# Left as deferrals, as postconf(5) advises (they may be a local problem):
# TLS is required, but our TLS engine is unavailable; ... but unavailable;
# Cannot start TLS: handshake failure
"""
# The sender of the case "no_filter" (its address has the run's id) goes to
# the same transport without the filter: what the filter changes.
NATIVE_SENDERS = "{nofilter}\tencrypt_nofilter:\n@guarded.test\tencrypt:\n"
NATIVE_MASTER = """\
encrypt    unix  -       -       n       -       -       smtp
  -o smtp_tls_security_level=encrypt
  -o smtp_tls_mandatory_protocols=>=TLSv1.2
  -o smtp_delivery_status_filter=regexp:{filter}
encrypt_nofilter unix -  -       n       -       -       smtp
  -o smtp_tls_security_level=encrypt
  -o smtp_tls_mandatory_protocols=>=TLSv1.2
"""
SMTPD_MASTER = "{addr}:{port} inet n - n - - smtpd\n"
TG_CONF = "exempt = SRS0=, SRS1=\n"

WATCH = 25.0  # seconds every mail is watched after the last injection (a deferral stays one)
TIMEOUT_FINAL = 120.0  # the mails that must be final (a bounce: its DSN in the mailbox), at most
SETUPS = ("native", "tlsguard")

NOT_OFFERED = TLS_TEXT
WEAK10 = WEAK_TEXT % "TLSv1.0"
HANDSHAKE = "Cannot start TLS: handshake failure"
EXIM_NOT_OFFERED = "a TLS session is required, but the server did not offer TLS support"


@dataclass
class Got:
    """What one setup must do with one mail: the sender's result (``bounced``,
    ``deferred``, ``delivered``), its status code and a text in it, and what
    the MX hosts record: ``none`` (no envelope), ``clear@KEY`` or
    ``TLSv1.3@KEY`` (the envelope and body delivered so)."""
    result: str
    mx: str = "none"
    dsn: str = ""
    text: str = ""


@dataclass
class Case:
    name: str
    row: str  # the table's first column
    inst: str  # dns | relay | exim | nomx (tlsguard: a Postfix whose tlsguardd has no mx_check)
    #            | exim_tls (native: an Exim with its own TLS rule; tlsguard: its Exim)
    domain: str
    native: list  # [Got], one per mail of the case
    tlsguard: list
    senders: tuple = ("g",)  # g: guaranteed, n: another sender, null: <>, srs: a forward
    submit: bool = False  # through the instance's smtpd, not sendmail(1)
    note: str = ""  # said in the native column of the table
    tg_note: str = ""  # ... in tlsguard's
    mails: dict = field(default_factory=dict)  # setup -> [Mail]

    def want(self, setup):
        return self.native if setup == "native" else self.tlsguard


B_NOTLS_TG = Got("bounced", dsn="5.7.10", text=NOT_OFFERED)
B_NOTLS_NATIVE = Got("bounced", dsn="5.7.4", text=NOT_OFFERED)

CASES = [
    Case("no_starttls", "MX offers no STARTTLS", "dns", "plain.test",
         [B_NOTLS_NATIVE], [B_NOTLS_TG]),
    Case("no_filter", "MX offers no STARTTLS; native without smtp_delivery_status_filter", "dns", "plain.test",
         [Got("deferred", dsn="4.7.4", text=NOT_OFFERED)], [B_NOTLS_TG]),
    Case("stripped", "STARTTLS stripped by a man in the middle", "dns", "strip.test",
         [B_NOTLS_NATIVE], [B_NOTLS_TG]),
    Case("tls10", "MX negotiates TLS 1.0 only", "dns", "tls10.test",
         [Got("deferred", dsn="4.7.5", text=HANDSHAKE)], [Got("bounced", dsn="5.7.10", text=WEAK10)]),
    Case("tls13", "MX offers TLS 1.3 (control)", "dns", "tls13.test",
         [Got("delivered", "TLSv1.3@tls13")], [Got("delivered", "TLSv1.3@tls13")]),
    Case("several_mx", "two MX: first without STARTTLS, second TLS 1.3", "dns", "mixed.test",
         [Got("delivered", "TLSv1.3@mixed2")], [Got("delivered", "TLSv1.3@mixed2")], tg_note="mx_check on"),
    Case("several_mx_unchecked", "the same two MX; tlsguard without mx_check", "nomx", "mixed.test",
         [Got("delivered", "TLSv1.3@mixed2")], [B_NOTLS_TG]),
    Case("transport_route", "transport_maps route to [host] without STARTTLS", "dns", "route.test",
         [Got("delivered", "clear@route")], [B_NOTLS_TG]),
    Case("relayhost", "relayhost without STARTTLS", "relay", "relayed.test",
         [B_NOTLS_NATIVE], [B_NOTLS_TG]),
    Case("exim", "Exim as the MTA, MX without STARTTLS", "exim", "plain.test",
         [Got("delivered", "clear@plain")], [Got("bounced", text=NOT_OFFERED)],
         note="Postfix's settings do not exist in Exim"),
    Case("exim_own_rule", "Exim with its own rule (hosts_require_tls), MX without STARTTLS",
         "exim_tls", "plain.test", [Got("deferred", text=EXIM_NOT_OFFERED)], [Got("bounced", text=NOT_OFFERED)],
         note="Exim's rule; tlsguard's Exim has none"),
    Case("null_sender", "null sender (auto-reply, bounce) to MX without STARTTLS", "dns", "plain.test",
         [Got("delivered", "clear@plain")], [Got("delivered", "clear@plain")], senders=("null",)),
    Case("srs_forward", "the user's own forward (SRS0= sender) to MX without STARTTLS", "dns", "plain.test",
         [B_NOTLS_NATIVE], [Got("delivered", "clear@plain")], senders=("srs",)),
    Case("shared_queue", "guaranteed and other sender queued together, MX without STARTTLS", "dns",
         "plain.test", [B_NOTLS_NATIVE, Got("delivered", "clear@plain")],
         [B_NOTLS_TG, Got("delivered", "clear@plain")], senders=("g", "n")),
    Case("smtp_submission", "submitted over SMTP (smtpd), not sendmail(1); no STARTTLS", "dns",
         "plain.test", [B_NOTLS_NATIVE], [B_NOTLS_TG], submit=True),
]


# ------------------------------------------------------------------ one run

class Setup:
    """One column: its MTA instances (dns, relay, exim) by role."""

    def __init__(self, name):
        self.name = name
        self.inst = {}


def sender_of(case, tag, setup, run_id):
    local = "%s-%s-%s.%s" % (case.name.replace("_", "-"), tag, setup, run_id)
    if tag == "null":
        return ""
    if tag == "srs":
        return "SRS0=a1b2=T7=other.example=%s@guarded.test" % local
    return "%s@%s" % (local, "mta.test" if tag == "n" else "guarded.test")


def rcpt_of(case, tag, setup, run_id):
    return "%s-r%s-%s.%s@%s" % (case.name.replace("_", "-"), tag, setup, run_id, case.domain)


def submit_smtp(inst, addr, sender, rcpt, subject):
    """The mail through the instance's smtpd, as a client would submit it; a Mail like send()'s."""
    marker = "m-" + secrets.token_hex(8)
    message_id = "<%s@e2e.%s>" % (marker, inst.hostname)
    subject = "%s %s" % (subject, marker)
    text = ("From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: %s\r\nX-E2E-Marker: %s\r\n\r\nmarker: %s\r\n" % (
        sender, rcpt, subject, message_id, marker, marker))
    with smtplib.SMTP(addr[0], addr[1], timeout=30) as s:
        s.ehlo("client.test")
        s.sendmail(sender, [rcpt], text)
    return Mail(marker, sender, [rcpt], message_id, subject, time.time())


def inject(setups, cases, run_id):
    for case in cases:
        for setup in setups:
            inst = setup.inst.get(case.inst)
            if inst is None:
                continue
            mails = case.mails[setup.name] = []
            for tag in case.senders:
                sender, rcpt = sender_of(case, tag, setup.name, run_id), rcpt_of(case, tag, setup.name, run_id)
                subject = "%s/%s" % (setup.name, case.name)
                t = time.time()  # the times count from here: the submission itself is part of them
                if case.submit:
                    mail = submit_smtp(inst, SUBMIT[setup.name], sender, rcpt, subject)
                else:
                    mail = inst.send(sender, [rcpt], subject=subject)
                mail.injected_at = t
                mails.append(mail)


@dataclass
class Seen:
    result: str  # bounced | deferred | delivered | nothing (no status at all)
    dsn: str
    text: str
    mx: str
    after: float = None  # bounced: seconds from injection to the DSN in the mailbox; delivered: to status=sent
    conn_use: int = 1


def mx_record(mxs, mail):
    """What the MX hosts recorded of the mail: "none", or "VERSION@KEY" / "clear@KEY" for each
    transaction that carried its envelope (its RCPT), joined by ", "; "(no body)" when it did
    not carry the message too."""
    rcpt = "<%s>" % mail.recipients[0].lower()
    found = []
    for key, mx in mxs.items():
        for c in mx.connections():
            for t in c.transactions():
                if not any(rcpt in r.lower() for r in t.rcpts) and not (
                        mail.sender and normalize(t.sender or "") == normalize(mail.sender)):
                    continue
                body = t.data is not None and any(mail.marker in line for line in t.data)
                found.append("%s@%s%s" % (t.tls_version or "clear", key, "" if body else " (no body)"))
    return ", ".join(sorted(found)) or "none"


class Watch:
    """Polls every instance from before the first injection, so that each time is the
    mail's own (from its injection to its DSN in the mailbox, or to status=sent), not
    the time the injection of the others took."""

    def __init__(self, setups, cases):
        self.setups, self.cases = setups, cases
        self.bounce_at, self.final_at = {}, {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="watch", daemon=True)

    def begin(self):
        self.thread.start()
        return self

    def mails(self):
        """(key, case, setup, i, mail) of every mail injected so far."""
        for case in self.cases:
            for setup in self.setups:
                for i, mail in enumerate(list(case.mails.get(setup.name, []))):
                    yield (case.name, setup.name, i), case, setup, i, mail

    def statuses(self):
        """{key: the latest Status or None}, one read of each instance's log."""
        by_inst = {}
        for key, case, setup, i, mail in self.mails():
            by_inst.setdefault(id(setup.inst[case.inst]), (setup.inst[case.inst], []))[1].append((key, mail))
        out = {}
        for inst, items in by_inst.values():
            got = inst.outcomes([m for _, m in items])
            for key, mail in items:
                out[key] = got[mail.marker].status_of(mail.recipients[0])
        return out

    def _loop(self):
        while not self.stopping.is_set():
            statuses = self.statuses()
            for key, case, setup, i, mail in self.mails():
                s, now = statuses.get(key), time.time() - mail.injected_at
                if s is not None and s.status in ("sent", "bounced") and key not in self.final_at:
                    self.final_at[key] = now
                if s is not None and s.status == "bounced" and key not in self.bounce_at and (
                        not mail.sender or setup.inst[case.inst].bounces_for(mail.sender, mail.marker)):
                    self.bounce_at[key] = now
            self.stopping.wait(0.1)

    def pending(self):
        """The mails that must be final and are not yet (a bounce: not yet in the mailbox)."""
        n = 0
        for key, case, setup, i, mail in self.mails():
            if case.want(setup.name)[i].result != "deferred" and (
                    key not in self.final_at or (key in self.final_at and key not in self.bounce_at
                                                 and case.want(setup.name)[i].result == "bounced")):
                n += 1
        return n

    def finish(self, mxs):
        """Wait WATCH seconds from the last injection, and on until no mail is pending
        (TIMEOUT_FINAL at most); stop polling; {(case, setup, i): Seen}."""
        start = time.monotonic()
        while True:
            waited = time.monotonic() - start
            if (waited >= WATCH and not self.pending()) or waited >= TIMEOUT_FINAL:
                break
            time.sleep(0.3)
        time.sleep(0.5)  # anything late (a second bounce, the MX's last lines)
        self.stopping.set()
        self.thread.join(10)
        statuses = self.statuses()
        seen = {}
        for key, case, setup, i, mail in self.mails():
            s = statuses.get(key)
            result = {"sent": "delivered", "bounced": "bounced", "deferred": "deferred"}.get(
                s.status if s else None, "nothing")
            seen[key] = Seen(result, s.dsn if s else "", " ".join(s.text.split()) if s else "",
                             mx_record(mxs, mail), self.bounce_at.get(key, self.final_at.get(key)),
                             s.conn_use if s else 1)
        return seen


def check(case, setup, seen, inst):
    """The cells of one case for one setup; a list of problems."""
    p = []
    for i, (want, mail) in enumerate(zip(case.want(setup.name), case.mails.get(setup.name, []))):
        got = seen[(case.name, setup.name, i)]
        who = "%s <%s>" % (setup.name, mail.sender)
        if got.result != want.result:
            p.append("%s: %s (%s %s), expected %s" % (who, got.result, got.dsn, got.text[:90], want.result))
        if want.dsn and got.dsn != want.dsn:
            p.append("%s: status %s, expected %s (%s)" % (who, got.dsn, want.dsn, got.text[:90]))
        if want.text and want.text not in got.text:
            p.append("%s: %r is not in %r" % (who, want.text, got.text[:120]))
        if got.mx != want.mx:
            p.append("%s: the MX hosts recorded %s, expected %s" % (who, got.mx, want.mx))
        bounces = inst.bounces_for(mail.sender, mail.marker) if mail.sender else []
        if want.result == "bounced":
            if len(bounces) != 1:
                p.append("%s: %d DSNs in the sender's mailbox, expected 1" % (who, len(bounces)))
            for msg in bounces:
                report = " ".join(bounce_report(msg).split())
                if want.text and want.text not in report:
                    p.append("%s: the DSN lacks %r: %r" % (who, want.text, report[:200]))
        elif bounces:
            p.append("%s: %d unexpected DSN(s)" % (who, len(bounces)))
    return p


# ------------------------------------------------------------------ the table

def cell_sender(got):
    if got.result == "bounced":
        return "**bounced**, %s s, %s %s" % (
            "%.1f" % got.after if got.after is not None else "?", got.dsn, short(got.text))
    if got.result == "deferred":
        return "deferred (%s), no bounce in %d s" % (" ".join(x for x in (got.dsn, short(got.text)) if x), WATCH)
    if got.result == "delivered":
        return "delivered%s" % (" (cached connection, conn_use=%d)" % got.conn_use if got.conn_use > 1 else "")
    return "no status"


def cell_mx(got):
    if got.mx == "none":
        return "no envelope"
    return "; ".join("**in clear** at %s" % x.split("@", 1)[1] if x.startswith("clear@") else
                     "over %s at %s" % tuple(x.split("@", 1)) for x in got.mx.split(", "))


def short(text, n=70):
    """The cause of a status, without Postfix's host name and "(in reply to ...)" tail."""
    for cut in (" (in reply to", ", but was not offered by host"):
        if cut in text:
            text = text.split(cut)[0] + (", but was not offered by host" if cut.startswith(",") else "")
    for known in (NOT_OFFERED, WEAK10, HANDSHAKE, EXIM_NOT_OFFERED):
        if known in text:
            return '"%s"' % known
    return '"%s"' % (text if len(text) <= n else text[:n - 3] + "...")


def table(cases, seen):
    out = ["| case | native: sender gets | native: MX got | tlsguard: sender gets | tlsguard: MX got |",
           "| --- | --- | --- | --- | --- |"]
    for case in cases:
        n = len(case.senders)
        for i in range(n):
            row = case.row if n == 1 else "%s: %s" % (case.row, {"g": "guaranteed", "n": "other"}[case.senders[i]])
            cells = [row]
            for setup in SETUPS:
                got = seen.get((case.name, setup, i))
                if got is None:
                    cells += ["not run", "not run"]
                else:
                    note = case.note if setup == "native" else case.tg_note
                    cells += [cell_sender(got) + (" (%s)" % note if note else ""), cell_mx(got)]
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


# ------------------------------------------------------------------ main

def child_cgroup(suite, parent, name):
    path = os.path.join(parent.path, name)
    os.mkdir(path)
    cg = Cgroup(path)
    suite.push(cg.remove)
    return cg


def start_setup(suite, args, tmp, name, parent, pf_resolv, exim_ok, run_id):
    """The instances of one setup, each in its own child cgroup of ``parent``."""
    setup = Setup(name)
    root = os.path.join(tmp, name)
    os.makedirs(root)
    smtpd = SMTPD_MASTER.format(addr=SUBMIT[name][0], port=SUBMIT[name][1])
    main, encrypt = {}, ""
    if name == "native":
        filt = suite.write(name + "-smtp_dsn_filter", NATIVE_FILTER)
        nofilter = sender_of(next(c for c in CASES if c.name == "no_filter"), "g", name, run_id)
        senders = suite.write(name + "-sender_transport", NATIVE_SENDERS.format(nofilter=nofilter))
        main = {"sender_dependent_default_transport_maps": "texthash:" + senders}
        encrypt = NATIVE_MASTER.format(filter=filt)
    setup.inst["dns"] = suite.postfix(NsPostfix(
        os.path.join(root, "postfix-dns"), child_cgroup(suite, parent, "dns"), ROUTE, MAILBOX_DOMAINS,
        extra_main=dict(DNS_MAIN, **main), extra_master=encrypt + smtpd, resolv_conf=pf_resolv))
    setup.inst["relay"] = suite.postfix(PostfixInstance(
        os.path.join(root, "postfix-relay"), child_cgroup(suite, parent, "relay"), {}, MAILBOX_DOMAINS,
        extra_main=dict(RELAY_MAIN, **main), extra_master=encrypt))
    if name == "native":
        setup.inst["nomx"] = setup.inst["dns"]
    if exim_ok:
        os.makedirs(os.path.join(root, "exim"))
        exim = EximInstance(os.path.join(root, "exim"), child_cgroup(suite, parent, "exim"), EXIM_ROUTES,
                            MAILBOX_DOMAINS, mailboxes=[], deps=args.deps)
        suite.push(exim.stop)
        exim.start()
        setup.inst["exim"] = exim
        if name == "native":
            os.makedirs(os.path.join(root, "exim-tls"))
            exim = EximInstance(os.path.join(root, "exim-tls"), child_cgroup(suite, parent, "exim-tls"),
                                EXIM_ROUTES, MAILBOX_DOMAINS, mailboxes=[], deps=args.deps,
                                require_tls_senders=["*@guarded.test"])
            suite.push(exim.stop)
            setup.inst["exim_tls"] = exim.start()
        else:
            setup.inst["exim_tls"] = setup.inst["exim"]
    return setup


def main(argv=None):
    ap = harness.arg_parser(__doc__, keep_help="logs, queues, mailboxes, unbound",
                            verbose_help="show the MTAs' logs of failed cases")
    ap.add_argument("--deps", default=DEFAULT_DEPS, help="where make mta-deps unpacked Exim")
    ap.add_argument("--table", action="store_true", help="print the measured table in Markdown")
    args = ap.parse_args(argv)
    results = harness.Results()
    report, say = results.report, lambda text: results.say([text])
    with harness.Run(results, keep=args.keep, root="native_compare.py must run as root (cgroups, port 25, "
                     "Postfix, Exim, unbound, mount namespaces)") as suite:
        try:
            harness.require_tools(args.tlsguardd, args.tlsguardctl, postfix=True)
            ensure_unbound(say)
            exim_ok = True
            try:
                check_exim(args.deps)
            except MTAMissing as e:
                exim_ok = False
                results.skip("exim", "NOT TESTED: %s" % str(e).splitlines()[0])
            tmp = suite.tempdir("tlsguard-e2e-native-", 0o755)
            unbound = Unbound(tmp, DNS_ADDR, static_zones={"test.": ZONE}, ready=("mixed.test", T_MX, 2))
            suite.push(unbound.stop)
            unbound.start()
            pf_resolv = os.path.join(tmp, "resolv.conf")
            write_resolv(pf_resolv, DNS_ADDR)
            jsonl = os.path.join(tmp, "mx.jsonl")
            mxs = {key: suite.started(TestMX(host, 25, name=key, jsonl_path=jsonl, tls=opts))
                   for key, (host, opts) in MXS.items()}
            suite.started(StripProxy(STRIP, 25, (MXS["strip-up"][0], 25), name="strip"))
            native_cg = suite.cgroup("tlsguard-e2e-native")
            tg_cg = suite.cgroup("tlsguard-e2e-native-tg")
            run_id = secrets.token_hex(3)
            setups = [start_setup(suite, args, tmp, name, cg, pf_resolv, exim_ok, run_id)
                      for name, cg in (("native", native_cg), ("tlsguard", tg_cg))]
            conf = suite.write("tlsguard.conf", TG_CONF)
            daemon = suite.daemon(args, tg_cg, GUARDED_SENDERS, "-c", conf, "--mx-check", DNS_ADDR,
                                  "--postfix-config", setups[1].inst["dns"].conf, "-v")
            # A second tlsguardd, without mx_check, on a Postfix of its own.
            nomx_cg = suite.cgroup("tlsguard-e2e-native-nomx")
            setups[1].inst["nomx"] = suite.postfix(NsPostfix(
                os.path.join(tmp, "tlsguard", "postfix-nomx"), nomx_cg, {}, MAILBOX_DOMAINS,
                extra_main=DNS_MAIN, resolv_conf=pf_resolv))
            nomx = Daemon(args.tlsguardd, args.tlsguardctl, nomx_cg.path, suite.write("senders-nomx", GUARDED_SENDERS),
                          os.path.join(tmp, "nomx.sock"), os.path.join(tmp, "nomx.log"),
                          postfix_config=setups[1].inst["nomx"].conf)
            nomx.argv += ["-c", conf]
            suite.push_daemon(nomx)
            nomx.start()
        except (PostfixMissing, PostfixError, MTAMissing, MTAError, RuntimeError, OSError,
                subprocess.SubprocessError) as e:
            report("setup", [str(e)])
        else:
            with suite.guard():
                t0 = time.monotonic()
                cases = [c for c in CASES if exim_ok or not c.inst.startswith("exim")]
                watch = Watch(setups, cases).begin()
                try:
                    inject(setups, cases, run_id)
                finally:
                    seen = watch.finish(mxs)
                for case in cases:
                    problems = []
                    for setup in setups:
                        problems += check(case, setup, seen, setup.inst[case.inst])
                    report(case.name, problems)
                    for setup in setups:
                        for i, mail in enumerate(case.mails[setup.name]):
                            got = seen[(case.name, setup.name, i)]
                            say("%-8s <%s>: %s; MX: %s" % (setup.name, mail.sender, cell_sender(got), cell_mx(got)))
                    if problems and args.verbose:
                        for setup in setups:
                            print(setup.inst[case.inst].log_tail(25))
                say("(%.1fs from the first injection to the last outcome)" % (time.monotonic() - t0))
                if args.table:
                    print("\n" + table(cases, seen) + "\n", flush=True)
            if args.verbose:
                print(daemon.log_tail(40))
    return suite.finish()


if __name__ == "__main__":
    sys.exit(main())
