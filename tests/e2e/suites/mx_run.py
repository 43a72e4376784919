#!/usr/bin/python3
"""End-to-end MX run for tlsguard: a domain with several MX hosts, resolved by a real DNS server.

Usage (as root; builds nothing):
    /usr/bin/python3 tests/e2e/suites/mx_run.py [--tlsguardd build/tlsguardd]
        [--tlsguardctl build/tlsguardctl] [--keep] [-v]

What it tests: ``tlsguardd --mx-check IP`` answers a held guaranteed MAIL
with ``450 4.7.10`` while another MX host of the recipient's domain takes
mail over TLS 1.2 or higher (Postfix then tries that host), and with ``550
5.7.10`` when none does or when the held host is not an MX host of the
domain at all (see agent/tg_mx.h).

Setup (nothing leaves loopback, and no DNS query leaves the machine):
  * unbound from Debian (tests/e2e/fixtures/dns_env.py, shared with probe_run.py),
    installed if missing (``apt-get install -y
    unbound``; while it installs, /usr/sbin/policy-rc.d answers 101 so that
    the package does not start the system's unbound service: an existing
    policy-rc.d that already answers 101 is left as it is, another one is
    moved aside and put back; if a system unbound was started anyway, it is
    stopped with its own init script).  Our own unbound runs in the
    foreground (``unbound -d -c CONF``, killed by pid at the end) on
    127.0.0.80:53 from a config in the temp dir: no chroot, no user change,
    no remote control, iterator only (no trust anchor), ``local-zone: "."
    refuse``, ``do-not-query-address`` for every IPv4 and IPv6 address and
    no forward-zone, so it can answer only from its ``test.`` static zone:

        mixed.test     MX 10 mx1.mixed.test    127.0.0.70  no STARTTLS
                       MX 20 mx2.mixed.test    127.0.0.71  TLS 1.3
        insecure.test  MX 10 mx1.insecure.test 127.0.0.72  no STARTTLS
                       MX 20 mx2.insecure.test 127.0.0.73  no STARTTLS
        notmx.test     MX 10 mx.notmx.test     127.0.0.75  TLS 1.3
        (127.0.0.74, no STARTTLS, is where transport_maps sends notmx.test:
        a host that is not among the domain's MX records)

    The MXs use 127.0.0.70 and up: bench/run.py listens on .61, .62 and
    .65-.68.

  * the test MXs (mx.py, real OpenSSL handshakes) on those addresses;
  * a private Postfix (postfix_env.py) in a test cgroup and in a private
    mount namespace, in which a test resolv.conf (``nameserver
    127.0.0.80``) is bind-mounted over /etc/resolv.conf: ``unshare -m
    --propagation private sh -c 'mount --bind RESOLV /etc/resolv.conf; echo
    $$ > CGROUP/cgroup.procs; exec postfix -c CONF start'``.  Its main.cf:
    ``default_transport = smtp``, ``smtp_host_lookup = dns``,
    ``disable_dns_lookups = no``, ``smtp_tls_security_level = may``,
    ``smtp_mx_address_limit``/``smtp_mx_session_limit`` at their defaults,
    and a transport_maps entry only for notmx.test;
  * ``tlsguardd --cgroup DIR --senders FILE --port 25 --socket SOCK
    --mx-check 127.0.0.80 -v`` (daemon.py's ``Daemon``), likewise in a private
    mount namespace, whose /etc/resolv.conf names a canary on
    127.0.0.79:53 that answers REFUSED and records every query: tlsguardd
    must ask only the server given to --mx-check, never the system's;
  * a passive watch for DNS queries that leave the machine while the test
    runs: an AF_PACKET socket per interface with a classic BPF filter that
    passes only IPv4/IPv6 UDP and TCP to port 53; what it sees on lo (our
    own queries to 127.0.0.80) proves that it works, anything on another
    interface has left the machine.
The machine's /etc/resolv.conf is never written.

Cases (guaranteed senders: ``@guarded.test``, one sender address per case):
  mixed_secure_second_mx  guaranteed sender -> mixed.test: mx1 is held and
      answered 450 4.7.10 (Postfix's log: "host mx1.mixed.test[127.0.0.70]
      said: 450 4.7.10 ... (in reply to MAIL FROM command)"), Postfix goes on
      to mx2 and delivers there over TLSv1.3 (status=sent,
      relay=mx2.mixed.test[127.0.0.71]:25, MX2's transaction has tls_version
      TLSv1.3), mx1 never sees the transaction (MAIL FROM of that sender,
      its RCPT, the body), mx2 saw tlsguardd's STARTTLS probe, no DSN;
  all_mx_insecure         guaranteed sender -> insecure.test: bounced at once
      with 5.7.10 "TLS is required, but was not offered by host", no 450
      or deferral first, one DSN, no transaction at either MX, and mx2 was
      probed (Postfix never goes there after the 550, so that connection
      is tlsguardd's);
  mixed_other_sender      a non-guaranteed sender -> mixed.test: delivered by
      mx1 in plaintext, untouched;
  held_host_not_an_mx     guaranteed sender -> notmx.test, routed by
      transport_maps to 127.0.0.74, which is not an MX host of notmx.test
      (whose only MX offers TLS 1.3): bounced with 5.7.10 and never answered
      450 (that would defer the mail until it expires), nothing at .74 or
      .75, and unbound saw tlsguardd's MX query for notmx.test (Postfix,
      routed to [127.0.0.74], never asks for it);
  dns_isolation           Postfix's and tlsguardd's /etc/resolv.conf (seen
      through /proc/PID/root) are the test's, the machine's is unchanged,
      the canary got no query, unbound answered the MX queries of all three
      domains, the watch saw the test's queries on lo and no query for a
      name of the test (*.test, *.invalid, *.127.in-addr.arpa) on any other
      interface (other names seen there, from other programs on the
      machine, are printed as a note);
  tlsguardd_shutdown      SIGTERM, exit 0.
Before Postfix starts, ``dns_server`` checks the server itself: the MX
records are served, a name under test. that is not in the zone is
NXDOMAIN, and a name outside test. is REFUSED (nothing is forwarded).

Output: ``PASS name`` / ``FAIL name: why`` per case, then exactly ``N
passed, M failed`` alone on a line; exit status 0 only if none failed (2 on
a usage error).  Everything created is removed in a ``finally``, also on
Ctrl-C or SIGTERM: tlsguardd (SIGTERM by pid, must exit 0), Postfix (stop,
master gone), the MXs, the canary and the watch, unbound (SIGTERM by pid),
the cgroup, and the temp dir unless --keep.  -v prints, for failed cases,
their Postfix log lines, what each MX saw, tlsguardd's log and unbound's.
"""

import os
import re
import secrets
import socket
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "fixtures"))
sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree

from dns_env import (T_A, T_MX, LeakWatch, Unbound, answer_problems, dns_question,  # noqa: E402
                     ensure_unbound, is_test_name)
import harness  # noqa: E402
from mx import TestMX, TLSOptions  # noqa: E402
from postfix_env import (LOG_RE, UNSHARE, NsPostfix, PostfixError, PostfixMissing,  # noqa: E402
                         bounce_report, nameservers, ns_resolv_conf, write_resolv)
from daemon import GUARDED_SENDERS, MAILBOX_DOMAINS, TLS_DSN, TLS_TEXT, normalize  # noqa: E402

DNS_ADDR = "127.0.0.80"  # our unbound
CANARY_ADDR = "127.0.0.79"  # what tlsguardd's /etc/resolv.conf names; must never be asked

TLS13 = TLSOptions(version="1.3")
# key -> (address, TLS options or None for no STARTTLS)
MXS = {
    "mixed1": ("127.0.0.70", None),
    "mixed2": ("127.0.0.71", TLS13),
    "insec1": ("127.0.0.72", None),
    "insec2": ("127.0.0.73", None),
    "notmx-relay": ("127.0.0.74", None),
    "notmx-mx": ("127.0.0.75", TLS13),
}
ZONE = [
    "mixed.test. 60 IN MX 10 mx1.mixed.test.",
    "mixed.test. 60 IN MX 20 mx2.mixed.test.",
    "mx1.mixed.test. 60 IN A 127.0.0.70",
    "mx2.mixed.test. 60 IN A 127.0.0.71",
    "insecure.test. 60 IN MX 10 mx1.insecure.test.",
    "insecure.test. 60 IN MX 20 mx2.insecure.test.",
    "mx1.insecure.test. 60 IN A 127.0.0.72",
    "mx2.insecure.test. 60 IN A 127.0.0.73",
    "notmx.test. 60 IN MX 10 mx.notmx.test.",
    "mx.notmx.test. 60 IN A 127.0.0.75",
]
TRANSPORTS = {"notmx.test": "smtp:[127.0.0.74]:25"}  # the only domain not routed by DNS
POSTFIX_MAIN = {
    "default_transport": "smtp",
    "smtp_host_lookup": "dns",
    "disable_dns_lookups": "no",
    "smtp_tls_security_level": "may",
    "smtp_tls_loglevel": "1",
}
SENDERS_FILE = GUARDED_SENDERS
SENDERS = {
    "mixed_secure_second_mx": "secure2nd@guarded.test",
    "all_mx_insecure": "allinsecure@guarded.test",
    "mixed_other_sender": "bob@mta.test",
    "held_host_not_an_mx": "notmx@guarded.test",
}
MAILBOXES = list(SENDERS.values()) + ["postmaster@mta.test"]

TEXT_450 = "450 4.7.10 " + TLS_TEXT
TIMEOUT_STATUS = 45.0  # all final statuses in Postfix's log
TIMEOUT_BOUNCE = 20.0  # the DSNs the log announces


def check_dns_server():
    """Our unbound answers the zone, NXDOMAIN inside test., REFUSED outside (forwards nothing)."""
    return answer_problems(DNS_ADDR, (("mixed.test", T_MX, 0, 2), ("insecure.test", T_MX, 0, 2),
                                      ("notmx.test", T_MX, 0, 1), ("mx2.mixed.test", T_A, 0, 1),
                                      ("nosuch.test", T_A, 3, 0), ("example.com", T_A, 5, 0),
                                      ("debian.org", T_MX, 5, 0)), lambda qtype: "MX" if qtype == T_MX else "A")


# ------------------------------------------------------------------ canary resolver

class Canary:
    """A UDP 'DNS server' that answers REFUSED and records what it was asked."""

    def __init__(self, addr):
        self.addr = addr
        self.queries = []  # (peer, qname, qtype)
        self.sock = None
        self.thread = None
        self.stopping = threading.Event()

    def start(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind((self.addr, 53))
        except OSError as e:
            self.sock.close()
            self.sock = None
            raise OSError(e.errno, "canary resolver cannot bind %s:53: %s" % (self.addr, e.strerror)) from e
        self.sock.settimeout(0.2)
        self.thread = threading.Thread(target=self._loop, name="canary", daemon=True)
        self.thread.start()
        return self

    def _loop(self):
        while not self.stopping.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            qname, qtype = dns_question(data)
            self.queries.append((peer, qname, qtype))
            if len(data) >= 12:
                flags = struct.unpack(">H", data[2:4])[0]
                reply = data[:2] + struct.pack(">H", 0x8000 | (flags & 0x7900) | 5) + data[4:6] + b"\0" * 6
                end = data.find(b"\0", 12)
                if end > 0:
                    reply += data[12:end + 5]
                try:
                    self.sock.sendto(reply, peer)
                except OSError:
                    pass

    def stop(self):
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(5)
        if self.sock is not None:
            self.sock.close()


# ------------------------------------------------------------------ tlsguardd in a mount namespace

def ns_daemon(daemon, resolv_conf):
    """Run daemon.py's Daemon's tlsguardd in a private mount namespace with resolv_conf bind-mounted.
    unshare and sh exec into tlsguardd: the pid that Daemon signals is tlsguardd's."""
    daemon.argv = [UNSHARE, "-m", "--propagation", "private", "/bin/sh", "-c",
                   'mount --bind "$0" /etc/resolv.conf && exec "$@"', resolv_conf] + daemon.argv
    return daemon


# ------------------------------------------------------------------ cases

class Ctx:
    def __init__(self, pf, mxs, unbound, daemon, run_id):
        self.pf, self.mxs, self.unbound, self.daemon, self.run_id = pf, mxs, unbound, daemon, run_id
        self.mails = {}  # case name -> Mail
        self.outcomes = {}
        self.bounces = {}

    def rcpt(self, case, domain):
        return "%s.%s@%s" % (case.replace("_", "-"), self.run_id, domain)

    def daemon_lines(self):
        try:
            with open(self.daemon.log_path, errors="replace") as f:
                return f.read().splitlines()
        except OSError:
            return []

    def log_for(self, mail):
        o = self.outcomes.get(mail.marker)
        if o is None or o.queue_id is None:
            return []
        return [line for line in self.pf.log_lines() if (m := LOG_RE.search(line)) and m.group(3) == o.queue_id]


CASE_DOMAINS = {
    "mixed_secure_second_mx": "mixed.test",
    "all_mx_insecure": "insecure.test",
    "mixed_other_sender": "mixed.test",
    "held_host_not_an_mx": "notmx.test",
}


def carriers(ctx, mail):
    """(mx key, connection, transaction) whose body carries the mail's marker."""
    return [(key, c, t) for key, mx in ctx.mxs.items() for c in mx.connections() for t in c.transactions()
            if t.data is not None and any(mail.marker in line for line in t.data)]


def traces_at(ctx, mail, keys):
    """Anything of the mail's transaction at the MXs in keys: MAIL FROM of its sender, RCPT of its
    recipients, its marker."""
    sender = normalize(mail.sender)
    rcpts = {"<%s>" % r.lower() for r in mail.recipients}
    found = []
    for key in keys:
        for c in ctx.mxs[key].connections():
            where = "%s#%d" % (key, c.id)
            if any(t.sender and normalize(t.sender) == sender for t in c.transactions()):
                found.append("%s: MAIL FROM:<%s>" % (where, mail.sender))
            for line in c.lines():
                low = line.lower()
                if mail.marker in line or (low.startswith("rcpt to:") and any(r in low for r in rcpts)):
                    found.append("%s: %r" % (where, line[:60]))
    return found


def check_status(ctx, mail, status, relay=None, dsn=None, text=None):
    o = ctx.outcomes.get(mail.marker)
    if o is None or o.queue_id is None:
        return ["never picked up (no cleanup message-id line in Postfix's log)"]
    p = []
    for r in mail.recipients:
        s = o.status_of(r)
        if s is None:
            p.append("<%s>: no final status in Postfix's log (expected %s)" % (r, status))
            continue
        if s.status != status:
            p.append("<%s>: status=%s dsn=%s (%s), expected %s" % (r, s.status, s.dsn, s.text, status))
            continue
        if relay and not s.relay.startswith(relay):
            p.append("<%s>: relay=%s, expected %s" % (r, s.relay, relay))
        if dsn and s.dsn != dsn:
            p.append("<%s>: dsn=%s (%s), expected %s" % (r, s.dsn, s.text, dsn))
        if text and text not in s.text:
            p.append("<%s>: %r lacks %r" % (r, s.text, text))
    return p


def check_dsn(ctx, mail, expected):
    dsns = ctx.bounces.get(mail.marker, [])
    if not expected:
        return ["unexpected DSN in the mailbox of <%s>" % mail.sender] if dsns else []
    if len(dsns) != 1:
        return ["%d DSNs in the mailbox of <%s>, expected 1" % (len(dsns), mail.sender)]
    report = " ".join(bounce_report(dsns[0]).split())
    p = []
    for r in mail.recipients:
        if "<%s>" % r.lower() not in report.lower():
            p.append("the DSN does not name <%s>" % r)
    if TLS_TEXT not in report:
        p.append("the DSN lacks %r" % TLS_TEXT)
    return p


def no_transactions(ctx, keys):
    return ["%s#%d saw MAIL FROM:%s" % (key, c.id, t.mail_from)
            for key in keys for c in ctx.mxs[key].connections() for t in c.transactions()]


def early_deferrals(ctx, mail):
    """A mail that must bounce at once: any 450 or deferral before it is a problem."""
    early = [line.split(": ", 2)[-1] for line in ctx.log_for(mail)
             if " said: 450 " in line or "status=deferred" in line]
    if early:
        return ["%d deferral(s) or 450(s) in Postfix's log, the first: %s" % (len(early), early[0][:200])]
    return []


def carried_once(got, mail, want_key, want_tls):
    """The carriers ``got`` of the mail: one, at MX ``want_key``, its MAIL FROM under
    TLS version ``want_tls`` (None: plaintext), with the mail's envelope."""
    p = []
    if len(got) != 1:
        p.append("the body reached the MXs %d times, expected once (at %s)" % (len(got), want_key))
    for key, c, t in got:
        if key != want_key:
            p.append("delivered to %s, expected %s" % (key, want_key))
        if t.tls_version != want_tls:
            p.append("MAIL FROM reached %s under %s, expected %s" % (key, t.tls_version or "plaintext",
                                                                     want_tls or "plaintext"))
        if t.sender != mail.sender or {r.lower() for r in t.recipients} != {r.lower() for r in mail.recipients}:
            p.append("%s saw MAIL FROM:<%s> RCPT %s" % (key, t.sender, t.recipients))
    return p


def case_mixed_secure(ctx, mail):
    p = check_status(ctx, mail, "sent", relay="mx2.mixed.test[127.0.0.71]:25")
    said = [line for line in ctx.log_for(mail)
            if "host mx1.mixed.test[127.0.0.70] said: " + TEXT_450 in line and "in reply to MAIL FROM" in line]
    if not said:
        p.append("no %r from mx1.mixed.test[127.0.0.70] (in reply to MAIL FROM) in Postfix's log" % TEXT_450)
    bounced_or_deferred = [line for line in ctx.log_for(mail) if "status=deferred" in line or "status=bounced" in line]
    if bounced_or_deferred:
        p.append("Postfix logged %s" % bounced_or_deferred[0].split(": ", 2)[-1][:160])
    got = carriers(ctx, mail)
    p += carried_once(got, mail, "mixed2", "TLSv1.3")
    p += traces_at(ctx, mail, ["mixed1"])
    # tlsguardd's own STARTTLS probe of mx2: a TLS connection that carried no transaction,
    # opened before the delivering one.
    deliveries = [c for key, c, _ in got if key == "mixed2"]
    first_delivery = min((c.snapshot()[0].t for c in deliveries), default=None)
    probes = [c for c in ctx.mxs["mixed2"].connections() if c.tls_version and not c.transactions()
              and (first_delivery is None or c.snapshot()[0].t < first_delivery)]
    if not probes:
        p.append("mx2 saw no STARTTLS probe (a TLS connection without MAIL) before the delivery")
    p += check_dsn(ctx, mail, expected=False)
    return p


def held_bounce(ctx, mail, relay, keys):
    """Bounced at RELAY with the text of a held MAIL, after early deferrals; no
    transaction at the MXs ``keys``, no trace of the mail at any MX."""
    p = check_status(ctx, mail, "bounced", relay=relay, dsn=TLS_DSN, text=TLS_TEXT)
    p += early_deferrals(ctx, mail)
    p += no_transactions(ctx, keys)
    return p + traces_at(ctx, mail, list(ctx.mxs))


def case_all_insecure(ctx, mail):
    p = held_bounce(ctx, mail, "mx1.insecure.test[127.0.0.72]:25", ["insec1", "insec2"])
    # Postfix bounced at mx1 and never went to mx2: a connection there is tlsguardd's probe.
    if not any("EHLO" in c.verbs() for c in ctx.mxs["insec2"].connections()):
        p.append("mx2.insecure.test[127.0.0.73] was never probed (no connection with EHLO)")
    p += check_dsn(ctx, mail, expected=True)
    return p


def case_other_sender(ctx, mail):
    p = check_status(ctx, mail, "sent", relay="mx1.mixed.test[127.0.0.70]:25")
    p += carried_once(carriers(ctx, mail), mail, "mixed1", None)
    touched = [line for line in ctx.daemon_lines() if "from=<%s>" % mail.sender in line]
    if touched:
        p.append("tlsguardd acted on it: %s" % touched[0])
    p += check_dsn(ctx, mail, expected=False)
    return p


def case_not_an_mx(ctx, mail):
    p = held_bounce(ctx, mail, "127.0.0.74[127.0.0.74]:25", ["notmx-relay", "notmx-mx"])
    # Postfix does not look notmx.test up (transport_maps has [127.0.0.74]): the MX query is tlsguardd's.
    if not ctx.unbound.queried("notmx.test", "MX"):
        p.append("unbound logged no MX query for notmx.test (did tlsguardd look at the domain?)")
    p += check_dsn(ctx, mail, expected=True)
    return p


def case_not_an_mx_info(ctx, mail):
    n = len(ctx.mxs["notmx-mx"].connections())
    return ["connections at mx.notmx.test[127.0.0.75] (the domain's TLS MX, never to be probed): %d" % n]


def case_mixed_secure_info(ctx, mail):
    lines = []
    o = ctx.outcomes.get(mail.marker)
    if o:
        for s in o.statuses.values():
            m = re.search(r"delay=([\d.]+), delays=([\d./]+)", s.line)
            if m:
                lines.append("status=%s via %s, delay=%s (delays=%s)" % (s.status, s.relay, m.group(1), m.group(2)))
    return lines


CASES = [
    ("mixed_secure_second_mx", case_mixed_secure, case_mixed_secure_info),
    ("all_mx_insecure", case_all_insecure, None),
    ("mixed_other_sender", case_other_sender, None),
    ("held_host_not_an_mx", case_not_an_mx, case_not_an_mx_info),
]


def describe_conns(mx):
    out = []
    for c in mx.connections():
        verbs = c.verbs()
        out.append("#%d%s %s" % (c.id, " " + c.tls_version if c.tls_version else "", " ".join(verbs[:12])))
    return out or ["no connections"]


def wait_all(ctx):
    mails = list(ctx.mails.values())
    ctx.outcomes = ctx.pf.wait_final(mails, TIMEOUT_STATUS)
    wanted = [(m.sender, m.marker) for m in mails
              if any(s.status == "bounced" for s in ctx.outcomes[m.marker].statuses.values())]
    ctx.pf.wait_bounces(wanted, TIMEOUT_BOUNCE)
    time.sleep(0.5)  # let anything unexpected (a second DSN, late MX lines) show up
    ctx.outcomes = ctx.pf.outcomes(mails)
    ctx.bounces = {m.marker: ctx.pf.bounces_for(m.sender, m.marker) for m in mails}


def check_isolation(ctx, daemon, canary, watch, host_resolv_before):
    p = []
    for who, pid, want in (("Postfix master", ctx.pf.master_pid, DNS_ADDR),
                           ("tlsguardd", daemon.proc.pid if daemon.proc else None, CANARY_ADDR)):
        if pid is None:
            continue
        seen = nameservers(ns_resolv_conf(pid))
        if seen != [want]:
            p.append("%s sees nameservers %s, expected [%s]" % (who, seen, want))
    with open("/etc/resolv.conf") as f:
        if f.read() != host_resolv_before:
            p.append("the machine's /etc/resolv.conf changed during the run")
    if canary.queries:
        p.append("the system resolver of tlsguardd (canary %s) was asked: %s" % (
            CANARY_ADDR, ", ".join("%s type %s" % (q, t) for _, q, t in canary.queries[:5])))
    for domain in ("mixed.test", "insecure.test", "notmx.test"):
        if not ctx.unbound.queried(domain, "MX"):
            p.append("unbound logged no MX query for %s" % domain)
    return p + watch.problems(DNS_ADDR)


def run_cases(args, ctx, daemon, canary, watch, host_resolv_before, report):
    for name, _, _ in CASES:
        ctx.mails[name] = ctx.pf.send(SENDERS[name], [ctx.rcpt(name, CASE_DOMAINS[name])], subject=name)
    wait_all(ctx)
    for name, check, info in CASES:
        mail = ctx.mails[name]
        problems = check(ctx, mail)
        report(name, problems)
        if info:
            for line in info(ctx, mail):
                print("    " + line, flush=True)
        if problems and args.verbose:
            for line in ctx.log_for(mail):
                print("    " + line)
            for key in ctx.mxs:
                print("    %s: %s" % (key, "; ".join(describe_conns(ctx.mxs[key]))))
    report("dns_isolation", check_isolation(ctx, daemon, canary, watch, host_resolv_before))
    others = [s for s in watch.seen if not is_test_name(s[3])]
    if others:
        print("    note: %d other DNS queries left this machine during the run (not the test's names), "
              "e.g. %s" % (len(others), ", ".join(str(s[3]) for s in others[:3])), flush=True)


def main(argv=None):
    args = harness.arg_parser(__doc__, keep_help="logs, queue, mailboxes, unbound",
                              verbose_help="show log lines of failed cases, tlsguardd's and "
                                           "unbound's logs").parse_args(argv)
    results = harness.Results()
    report = results.report

    def say(text):
        print("    " + text, flush=True)

    with harness.Run(results, keep=args.keep, root="mx_run.py must run as root (cgroups, port 25, Postfix, "
                     "unbound, mount namespaces)") as suite:
        try:
            harness.require_tools(args.tlsguardd, args.tlsguardctl, postfix=True)
            ensure_unbound(say)
            with open("/etc/resolv.conf") as f:
                host_resolv_before = f.read()
            tmp = suite.tempdir("tlsguard-e2e-mx-", 0o755)
            watch = LeakWatch().start()
            suite.push(watch.stop)
            unbound = Unbound(tmp, DNS_ADDR, static_zones={"test.": ZONE}, ready=("mixed.test", T_MX, 2),
                              verbosity=2 if args.verbose else 1)
            suite.push(unbound.stop)
            unbound.start()
            report("dns_server", check_dns_server())
            time.sleep(0.2)  # unbound's log lines of those queries
            unbound.set_mark()
            canary = Canary(CANARY_ADDR).start()
            suite.push(canary.stop)
            pf_resolv = os.path.join(tmp, "resolv.conf.postfix")
            write_resolv(pf_resolv, DNS_ADDR)
            daemon_resolv = os.path.join(tmp, "resolv.conf.tlsguardd")
            write_resolv(daemon_resolv, CANARY_ADDR)
            cgroup = suite.cgroup("tlsguard-e2e-mx")
            jsonl = os.path.join(tmp, "mx.jsonl")
            mxs = {key: suite.started(TestMX(host, 25, name=key, jsonl_path=jsonl, tls=opts))
                   for key, (host, opts) in MXS.items()}
            pf = suite.postfix(NsPostfix(os.path.join(tmp, "postfix"), cgroup, TRANSPORTS, MAILBOX_DOMAINS,
                                         mailboxes=MAILBOXES, extra_main=POSTFIX_MAIN, resolv_conf=pf_resolv))
            daemon = suite.daemon(args, cgroup, SENDERS_FILE, "--mx-check", DNS_ADDR, "-v", start=False)
            ns_daemon(daemon, daemon_resolv).start()
        except (PostfixMissing, PostfixError, RuntimeError, OSError, subprocess.SubprocessError) as e:
            report("setup", [str(e)])
        else:
            with suite.guard():
                ctx = Ctx(pf, mxs, unbound, daemon, secrets.token_hex(3))
                run_cases(args, ctx, daemon, canary, watch, host_resolv_before, report)
            if args.verbose:
                print(daemon.log_tail(60))
                print(unbound.log_tail(40))
    return suite.finish()


if __name__ == "__main__":
    sys.exit(main())
