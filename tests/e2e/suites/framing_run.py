#!/usr/bin/python3
"""Framing, syntax and hostile replies, end to end: a raw SMTP client.

Usage (as root; builds nothing):
    /usr/bin/python3 tests/e2e/suites/framing_run.py [--tlsguardd build/tlsguardd]
        [--tlsguardctl build/tlsguardctl] [--only NAME[,NAME]] [--keep] [-v]

Setup: a temp dir, a cgroup v2 directory, ``tlsguardd --cgroup DIR --senders
FILE --port 25 --socket SOCK -v --audit FILE`` (daemon.py's ``Daemon``), a
recording test MX without STARTTLS (mx.py) on 127.0.0.120:25 and hostile MX
hosts (hostile_mx.py) on 127.0.0.121 and up.  Guaranteed senders:
``alice@example.org`` (an address entry) and ``@guarded.example`` (a domain
entry); ``bob@example.org`` is not guaranteed.

Each case runs one Python client process inside the guarded cgroup (a shell
writes its own pid into CGROUP/cgroup.procs, then execs this file with
``--client CASE``).  The client speaks SMTP over raw sockets, writes the
bytes exactly as the case says (one byte per write, CRLF split, ...) and
judges what it reads: a guaranteed transaction must get tlsguard's replies
in order (``550 5.7.10`` to MAIL -- ``451 4.5.4`` where the MAIL line is one
tlsguard cannot vouch for --, ``503`` to RCPT and DATA, ``250`` to RSET,
``221`` to QUIT), or the connection must be cut (write error ECONNABORTED,
EACCES, EPIPE, reset, EOF) before any reply to its MAIL: never a reply of
the host.  The runner then reads what the MX hosts recorded for the
client's connections (matched by the client's local port) and asserts that
no MAIL command of a guaranteed sender (read as a server reads it: any
case, spaces, quoted local part unquoted, source route and +tag dropped),
no RCPT of a ``g-*`` recipient and no ``G-BODY`` marker arrived outside TLS
1.2+, and that every non-guaranteed message the client delivered arrived
once.  Where a case pauses (hostile TLS cases), the runner reads
``tlsguardctl flows`` while the connection is open, and afterwards
tlsguardd's -v log, to tell whether the flow was ever taken for TLS.

Output: ``PASS name`` / ``FAIL name: why`` per case (a failing case is
followed by indented detail: the client's writes and replies, what the MX
recorded, tlsguardd's log lines of that time; -v shows them for every case),
then exactly ``N passed, M failed`` alone on a line; exit status 0 only if
none failed (2 on a usage error).  Everything created is removed in a
``finally``, also on Ctrl-C or SIGTERM: the client (by pid), tlsguardd
(SIGTERM by pid, must exit 0: the ``tlsguardd_shutdown`` case), the MX
hosts, the cgroup, and the temp dir unless --keep.
"""

import json
import os
import random
import re
import select
import socket
import ssl
import sys
import time
import traceback
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "fixtures"))
sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree

CRLF = b"\r\n"
G_ADDR = "alice@example.org"  # guaranteed (address entry)
G_DOMAIN = "guarded.example"  # guaranteed (domain entry)
OTHER = "bob@example.org"  # not guaranteed
SENDERS_FILE = """\
# tlsguard framing e2e: one address entry and one domain entry
alice@example.org
@guarded.example
"""
PLAIN_MX = "127.0.0.120"
HOSTILE = {  # key -> address; the hosts themselves are made in hostile_hosts()
    "lower": "127.0.0.121", "last": "127.0.0.122", "alone": "127.0.0.123", "absent": "127.0.0.124",
    "pregreet": "127.0.0.125", "sh-badext": "127.0.0.126", "sh-legacy13": "127.0.0.127",
    "sh-replay12": "127.0.0.128", "sh-replay13": "127.0.0.129", "big-tls10": "127.0.0.130",
    "tls10": "127.0.0.131", "big-refuse": "127.0.0.132", "big-desync": "127.0.0.133",
    "unwrap13": "127.0.0.134", "chunking": "127.0.0.135", "hreq10": "127.0.0.136",
    "data330": "127.0.0.137", "presend-part": "127.0.0.138", "presend-all": "127.0.0.139",
    "tfo": "127.0.0.140", "tls-leftover": "127.0.0.142",
}
# TCP Fast Open on loopback for the "tfo" MX and the clients: client (1), server (2), client
# data without a cookie (4), server data without a cookie (0x200), every listener (0x400).
TFO_SYSCTL = "/proc/sys/net/ipv4/tcp_fastopen"
TFO_ON = 0x607
TCP_FASTOPEN_CONNECT = getattr(socket, "TCP_FASTOPEN_CONNECT", 30)
# A TLS handshake message of type HelloRequest (0), empty: an on-path host
# puts it in front of an honest TLS 1.0 server's first flight.
HELLO_REQUEST = bytes.fromhex("160301000400000000")

REPLY_TIMEOUT = 3.0
CLIENT_TIMEOUT = 40.0
HELD_MAIL = ("550 5.7.10",)
HELD_BAD = ("550 5.7.10", "451 4.5.4")  # a MAIL line tlsguard cannot vouch for waits: 451
HELD_UNREAD = ("451 4.5.4",)


def errname(e):
    import errno as _errno
    if isinstance(e, ssl.SSLError):  # its errno is an SSL_ERROR_* code, not an errno
        return "%s (%s)" % (type(e).__name__, e.reason or e.strerror or e.args)
    return _errno.errorcode.get(e.errno, str(e.errno)) if getattr(e, "errno", None) else type(e).__name__


def short(b, n=90):
    r = repr(b if isinstance(b, bytes) else b.encode("utf-8", "surrogateescape"))[2:-1]
    return r if len(r) <= n else "%s...(%d bytes)" % (r[:n], len(b))


# ====================================================================== client
# Everything from here to the runner runs inside the guarded cgroup.

class Session:
    """One raw SMTP connection; every write and reply goes into the case's trace."""

    def __init__(self, cx, host, tag, sock=None):
        self.cx, self.host, self.tag = cx, host, tag
        self.sock = sock or socket.create_connection((host, 25), timeout=5)
        self.local = self.sock.getsockname()[1]
        self.buf = b""
        self.cut = None  # how the connection was cut, if it was
        self.timed_out = False
        cx.sessions.append({"host": host, "local": self.local, "tag": tag})

    def note(self, text):
        self.cx.trace.append("%s:%d %s" % (self.tag, self.local, text))

    def write(self, data, pieces=None, gap=0.0):
        """Write data, in pieces of these sizes (cycled) if given; False if the write failed."""
        if self.cut:
            return False
        chunks = [data]
        if pieces:
            chunks, pos, i = [], 0, 0
            while pos < len(data):
                n = pieces[i % len(pieces)]
                chunks.append(data[pos:pos + n])
                pos, i = pos + n, i + 1
        sent = 0
        try:
            for c in chunks:
                self.sock.sendall(c)
                sent += len(c)
                if gap:
                    time.sleep(gap)
        except OSError as e:
            self.cut = "write failed with %s after %d of %d bytes" % (errname(e), sent, len(data))
            self.note("C! %s %s" % (short(data), self.cut))
            return False
        self.note("C: %s%s" % (short(data), " (%d writes)" % len(chunks) if len(chunks) > 1 else ""))
        return True

    def _readline(self, deadline):
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.timed_out = True
                self.note("S? no reply within %.0fs" % REPLY_TIMEOUT)
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except (OSError, ssl.SSLError) as e:
                self.cut = "read failed with %s" % errname(e)
                self.note("S! %s" % self.cut)
                return None
            if not chunk:
                self.cut = "read: EOF"
                self.note("S! EOF")
                return None
            self.buf += chunk
        i = self.buf.index(b"\n")
        raw, self.buf = self.buf[:i], self.buf[i + 1:]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        return raw.decode("utf-8", "replace")

    def reply(self, timeout=REPLY_TIMEOUT, garbage_is_reply=False):
        """(code, [lines]) of one reply, or None (cut, EOF or timeout).  Lines that are not
        replies are skipped (Postfix without PIPELINING), or make a reply of code 0."""
        if self.cut:
            return None
        deadline = time.monotonic() + timeout
        lines = []
        while True:
            line = self._readline(deadline)
            if line is None:
                return None
            m = re.match(r"(\d{3})([ -]|$)", line)
            if not m:
                self.note("S: (not a reply line) %s" % short(line))
                if garbage_is_reply:
                    return 0, [line]
                continue
            lines.append(line)
            if m.group(2) != "-":
                if len(lines) > 3:
                    self.note("S: %s ... %s (%d lines)" % (short(lines[0], 40), short(line, 40), len(lines)))
                else:
                    self.note("S: %s" % " | ".join(short(x, 80) for x in lines))
                return int(m.group(1)), lines

    def cmd(self, line, **kw):
        data = line if isinstance(line, bytes) else line.encode("utf-8")
        if not self.write(data + CRLF):
            return None
        return self.reply(**kw)

    def expect(self, what, r, *codes):
        """Note a problem unless reply r has one of the codes (ints or text prefixes)."""
        text = "\n".join(r[1]) if r else ""
        ok = r is not None and any((r[0] == c) if isinstance(c, int) else text.startswith(c) for c in codes)
        if not ok:
            self.cx.problem("%s:%d %s: got %s, expected %s" % (
                self.tag, self.local, what, self.describe(r), " or ".join(map(str, codes))))
        return ok

    def describe(self, r):
        if r is not None:
            return repr(r[1][-1][:100])
        return self.cut or ("no reply in %.0fs" % REPLY_TIMEOUT if self.timed_out else "nothing")

    def greet(self, **kw):
        r = self.reply(**kw)
        self.expect("greeting", r, 220)
        return r

    def ehlo(self, name=None):
        r = self.cmd("EHLO %s" % (name or self.cx.case.replace("_", "-") + ".client.test"))
        self.expect("EHLO", r, 250)
        return r

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Cx:
    """What a client case has: its name, the hosts, and what it found."""

    def __init__(self, case, hosts):
        self.case, self.hosts = case, hosts
        self.sessions, self.trace, self.problems, self.info = [], [], [], []
        self.delivered = []  # non-guaranteed messages that must have arrived: {host, local, marker, sender}
        self.chunks = []  # BDAT chunks that must have arrived untouched: {host, local, text}
        self.outcomes = []
        self.n = 0

    def problem(self, text):
        self.problems.append(text)

    def note_info(self, text):
        self.info.append(text)

    def session(self, key="plain", tag=None, greet=True, **kw):
        host = PLAIN_MX if key == "plain" else HOSTILE[key]
        s = Session(self, host, tag or key)
        if greet:
            s.greet(**kw)
        return s

    def seq(self):
        self.n += 1
        return self.n

    def g_rcpt(self):
        return "g-%s-%d@dest.example" % (self.case, self.seq())

    def n_marker(self):
        return "N-BODY-%s-%d" % (self.case, self.seq())

    def pause(self, s, tag):
        """Let the runner look at the live flow (tlsguardctl flows) before going on."""
        print("PAUSE %s %s %d" % (tag, s.host, s.local), flush=True)
        sys.stdin.readline()


def held(cx, s, mail, what=None, pieces=None, gap=0.0, pipelined=False, finish="quit", codes=HELD_MAIL):
    """Write a guaranteed MAIL line (bytes, with its line end) as told; then expect tlsguard's
    replies in order, or the connection cut before any reply to it.  Returns 'held', 'cut' or
    'passed'."""
    what = what or short(mail.strip(), 60)
    rcpt = cx.g_rcpt()
    data = mail + (b"RCPT TO:<%s>\r\nDATA\r\n" % rcpt.encode() if pipelined else b"")
    ok = s.write(data, pieces=pieces, gap=gap)
    r = s.reply() if ok else None
    if r is None:
        if s.cut:
            cx.outcomes.append("%s: cut before any reply (%s)" % (what, s.cut))
            return "cut"
        cx.problem("%s: neither held nor cut: %s" % (what, s.describe(r)))
        return "timeout"
    text = r[1][-1]
    if not any(text.startswith(c) for c in codes):
        cx.problem("%s: PASSED? MAIL answered %r, not by tlsguard (%s)" % (what, text[:100], " or ".join(codes)))
        cx.outcomes.append("%s: PASSED (%r)" % (what, text[:60]))
        return "passed"
    steps = [] if pipelined else [("RCPT TO:<%s>" % rcpt, "RCPT"), ("DATA", "DATA")]
    if pipelined:
        for name in ("RCPT", "DATA"):
            s.expect("%s: %s after held MAIL" % (what, name), s.reply(), 503)
    for line, name in steps:
        s.expect("%s: %s after held MAIL" % (what, name), s.cmd(line), 503)
    if finish in ("rset", "quit"):
        s.expect("%s: RSET after held MAIL" % what, s.cmd("RSET"), 250)
    if finish == "quit":
        s.expect("%s: QUIT after held MAIL" % what, s.cmd("QUIT"), 221)
    cx.outcomes.append("%s: held (%s)" % (what, text[:40]))
    return "held"


def deliver(cx, s, sender=OTHER, mail=None, body=(), pipelined=False, what="deliver"):
    """A non-guaranteed message, delivered in full; noted for the MX-side check."""
    marker = cx.n_marker()
    rcpt = "n-%s-%d@dest.example" % (cx.case, cx.seq())
    mail = mail or "MAIL FROM:<%s>" % sender
    msg = ("Subject: %s\r\n\r\n" % marker).encode() + b"".join(
        (x if isinstance(x, bytes) else x.encode()) + CRLF for x in body) + b"end of message\r\n.\r\n"
    if pipelined:
        s.write(("%s\r\nRCPT TO:<%s>\r\nDATA\r\n" % (mail, rcpt)).encode("utf-8"))
        ok = (s.expect(what + ": MAIL", s.reply(), 250) and s.expect(what + ": RCPT", s.reply(), 250)
              and s.expect(what + ": DATA", s.reply(), 354))
    else:
        ok = (s.expect(what + ": MAIL", s.cmd(mail), 250)
              and s.expect(what + ": RCPT", s.cmd("RCPT TO:<%s>" % rcpt), 250)
              and s.expect(what + ": DATA", s.cmd("DATA"), 354))
    if ok:
        s.write(msg)
        ok = s.expect(what + ": end of data", s.reply(), 250)
    if ok:
        cx.delivered.append({"host": s.host, "local": s.local, "marker": marker, "sender": sender})
        cx.outcomes.append("%s from <%s>: delivered" % (what, sender))
    return ok


def finish_delivery(cx, s, sender, what):
    """RCPT, DATA and a body after a MAIL the host accepted; noted for the MX-side check."""
    marker = cx.n_marker()
    rcpt = "n-%s-%d@dest.example" % (cx.case, cx.seq())
    if s.expect(what + ": RCPT", s.cmd("RCPT TO:<%s>" % rcpt), 250) and s.expect(what + ": DATA", s.cmd("DATA"), 354):
        s.write(("Subject: %s\r\n\r\nend of message\r\n.\r\n" % marker).encode())
        if s.expect(what + ": end of data", s.reply(), 250):
            cx.delivered.append({"host": s.host, "local": s.local, "marker": marker, "sender": sender})
            cx.outcomes.append("%s from <%s>: delivered" % (what, sender))


def fresh(cx, key="plain", tag=None):
    s = cx.session(key, tag)
    s.ehlo()
    return s


# ---------------------------------------------------------------- framing cases

def c_one_byte_per_write(cx):
    s = cx.session(tag="1byte-all")
    s.write(b"EHLO one-byte.client.test\r\n", pieces=[1])
    s.expect("EHLO", s.reply(), 250)
    held(cx, s, b"MAIL FROM:<alice@example.org>\r\n", "MAIL one byte per write", pieces=[1])
    s = fresh(cx, tag="1byte-pipelined")
    held(cx, s, b"MAIL FROM:<alice@example.org>\r\n", "MAIL+RCPT+DATA pipelined, one byte per write",
         pieces=[1], pipelined=True)
    s = fresh(cx, tag="1byte-gap")
    held(cx, s, b"MAIL FROM:<alice@example.org>\r\n", "MAIL one byte per write, 20 ms apart", pieces=[1], gap=0.02)
    s = fresh(cx, tag="1byte-1000")
    line = b"MAIL FROM:<alice@example.org> BODY=8BITMIME ENVID=" + b"x" * 900 + CRLF  # < 1024 bytes
    held(cx, s, line, "MAIL line of %d bytes, one byte per write" % len(line), pieces=[1])


def c_crlf_split(cx):
    s = cx.session(tag="crlf")
    s.write(b"EHLO crlf.client.test\r")
    s.write(b"\n")
    s.expect("EHLO split at CR|LF", s.reply(), 250)
    s.write(b"MAIL FROM:<alice@example.org>\r")
    time.sleep(0.2)
    held(cx, s, b"\n", "MAIL ...\\r | 200 ms | \\n")
    s = fresh(cx, tag="crlf-noop")
    s.write(b"NOOP\r\nMAIL FROM:<alice@example.org>\r")  # NOOP passes; the MAIL line waits for its LF
    s.expect("NOOP before the split MAIL", s.reply(), 250)
    held(cx, s, b"\n", "NOOP\\r\\nMAIL ...\\r | NOOP reply | \\n")
    s = fresh(cx, tag="crlf-noop-bob")  # the same split for a sender that is not guaranteed
    s.write(b"NOOP\r\nMAIL FROM:<bob@example.org>\r")
    s.expect("NOOP before the split MAIL", s.reply(), 250)
    s.write(b"\n")
    r = s.reply()
    if s.expect("non-guaranteed MAIL ...\\r | NOOP reply | \\n: the host's reply", r, 250):
        finish_delivery(cx, s, OTHER, "bob's split MAIL")
    else:
        cx.outcomes.append("non-guaranteed NOOP\\r\\nMAIL ...\\r | NOOP reply | \\n: %s" % s.describe(r))
    s = fresh(cx, tag="bare-lf")
    held(cx, s, b"MAIL FROM:<alice@example.org>\n", "MAIL ended by a bare LF")
    s = fresh(cx, tag="cr-lf-writes")
    held(cx, s, b"MAIL FROM:<alice@example.org>\r\n", "MAIL | > | \\r | \\n", pieces=[28, 1, 1, 1])


def c_verb_case(cx):
    held_each(cx, "case", ("mail from:<alice@example.org>", "MaIl FrOm:<alice@example.org>",
                 "mAIL fROM:<ALICE@EXAMPLE.ORG>", "Mail From:<Alice+Tag@Example.Org>"))


def c_from_spaces(cx):
    held_each(cx, "spaces", ("MAIL FROM: <alice@example.org>", "MAIL FROM:   <alice@example.org>",
                 "MAIL FROM :<alice@example.org>", "MAIL  FROM:<alice@example.org>",
                 "MAIL\tFROM:\t<alice@example.org>", "MAIL FROM:alice@example.org",
                 "MAIL FROM: alice@example.org SIZE=100"))


def c_esmtp_params(cx):
    held_each(cx, "params", ("MAIL FROM:<alice@example.org> SIZE=1234 BODY=8BITMIME SMTPUTF8",
                 "MAIL FROM:<alice@example.org> RET=HDRS ENVID=abc+2Bdef",
                 "MAIL FROM:<alice+news@example.org> BODY=8BITMIME SIZE=99",
                 "MAIL FROM:<x@guarded.example> AUTH=<> SIZE=1"))


def expect_cut(cx, s, data, what):
    """Write data; the flow must be cut (failed closed) before any reply."""
    s.write(data)
    r = s.reply()
    if r is None and s.cut:
        cx.outcomes.append("%s: cut (%s)" % (what, s.cut))
    else:
        cx.problem("%s: not cut: %s" % (what, s.describe(r)))


def held_each(cx, tag, lines, codes=HELD_MAIL):
    """Each MAIL line on a fresh connection: held (the replies ``codes``)."""
    for line in lines:
        held(cx, fresh(cx, tag=tag), line.encode("utf-8") + CRLF, codes=codes)


def c_quoted_local_domain_entry(cx):
    held_each(cx, "quoted-dom", ('MAIL FROM:<"a b"@guarded.example>',
                                 'MAIL FROM:<"a\\"b"@guarded.example> SIZE=10',
                                 'MAIL FROM:<"alice@x"@guarded.example>'), codes=HELD_BAD)


def c_quoted_local_address_entry(cx):
    # RFC 5321 4.1.2 / RFC 5322 3.2.4: "alice" and alice are the same local part.
    held_each(cx, "quoted-addr", ('MAIL FROM:<"alice"@example.org>', 'MAIL FROM:<"al\\ice"@example.org>',
                 'MAIL FROM:<"ALICE"@example.org> BODY=8BITMIME'), codes=HELD_BAD)


def c_source_route(cx):
    held_each(cx, "route", ("MAIL FROM:<@relay.example:alice@example.org>",
                 "MAIL FROM:<@r1.example,@r2.example:alice@example.org>",
                 'MAIL FROM:<@relay.example:"a b"@guarded.example>',
                 "MAIL FROM:<@relay.example:carol@guarded.example> SIZE=5"), codes=HELD_BAD)


def c_smtputf8(cx):
    held_each(cx, "utf8", ("MAIL FROM:<jörg@guarded.example> SMTPUTF8", "MAIL FROM:<ユーザー@guarded.example> SMTPUTF8",
                 "MAIL FROM:<Jörg@GUARDED.example> SMTPUTF8 BODY=8BITMIME"))


def c_rset_then_guaranteed(cx):
    s = fresh(cx, tag="rset")
    if deliver(cx, s, what="first message (bob)"):
        s.expect("RSET", s.cmd("RSET"), 250)
        held(cx, s, b"MAIL FROM:<alice@example.org>\r\n", "guaranteed MAIL after delivery and RSET")


def c_second_message(cx):
    s = fresh(cx, tag="second")
    if deliver(cx, s, what="first message (bob)"):
        held(cx, s, b"MAIL FROM:<alice@example.org>\r\n", "second message on the connection, guaranteed")
    s = fresh(cx, tag="second-pipelined")
    if deliver(cx, s, what="first message (bob, pipelined)", pipelined=True):
        held(cx, s, b"MAIL FROM:<alice@example.org>\r\n", "second message, pipelined MAIL/RCPT/DATA",
             pipelined=True)


def c_held_then_other(cx):
    s = fresh(cx, tag="handback")
    if held(cx, s, b"MAIL FROM:<alice@example.org>\r\n", "first message, guaranteed", finish="rset") == "held":
        if deliver(cx, s, what="then bob on the same connection (handed back)"):
            held(cx, s, b"MAIL FROM:<carol@guarded.example>\r\n", "then a guaranteed one again")


def c_bdat_chunking_host(cx):
    """A host that implements BDAT: chunk bytes are message content, passed untouched."""
    s = cx.session("chunking", tag="bdat")
    s.ehlo()
    marker = cx.n_marker()
    body = ("Subject: %s\r\n\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<c-%s@dest.example>\r\nDATA\r\n"
            "mail from:<carol@guarded.example>\r\n" % (marker, cx.case)).encode()
    rcpt = "n-%s-%d@dest.example" % (cx.case, cx.seq())
    if s.expect("MAIL", s.cmd("MAIL FROM:<%s>" % OTHER), 250) and s.expect("RCPT", s.cmd("RCPT TO:<%s>" % rcpt), 250):
        cut = body.index(b"MAIL FROM") + 7  # the first chunk ends inside "MAIL FROM"
        c1, c2 = body[:cut], body[cut:]
        s.write(b"BDAT %d\r\n" % len(c1) + c1)
        s.expect("BDAT chunk 1", s.reply(), 250)
        s.write(b"BDAT %d LAST\r\n" % len(c2) + c2, pieces=[5, 1, 9])
        if s.expect("BDAT chunk 2 LAST", s.reply(), 250):
            cx.chunks.append({"host": s.host, "local": s.local, "text": c1.decode()})
            cx.chunks.append({"host": s.host, "local": s.local, "text": c2.decode()})
            cx.outcomes.append("BDAT message from <%s> with MAIL FROM lines in its chunks: accepted" % OTHER)
    held(cx, s, b"MAIL FROM:<alice@example.org>\r\n", "guaranteed MAIL after the BDAT message")


def c_bdat_no_chunking_host(cx):
    """The plain test MX does not know BDAT (502): what becomes of the chunk?"""
    s = fresh(cx, tag="bdat-502")
    rcpt = "n-%s-%d@dest.example" % (cx.case, cx.seq())
    chunk = ("RSET\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<c-%s@dest.example>\r\nDATA\r\n"
             "Subject: C-BODY-%s\r\n\r\nchunk text\r\n.\r\n" % (cx.case, cx.case)).encode()
    if s.expect("MAIL", s.cmd("MAIL FROM:<%s>" % OTHER), 250) and s.expect("RCPT", s.cmd("RCPT TO:<%s>" % rcpt), 250):
        s.write(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
        got = []
        for _ in range(7):  # BDAT, then each chunk line the host may take for a command
            r = s.reply(timeout=1.0)
            if r is None:
                break
            got.append(r[1][-1][:40])
        cx.note_info("host replies after BDAT+chunk: %s" % (got or s.describe(None)))
        s.timed_out = False
    s2 = fresh(cx, tag="bdat-502-then-g")
    if s2.expect("MAIL", s2.cmd("MAIL FROM:<%s>" % OTHER), 250) and s2.expect(
            "RCPT", s2.cmd("RCPT TO:<n-%s-%d@dest.example>" % (cx.case, cx.seq())), 250):
        # Servers differ on where such a chunk ends (the host refuses BDAT
        # and reads the chunk as commands; another might frame it): tlsguard
        # cannot count what follows, and fails the flow closed.
        expect_cut(cx, s2, b"BDAT 12 LAST\r\nhello world\n", "BDAT to a host that did not offer CHUNKING")


def c_long_lines(cx):
    """A MAIL line is judged by its address: a long line (parameters) or a long address is
    the sender it names, held when guaranteed, delivered when not. An address that ends past
    2048 bytes (what Postfix smtpd reads of a line) cannot be judged: held with 451 4.5.4 (the
    mail waits), never passed, never refused for good."""
    s = fresh(cx, tag="long-mail")
    line = b"MAIL FROM:<alice@example.org> X-PAD=" + b"x" * 1100 + CRLF
    held(cx, s, line, "guaranteed MAIL line of %d bytes" % len(line))
    s = fresh(cx, tag="long-mail-pieces")
    held(cx, s, line, "same, in writes of 100 bytes", pieces=[100])
    s = fresh(cx, tag="long-mail-4k")
    line4 = b"MAIL FROM:<carol@guarded.example> X-PAD=" + b"x" * 4500 + CRLF
    held(cx, s, line4, "guaranteed MAIL line of %d bytes, in writes of 700" % len(line4), pieces=[700])
    s = fresh(cx, tag="long-mail-2k-ext")
    line2 = b"MAIL FROM:<" + b"a" * 300 + b"@guarded.example>\r\n"
    held(cx, s, line2, "guaranteed address of 317 bytes (> 256)")
    s = fresh(cx, tag="long-mail-unread")
    line3 = b"MAIL FROM:<" + b"a" * 2100 + b"@example.org>\r\n"
    held(cx, s, line3, "address ending past byte 2048 (%d bytes)" % (len(line3) - 2), codes=HELD_UNREAD)
    s = fresh(cx, tag="long-bob")
    deliver(cx, s, mail="MAIL FROM:<bob@example.org> X-PAD=" + "x" * 1100,
            what="bob with a MAIL line of 1138 bytes")
    s = fresh(cx, tag="long-bob-addr")
    deliver(cx, s, sender="b" * 300 + "@example.org", what="an address of 312 bytes, not guaranteed")
    s = fresh(cx, tag="long-bob-pieces")
    bob4 = b"MAIL FROM:<bob@example.org> X-PAD=" + b"y" * 4500
    if s.write(bob4 + CRLF, pieces=[700]):
        if s.expect("bob with a MAIL line of %d bytes, in writes of 700" % (len(bob4) + 2), s.reply(), 250):
            finish_delivery(cx, s, OTHER, "bob with a MAIL line of %d bytes" % (len(bob4) + 2))
    s = fresh(cx, tag="long-noop")
    noop = b"NOOP " + b"y" * 1500
    r = s.cmd(noop)
    if s.expect("NOOP line of %d bytes (must pass)" % (len(noop) + 2), r, 250):
        cx.outcomes.append("NOOP line of %d bytes: passed, host answered 250" % (len(noop) + 2))
        cx.chunks.append({"host": s.host, "local": s.local, "line": noop.decode()})
    long_unknown = b"XLONG " + b"z" * 3000
    if s.expect("unknown verb line of %d bytes (must pass)" % (len(long_unknown) + 2), s.cmd(long_unknown), 502):
        cx.chunks.append({"host": s.host, "local": s.local, "line": long_unknown.decode()})
    deliver(cx, s, what="bob with a 1500-byte header line", body=["X-Long: " + "h" * 1500])


GARBAGE_SEED = 7


def garbage(n):
    rnd = random.Random(GARBAGE_SEED)
    out = bytes(rnd.randrange(256) for _ in range(n))
    return out.replace(b"\n", b"\xfe")  # no line ends inside: one line


def garbage_then_held(cx, tag, blob, what):
    """Garbage lines, then a guaranteed MAIL. A garbage line with control bytes where a verb
    could be is one tlsguard cannot vouch for: it may be answered by the host (500/502), held
    by tlsguard (451 4.5.4, then tlsguard answers the session), or the connection cut before
    any byte of it leaves. Whichever: the guaranteed MAIL after it never reaches the MX."""
    s = cx.session(tag=tag)
    s.write(blob)
    by_host = True
    for i in range(blob.count(b"\n")):
        r = s.reply()
        if r is None:
            cx.note_info("%s: cut at garbage line %d (%s)" % (what, i + 1, s.describe(r)))
            return
        if r[0] == 451:
            by_host = False
        elif not (by_host and r[0] in (500, 502)) and not (not by_host and r[0] in (451, 502, 503)):
            s.expect("reply to garbage line %d" % (i + 1), r, 502, 500, 451)
    if by_host:
        s.ehlo()
    cx.note_info("%s: garbage answered by %s" % (what, "the host" if by_host else "tlsguard (held)"))
    held(cx, s, b"MAIL FROM:<alice@example.org>\r\n", what)


def c_garbage_first(cx):
    garbage_then_held(cx, "garbage", garbage(300) + CRLF, "guaranteed MAIL after 300 bytes of binary garbage")
    g = garbage(200)
    blob = g[:50] + b"\n" + g[50:120] + b"\r\n" + b"\x00\x00\x00\r\n" + g[120:] + CRLF
    garbage_then_held(cx, "garbage-lines", blob, "guaranteed MAIL after 4 garbage lines")
    hello = bytes.fromhex("160301020001" + "0001fc0303") + garbage(120)
    garbage_then_held(cx, "tls-looking", hello + CRLF, "guaranteed MAIL after a ClientHello-looking line")


def c_leading_whitespace(cx):
    for line in (b"  MAIL FROM:<alice@example.org>", b"\tMAIL FROM:<alice@example.org>",
                 b" \t mail from:<carol@guarded.example>"):
        s = fresh(cx, tag="lead-ws")
        held(cx, s, line + CRLF)


def c_pipelined_behind_rset(cx):
    for lead, name in ((b"RSET\r\n", "RSET"), (b"NOOP\r\n", "NOOP")):
        s = fresh(cx, tag="behind-" + name.lower())
        if name == "RSET" and not deliver(cx, s, what="first message (bob)"):
            continue
        data = lead + b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<%s>\r\nDATA\r\n" % cx.g_rcpt().encode()
        behind(cx, s, data, "MAIL pipelined in one write behind %s" % name)
    s = cx.session(tag="behind-ehlo")
    behind(cx, s, b"EHLO behind.client.test\r\nMAIL FROM:<alice@example.org>\r\n", "MAIL pipelined behind EHLO")


def behind(cx, s, data, what):
    """Expect the connection cut: the host still owes a reply, so tlsguard cannot answer."""
    s.write(data)
    got = []
    while True:
        r = s.reply()
        if r is None:
            break
        got.append(r[1][-1][:50])
    if s.cut and len(got) <= 1 and not any(g.startswith("250 2.1.0") for g in got):
        cx.outcomes.append("%s: cut (%s)%s" % (what, s.cut, ", after %r" % got if got else ""))
    else:
        cx.problem("%s: expected the connection cut; got replies %s, %s" % (what, got, s.describe(None)))


def c_data_body_tracking(cx):
    s = fresh(cx, tag="body")
    deliver(cx, s, what="bob whose body has MAIL FROM lines",
            body=["MAIL FROM:<alice@example.org>", "mail from:<carol@guarded.example>", "..MAIL FROM:<a@x>"])
    # A dot after a bare CR is text to every server: the message is delivered whole, and
    # the MAIL line after it is body text (not a command of a guaranteed sender).
    s = fresh(cx, tag="body-bare-cr-dot")
    deliver(cx, s, what="bob whose body has \\r.\\r\\n then MAIL FROM of a guaranteed sender",
            body=[b"text\r.", "MAIL FROM:<alice@example.org>", "RCPT TO:<g-x@dest.example>"])
    held(cx, s, b"MAIL FROM:<alice@example.org>\r\n", "guaranteed MAIL after that message")
    s = fresh(cx, tag="body-end-pipelined")
    rcpt = "n-%s-%d@dest.example" % (cx.case, cx.seq())
    if s.expect("MAIL", s.cmd("MAIL FROM:<%s>" % OTHER), 250) and s.expect(
            "RCPT", s.cmd("RCPT TO:<%s>" % rcpt), 250) and s.expect("DATA", s.cmd("DATA"), 354):
        behind(cx, s, b"Subject: x\r\n\r\nbody\r\n.\r\nMAIL FROM:<alice@example.org>\r\n",
               "MAIL in the same write as the end of a DATA body")
    # Writes larger than one window of the kernel's body scan (4096 bytes;
    # a write is read window after window in one run): command-looking
    # lines that straddle the windows' edges are message text, and a body
    # end in a later window, or on a window's very edge, is found there.
    s = fresh(cx, tag="body-windows")
    deliver(cx, s, what="bob whose 12 KiB body, one write, is MAIL FROM lines across 4096 and 8192",
            body=["MAIL FROM:<alice@example.org>"] * 400)
    held(cx, s, b"MAIL FROM:<alice@example.org>\r\n", "guaranteed MAIL after that message")
    for size, what in ((10000, "in the third window"), (8192, "on the second window's last byte")):
        s = fresh(cx, tag="body-end-window")
        if s.expect("MAIL", s.cmd("MAIL FROM:<%s>" % OTHER), 250) and s.expect(
                "RCPT", s.cmd("RCPT TO:<n-%s-%d@dest.example>" % (cx.case, cx.seq())), 250) and s.expect(
                "DATA", s.cmd("DATA"), 354):
            head, tail = b"Subject: x\r\n\r\n", b"\r\n.\r\n"
            filler = b"".join(b"%-62d\r\n" % i for i in range(size // 64 + 1))
            data = head + filler[:size - len(head) - len(tail)] + tail
            assert len(data) == size
            behind(cx, s, data + b"MAIL FROM:<alice@example.org>\r\n",
                   "MAIL in the same write as a %d-byte DATA body ending %s" % (size, what))
    s = fresh(cx, tag="body-bare-lf-dot")
    marker = cx.n_marker()
    if s.expect("MAIL", s.cmd("MAIL FROM:<%s>" % OTHER), 250) and s.expect(
            "RCPT", s.cmd("RCPT TO:<n-%s-%d@dest.example>" % (cx.case, cx.seq())), 250) and s.expect(
            "DATA", s.cmd("DATA"), 354):
        # "." after a bare LF ends the body for some servers, not for others:
        # tlsguard cannot tell commands from message after it, and fails the
        # flow closed (the MTA defers; Postfix's client never writes this).
        expect_cut(cx, s, ("Subject: %s\n\nbare LF lines\n.\n" % marker).encode(),
                   "end of data by a bare-LF dot line (servers differ)")


def held_or_cut(cx, s, what):
    """The reply to a guaranteed MAIL just written: 550 5.7.10, or the flow cut."""
    r = s.reply()
    if r is None and s.cut:
        cx.outcomes.append("%s: cut (%s)" % (what, s.cut))
    elif s.expect(what, r, "550 5.7.10"):
        cx.outcomes.append("%s: held" % what)


def c_writev_sendfile(cx):
    s = fresh(cx, tag="writev")
    line = b"MAIL FROM:<alice@example.org>\r\n"
    try:
        n = s.sock.sendmsg([line[i:i + 1] for i in range(len(line))])
        s.note("C: sendmsg of %d one-byte iovecs: %d" % (len(line), n))
        held_or_cut(cx, s, "writev MAIL")
    except OSError as e:
        cx.outcomes.append("writev MAIL: write failed (%s)" % errname(e))
    s = fresh(cx, tag="sendfile")
    path = "/tmp/tlsguard-framing-%d.mail" % os.getpid()
    with open(path, "wb") as f:
        f.write(line)
    try:
        with open(path, "rb") as f:
            try:
                n = os.sendfile(s.sock.fileno(), f.fileno(), 0, len(line))
                s.note("C: sendfile %d bytes" % n)
                held_or_cut(cx, s, "sendfile MAIL")
            except OSError as e:
                cx.outcomes.append("sendfile MAIL: write failed (%s)" % errname(e))
    finally:
        os.unlink(path)


# ---------------------------------------------------------------- hostile hosts

def h_ehlo_odd(cx, key, offered):
    s = cx.session(key, tag=key)
    r = s.ehlo()
    if r:
        n = len(r[1])
        size = sum(len(x) + 2 for x in r[1])
        cx.outcomes.append("EHLO reply: %d lines, %d bytes" % (n, size))
    r = s.cmd("STARTTLS")
    s.expect("STARTTLS (the host refuses it or does not know it)", r, 454, 502)
    cx.pause(s, "plain-starttls-%s" % ("offered" if offered else "-"))
    held(cx, s, b"MAIL FROM:<alice@example.org>\r\n", "guaranteed MAIL after STARTTLS %s" % (
        "refused" if r and r[0] == 454 else "unknown"))


def c_hostile_ehlo_lower(cx):
    h_ehlo_odd(cx, "lower", True)


def c_hostile_ehlo_last(cx):
    h_ehlo_odd(cx, "last", True)


def c_hostile_ehlo_alone(cx):
    h_ehlo_odd(cx, "alone", True)


def c_hostile_ehlo_absent(cx):
    h_ehlo_odd(cx, "absent", False)


def c_hostile_ehlo_one_segment(cx):
    h_ehlo_odd(cx, "big-refuse", True)


def c_hostile_pre_greeting(cx):
    s = cx.session("pregreet", tag="pregreet")
    s.ehlo()
    held(cx, s, b"MAIL FROM:<alice@example.org>\r\n", "guaranteed MAIL after a host that spoke first")


def client_ctx():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def bio_handshake(s, ctx):
    """A TLS handshake over the raw socket through memory BIOs, so that the socket is still
    ours (plaintext) when it fails.  Returns (ok, text)."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out)
    if s.buf:
        inc.write(s.buf)
        s.buf = b""
    deadline = time.monotonic() + 5
    while True:
        try:
            obj.do_handshake()
            data = out.read()
            if data:
                s.sock.sendall(data)
            return True, obj.version()
        except ssl.SSLWantReadError:
            data = out.read()
            if data:
                s.sock.sendall(data)
            s.sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                got = s.sock.recv(65536)
            except TimeoutError:
                return False, "timeout"
            if not got:
                return False, "EOF"
            inc.write(got)
        except ssl.SSLError as e:
            data = out.read()
            if data:  # the client's alert
                try:
                    s.sock.sendall(data)
                except OSError:
                    pass
            return False, "%s (%s)" % (e.reason or e, type(e).__name__)


def h_serverhello(cx, key):
    s = cx.session(key, tag=key)
    s.ehlo()
    if not s.expect("STARTTLS", s.cmd("STARTTLS"), 220):
        return
    ok, text = bio_handshake(s, client_ctx())
    s.note("TLS handshake: %s" % ("negotiated %s" % text if ok else "failed: %s" % text))
    if ok:
        cx.problem("the client's handshake did not fail: %s" % text)
        return
    cx.outcomes.append("client handshake failed: %s" % text)
    cx.pause(s, "after-failed-handshake")
    s.expect("EHLO in plaintext after the failed handshake", s.cmd("EHLO after-tls.client.test"), 250)
    held(cx, s, b"MAIL FROM:<alice@example.org>\r\n", "guaranteed MAIL in plaintext after the failed handshake")


def c_hostile_tls_leftover(cx):
    """STARTTLS accepted, then a fatal alert (the client's handshake fails) and, a moment later,
    the replies of a whole transaction in plaintext, which the client's TLS library never reads;
    the client goes on in plaintext on the same connection: EHLO, then a guaranteed MAIL."""
    s = cx.session("tls-leftover", tag="leftover")
    s.ehlo()
    if not s.expect("STARTTLS", s.cmd("STARTTLS"), 220):
        return
    ok, text = bio_handshake(s, client_ctx())
    if ok:
        cx.problem("the client's handshake did not fail: %s" % text)
        return
    cx.outcomes.append("client handshake failed: %s" % text)
    time.sleep(0.3)  # the host's bytes after the alert are queued, unread
    s.expect("EHLO in plaintext after the failed handshake", s.cmd("EHLO after-tls.client.test"), 250)
    time.sleep(0.3)  # the host's own reply to that EHLO arrives (and is counted) meanwhile
    held(cx, s, b"MAIL FROM:<alice@example.org>\r\n", "guaranteed MAIL behind bytes the TLS library left unread",
         pipelined=True)


def c_hostile_serverhello_bad_ext(cx):
    h_serverhello(cx, "sh-badext")


def c_hostile_serverhello_legacy13(cx):
    h_serverhello(cx, "sh-legacy13")


def c_hostile_serverhello_replay12(cx):
    h_serverhello(cx, "sh-replay12")


def c_hostile_serverhello_replay13(cx):
    h_serverhello(cx, "sh-replay13")


def weak_session(cx, key, tag):
    """A session to host key, STARTTLS and a TLS 1.0 handshake through Python's ssl (SSL_set_fd:
    the uprobes see it); None, with the problem noted, when that fails."""
    s = cx.session(key, tag=tag)
    s.ehlo()
    if not s.expect("STARTTLS", s.cmd("STARTTLS"), 220):
        return None
    ctx = client_ctx()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    try:
        s.sock.settimeout(5)
        s.sock = ctx.wrap_socket(s.sock)
    except (ssl.SSLError, OSError) as e:
        cx.problem("TLS 1.0 handshake failed: %s" % e)
        return None
    return s


class BioSsl:
    """OpenSSL through ctypes: a TLS 1.0 session on a socket (SSL_set_fd, SSL_connect: the uprobes
    tie it), written either with SSL_write or through an SSL BIO (BIO_f_ssl), whose BIO_write
    goes to the record layer without calling any function tlsguard probes."""

    def __init__(self, fd):
        import ctypes
        c = ctypes
        L = self.lib = c.CDLL("libssl.so.3", use_errno=True)
        for name, res, args in (
                ("TLS_client_method", c.c_void_p, []), ("SSL_CTX_new", c.c_void_p, [c.c_void_p]),
                ("SSL_CTX_ctrl", c.c_long, [c.c_void_p, c.c_int, c.c_long, c.c_void_p]),
                ("SSL_CTX_set_cipher_list", c.c_int, [c.c_void_p, c.c_char_p]),
                ("SSL_new", c.c_void_p, [c.c_void_p]), ("SSL_set_fd", c.c_int, [c.c_void_p, c.c_int]),
                ("SSL_connect", c.c_int, [c.c_void_p]),
                ("SSL_write", c.c_int, [c.c_void_p, c.c_char_p, c.c_int]),
                ("SSL_read", c.c_int, [c.c_void_p, c.c_void_p, c.c_int]),
                ("BIO_f_ssl", c.c_void_p, []), ("BIO_new", c.c_void_p, [c.c_void_p]),
                ("BIO_ctrl", c.c_long, [c.c_void_p, c.c_int, c.c_long, c.c_void_p]),
                ("BIO_write", c.c_int, [c.c_void_p, c.c_char_p, c.c_int])):
            getattr(L, name).restype = res
            getattr(L, name).argtypes = args
        self.ctx = L.SSL_CTX_new(L.TLS_client_method())
        L.SSL_CTX_ctrl(self.ctx, 123, 0x301, None)  # SSL_CTRL_SET_MIN_PROTO_VERSION, TLS1_VERSION
        L.SSL_CTX_ctrl(self.ctx, 124, 0x301, None)  # ..._MAX_...
        L.SSL_CTX_set_cipher_list(self.ctx, b"ALL:@SECLEVEL=0")
        self.ssl = L.SSL_new(self.ctx)
        L.SSL_set_fd(self.ssl, fd)
        self.ok = L.SSL_connect(self.ssl) == 1
        self.bio = L.BIO_new(L.BIO_f_ssl())
        L.BIO_ctrl(self.bio, 109, 0, self.ssl)  # BIO_set_ssl(bio, ssl, BIO_NOCLOSE)
        self.buf = b""

    def write(self, data, via_bio=False):
        if via_bio:
            return self.lib.BIO_write(self.bio, data, len(data)) == len(data)
        return self.lib.SSL_write(self.ssl, data, len(data)) == len(data)

    def reply(self):
        """(code, last line) of one reply, or None."""
        import ctypes
        b = ctypes.create_string_buffer(4096)
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                line = line.rstrip(b"\r").decode("utf-8", "replace")
                if len(line) >= 4 and line[:3].isdigit() and line[3] != "-":
                    return int(line[:3]), line
            n = self.lib.SSL_read(self.ssl, b, len(b))
            if n <= 0:
                return None
            self.buf += b.raw[:n]


def c_unprobed_tls_write(cx):
    """A TLS 1.0 session the uprobes tie (SSL_set_fd), EHLO through SSL_write, then a guaranteed
    MAIL written through an SSL BIO, which no probed function sees; then bob's message over TLS
    1.0 on a new session, through SSL_write."""
    s = cx.session("tls10", tag="bio")
    s.ehlo()
    if not s.expect("STARTTLS", s.cmd("STARTTLS"), 220):
        return
    s.sock.setblocking(True)  # OpenSSL reads and writes the descriptor itself
    t = BioSsl(s.sock.fileno())
    if not t.ok:
        cx.problem("TLS 1.0 handshake through ctypes failed")
        return
    s.note("TLS 1.0 through ctypes: EHLO by SSL_write")
    if not (t.write(b"EHLO bio.client.test\r\n") and (t.reply() or (0,))[0] == 250):
        cx.problem("EHLO inside TLS 1.0 (SSL_write) not answered 250")
        return
    ok = t.write(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<%s>\r\n" % cx.g_rcpt().encode(), via_bio=True)
    r = t.reply() if ok else None
    if r is None:
        cx.outcomes.append("guaranteed MAIL through an SSL BIO: cut (%s)" % ("read failed" if ok else "write failed"))
    else:
        cx.problem("guaranteed MAIL through an SSL BIO: answered %r by the host" % r[1][:80])
    s.close()
    w = weak_session(cx, "tls10", "bio-bob")
    if w is not None:
        w.expect("EHLO inside TLS", w.cmd("EHLO bob.client.test"), 250)
        deliver(cx, w, what="bob's message over TLS 1.0 (SSL_write)")


def h_weak(cx, key):
    s = weak_session(cx, key, key)
    if s is None:
        return
    s.note("TLS handshake: %s %s" % (s.sock.version(), s.sock.cipher()[0]))
    cx.outcomes.append("negotiated %s" % s.sock.version())
    s.expect("EHLO inside TLS", s.cmd("EHLO weak.client.test"), 250)
    cx.pause(s, "inside-weak-tls")
    held(cx, s, b"MAIL FROM:<alice@example.org>\r\n", "guaranteed MAIL inside TLS 1.0")


def c_hostile_weak_tls_control(cx):
    h_weak(cx, "tls10")


def c_hostile_weak_tls_big_ehlo(cx):
    h_weak(cx, "big-tls10")


def c_hostile_hello_request(cx):
    """A HelloRequest record before an honest TLS 1.0 ServerHello: the client's library skips it
    and completes TLS 1.0; tlsguard must still judge the session (weak or unreadable handshake)."""
    h_weak(cx, "hreq10")


def c_hostile_hello_request_other(cx):
    """As hostile_hello_request, with another sender: the uprobes judge by sender, so bob's
    message goes out over the TLS the client negotiated."""
    s = weak_session(cx, "hreq10", "hreq10-other")
    if s is None:
        return
    cx.outcomes.append("negotiated %s" % s.sock.version())
    s.expect("EHLO inside TLS", s.cmd("EHLO weak.client.test"), 250)
    deliver(cx, s, what="bob's message inside TLS 1.0 after a HelloRequest")


def c_hostile_data_3xx(cx):
    """The host answers DATA with 330, not 354; the client sends the message all the same (as
    Postfix and Exim do), with body lines that look like commands, among them a BDAT with a huge
    size (the host offers CHUNKING). Then, on the same connection, a guaranteed MAIL."""
    s = cx.session("data330", tag="data330")
    s.ehlo()
    marker = cx.n_marker()
    rcpt = "n-%s-%d@dest.example" % (cx.case, cx.seq())
    if not (s.expect("MAIL", s.cmd("MAIL FROM:<%s>" % OTHER), 250)
            and s.expect("RCPT", s.cmd("RCPT TO:<%s>" % rcpt), 250)
            and s.expect("DATA answered 330", s.cmd("DATA"), 330)):
        return
    s.write(("Subject: %s\r\n\r\nBDAT 999999999999999999\r\nMAIL FROM:<%s>\r\nend of message\r\n.\r\n"
             % (marker, G_ADDR)).encode())
    if not s.expect("end of data", s.reply(), 250):
        return
    cx.delivered.append({"host": s.host, "local": s.local, "marker": marker, "sender": OTHER})
    cx.outcomes.append("bob's message after a 330 to DATA: delivered")
    s.expect("RSET", s.cmd("RSET"), 250)
    held(cx, s, b"MAIL FROM:<alice@example.org>\r\n", "guaranteed MAIL after a message sent on a 330")


def c_hostile_reply_desync(cx):
    """A valid multi-line EHLO reply of > 4 KiB in one segment, then a 354 to the end of data."""
    s = cx.session("big-desync", tag="desync")
    s.ehlo()
    marker = cx.n_marker()
    rcpt = "n-%s-%d@dest.example" % (cx.case, cx.seq())
    s.write(("MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n" % (OTHER, rcpt)).encode())
    if s.expect("MAIL", s.reply(), 250) and s.expect("RCPT", s.reply(), 250) and s.expect("DATA", s.reply(), 354):
        s.write(("Subject: %s\r\n\r\nhello\r\n.\r\n" % marker).encode())
        r = s.reply()
        cx.outcomes.append("end of data of bob's message answered %s: the message failed" % s.describe(r))
        s.expect("RSET after the failed message", s.cmd("RSET"), 250)
        cx.pause(s, "before-guaranteed-mail")
        held(cx, s, b"MAIL FROM:<alice@example.org>\r\n", "guaranteed MAIL on the same connection")


def presend(cx, key):
    """Bob's message, then (the host sends replies unasked, ahead of the next transaction) a
    guaranteed MAIL pipelined with RCPT and DATA on the same connection, as Postfix writes them
    on a reused connection; then bob's message again on a new connection."""
    s = cx.session(key, tag=key)
    s.ehlo()
    if not deliver(cx, s, what="bob's message before the host's unasked replies"):
        return
    time.sleep(0.5)  # the unasked bytes come 0.1 s after the reply to the end of data
    held(cx, s, b"MAIL FROM:<alice@example.org>\r\n", "guaranteed MAIL behind replies sent unasked",
         pipelined=True)
    s.close()
    deliver(cx, fresh(cx, key, tag=key + "-again"), what="bob's message on a new connection")


def c_hostile_presend_partial(cx):
    presend(cx, "presend-part")


def c_hostile_presend_replies(cx):
    presend(cx, "presend-all")


def c_preagent_connection(cx):
    """A connection made (greeting, EHLO) before tlsguardd guards the cgroup; then, once it
    does, a guaranteed MAIL on it, as Postfix would on a cached connection."""
    s = cx.session("plain", tag="preagent")
    s.ehlo()
    cx.pause(s, "start-agent")  # the runner starts tlsguardd here
    held(cx, s, b"MAIL FROM:<alice@example.org>\r\n", "guaranteed MAIL on a connection older than the agent",
         pipelined=True)
    s.close()
    deliver(cx, fresh(cx, "plain", tag="after-agent"), what="bob's message on a new connection")


def tfo(cx, how):
    """Fast Open to the "tfo" MX, the SMTP lines in the SYN: refused at connect, or never read."""
    host = HOSTILE["tfo"]
    data = b"EHLO tfo.client.test\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<%s>\r\n" % cx.g_rcpt().encode()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(5)
    cx.sessions.append({"host": host, "local": None, "tag": "tfo-" + how})
    try:
        if how == "sendto":
            sock.sendto(data, socket.MSG_FASTOPEN, (host, 25))
        else:
            sock.setsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN_CONNECT, 1)
            sock.connect((host, 25))
            sock.send(data)
    except OSError as e:
        cx.trace.append("tfo-%s: refused with %s" % (how, errname(e)))
        cx.outcomes.append("Fast Open (%s): refused with %s" % (how, errname(e)))
        sock.close()
        return
    local = sock.getsockname()[1]
    cx.sessions[-1]["local"] = local
    got = b""
    try:
        while got.count(b"\n") < 4:
            chunk = sock.recv(4096)
            if not chunk:
                break
            got += chunk
    except OSError as e:
        got += ("(%s)" % errname(e)).encode()
    cx.trace.append("tfo-%s:%d S: %s" % (how, local, short(got, 200)))
    cx.outcomes.append("Fast Open (%s): connected, the host answered %s" % (how, short(got, 80)))
    sock.close()


def tfo_empty(cx):
    """Fast Open with no data (as Exim opens every connection: sendto(MSG_FASTOPEN |
    MSG_DONTWAIT) of nothing): it connects, and the connection is guarded like any other."""
    host = HOSTILE["tfo"]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.sendto(b"", socket.MSG_FASTOPEN | socket.MSG_DONTWAIT, (host, 25))
    except BlockingIOError:
        pass  # EINPROGRESS: no cookie yet, the handshake goes on
    except OSError as e:
        cx.problem("Fast Open without data refused: %s" % errname(e))
        sock.close()
        return
    if not select.select([], [sock], [], 5)[1] or sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
        cx.problem("Fast Open without data: no connection")
        sock.close()
        return
    sock.settimeout(5)
    s = Session(cx, host, "tfo-empty", sock=sock)
    s.greet()
    s.ehlo()
    held(cx, s, b"MAIL FROM:<alice@example.org>\r\n", "guaranteed MAIL after Fast Open without data",
         pipelined=True)


def c_tfo_sendto(cx):
    tfo(cx, "sendto")
    tfo_empty(cx)
    s = fresh(cx, "tfo", tag="tfo-plain")
    held(cx, s, b"MAIL FROM:<alice@example.org>\r\n", "guaranteed MAIL on an ordinary connection")
    deliver(cx, fresh(cx, "tfo", tag="tfo-bob"), what="bob's message without Fast Open")


def c_tfo_connect(cx):
    tfo(cx, "connect")
    deliver(cx, fresh(cx, "tfo", tag="tfo-bob"), what="bob's message without Fast Open")


def c_hostile_tls_then_plaintext(cx):
    """Real TLS 1.3, then the client ends TLS (close_notify) and goes on in plaintext."""
    s = cx.session("unwrap13", tag="unwrap")
    s.ehlo()
    if not s.expect("STARTTLS", s.cmd("STARTTLS"), 220):
        return
    try:
        s.sock.settimeout(5)
        s.sock = client_ctx().wrap_socket(s.sock)
    except (ssl.SSLError, OSError) as e:
        cx.problem("TLS handshake failed: %s" % e)
        return
    s.note("TLS handshake: %s" % s.sock.version())
    s.expect("EHLO inside TLS", s.cmd("EHLO inside.client.test"), 250)
    try:
        s.sock = s.sock.unwrap()
    except (ssl.SSLError, OSError) as e:
        cx.problem("TLS shutdown failed: %s" % e)
        return
    s.note("TLS ended (close_notify both ways): plaintext from here")
    cx.outcomes.append("TLS 1.3 negotiated, then ended by close_notify")
    cx.pause(s, "plaintext-after-tls")
    s.expect("EHLO in plaintext after TLS", s.cmd("EHLO plain-again.client.test"), 250)
    held(cx, s, b"MAIL FROM:<alice@example.org>\r\n", "guaranteed MAIL in plaintext after TLS ended")


def client_main(argv):
    import signal
    signal.alarm(int(CLIENT_TIMEOUT))
    case = argv[0]
    cx = Cx(case, HOSTILE)
    try:
        globals()["c_" + case](cx)
    except Exception:  # a bug in the client, reported as the case's problem
        cx.problem("client exception: %s" % traceback.format_exc().strip().splitlines()[-1])
        cx.trace.append(traceback.format_exc())
    print("RESULT " + json.dumps({k: getattr(cx, k) for k in (
        "sessions", "trace", "problems", "info", "delivered", "chunks", "outcomes")}), flush=True)
    return 0


# ====================================================================== runner

MAIL_RE = re.compile(r"^[ \t]*MAIL[ \t]+FROM[ \t]*:(.*)$", re.I | re.S)


def semantic_address(arg):
    """The reverse-path of a MAIL argument as a server reads it: unbracketed, source route
    dropped, quoted local part unquoted, +tag dropped, ASCII case folded."""
    a = arg.strip()
    if a.startswith("<"):
        out, q, esc = [], False, False
        for ch in a[1:]:
            if esc:
                out.append(ch)
                esc = False
            elif q and ch == "\\":
                out.append(ch)
                esc = True
            elif ch == '"':
                q = not q
                out.append(ch)
            elif ch == ">" and not q:
                break
            else:
                out.append(ch)
        a = "".join(out)
    else:
        a = a.split(None, 1)[0] if a else ""
    if a.startswith("@") and ":" in a:
        a = a.split(":", 1)[1]
    local, _, domain = a.rpartition("@")
    if len(local) >= 2 and local.startswith('"') and local.endswith('"'):
        local = re.sub(r"\\(.)", r"\1", local[1:-1])
    local = local.split("+", 1)[0]
    return "%s@%s" % (local.lower(), domain.lower())


def guaranteed(addr):
    return addr == G_ADDR or addr.rpartition("@")[2] == G_DOMAIN


def mx_view(conn):
    """[(kind, text, tls)] of what the MX received on a connection: kind ``cmd`` (a line read
    as a command), ``data`` (a DATA body line), ``chunk`` (a BDAT chunk); tls is the TLS
    version the bytes arrived under, or None.  Also returns the replies after each cmd."""
    out, tls, in_data, last_verb = [], None, False, ""
    for e in conn.snapshot():
        if e.kind == "tls":
            tls = e.data.split()[0]
        elif e.kind == "tls-end":
            tls = None
        elif e.kind == "reply":
            if e.data[:1] == "3" and last_verb == "DATA":  # any 3xx: the client sends the message
                in_data = True
            if out and out[-1][0] == "cmd" and out[-1][3] is None:
                out[-1][3] = e.data
        elif e.kind == "chunk":
            out.append(["chunk", e.data, tls, None])
        elif e.kind in ("line", "partial"):
            if in_data:
                if e.data == ".":
                    in_data = False
                    last_verb = "."
                else:
                    out.append(["data", e.data, tls, None])
            else:
                out.append(["cmd", e.data, tls, None])
                last_verb = e.data.strip().split(" ", 1)[0].upper()
    return out


def weak(tls):
    return tls is None or tls in ("TLSv1", "TLSv1.1", "SSLv3")


def mx_check(case, res, hosts):
    """Problems on the MX side, and a printable record of what each connection received."""
    problems, record = [], []
    ports = {(x["host"], x["local"]) for x in res["sessions"] if x["local"] is not None}
    conns = []
    for host, mx in hosts.items():
        for c in mx.connections():
            port = int(c.peer.rsplit(":", 1)[1])
            if (host, port) in ports:
                conns.append((host, port, c))
    g_marks = ("g-%s-" % case, "G-BODY-%s" % case)
    for host, port, c in conns:
        where = "%s<-:%d" % (host, port)
        view = mx_view(c)
        for kind, text, tls, reply in view:
            record.append("    MX %s %s%s %s%s" % (where, kind, " [%s]" % tls if tls else "", short(text, 100),
                                                   " -> %s" % reply[:50] if reply else ""))
            if not weak(tls):
                continue
            m = MAIL_RE.match(text) if kind == "cmd" else None
            if m and guaranteed(semantic_address(m.group(1))):
                problems.append("MX %s received a guaranteed MAIL as a command%s: %r, answered %r" % (
                    where, "" if tls is None else " inside %s" % tls, text[:90], reply))
            elif any(g in text for g in g_marks):
                problems.append("MX %s received %s %r of a guaranteed transaction" % (where, kind, text[:90]))
        closes = [e.data for e in c.snapshot() if e.kind == "close"]
        record.append("    MX %s closed: %s" % (where, closes[0] if closes else "(still open)"))
    for d in res["delivered"]:
        hits = [c for host, port, c in conns if host == d["host"] and port == d["local"] and any(
            d["marker"] in text for kind, text, _, _ in mx_view(c) if kind == "data")]
        if len(hits) != 1:
            problems.append("message %s from <%s> arrived %d times at %s, expected once" % (
                d["marker"], d["sender"], len(hits), d["host"]))
    for ch in res["chunks"]:
        views = [mx_view(c) for host, port, c in conns if host == ch["host"] and port == ch["local"]]
        if "text" in ch and not any(k == "chunk" and t == ch["text"] for v in views for k, t, _, _ in v):
            problems.append("BDAT chunk %r did not arrive untouched" % ch["text"][:40])
        if "line" in ch and not any(k == "cmd" and t == ch["line"] for v in views for k, t, _, _ in v):
            problems.append("long line %r... (%d bytes) did not arrive whole" % (ch["line"][:20], len(ch["line"])))
    return problems, record


def load_capture(name):
    path = os.path.join(REPO, "tests", "unit", "data", "serverhello_%s.hex" % name)
    with open(path) as f:
        return bytes.fromhex("".join(x.strip() for x in f if x.strip() and not x.startswith("#")))


SID_LEN = 43  # offset of the session id length in a one-record ServerHello flight (5 + 4 + 2 + 32)


def ext_block(b):
    return SID_LEN + 1 + b[SID_LEN] + 2 + 1


def put16(b, off, v):
    b[off:off + 2] = bytes([(v >> 8) & 0xff, v & 0xff])


def mutated_flights():
    """The flights of the ServerHello cases, made as tests/unit/test_tls.c makes them."""
    c12, c13 = load_capture("tls12"), load_capture("tls13")
    bad = bytearray(c13)
    e = ext_block(bad)
    put16(bad, e, (bad[e] << 8 | bad[e + 1]) + 1)  # extensions block longer than the message
    legacy = bytearray(c12)
    put16(legacy, 9, 0x0304)  # TLS 1.3 in legacy_version, no supported_versions
    return {"sh-badext": bytes(bad), "sh-legacy13": bytes(legacy), "sh-replay12": c12, "sh-replay13": c13}


def huge_ehlo(n, keyword=None, where="middle"):
    """A multi-line EHLO reply of n lines (~48 bytes each); keyword at the given place."""
    body = ["hostile.test"] + ["X-EXTENSION-%03d %s" % (i, "p" * 28) for i in range(n - 3)] + ["PIPELINING"]
    if keyword and where == "middle":
        body.insert(n // 2, keyword)
    body.append("8BITMIME")
    if keyword and where == "last":
        body.append(keyword)
    return ["250-" + x for x in body[:-1]] + ["250 " + body[-1]]


def ehlo_exact(cont_bytes=4096):
    """A multi-line EHLO reply whose continuation lines take exactly cont_bytes bytes (CRLF
    included), then one final line: a segment of it read only that far loses exactly the
    final line, the end of the reply."""
    lines, used, i = ["250-hostile.test", "250-PIPELINING"], 18 + 16, 0
    while cont_bytes - used > 120:
        line = "250-X-PAD-%03d %s" % (i, "p" * 40)
        lines.append(line)
        used += len(line) + 2
        i += 1
    last = cont_bytes - used - 2
    lines.append("250-X-LAST " + "q" * (last - 11))
    assert sum(len(x) + 2 for x in lines) == cont_bytes
    return lines + ["250 8BITMIME"]


def odd_cuts(lines, keyword):
    """Offsets to cut at: inside the keyword and between CR and LF around it, and at the end."""
    data = "".join(x + "\r\n" for x in lines)
    cuts = []
    i = data.find(keyword) if keyword else -1
    if i >= 0:
        cuts += [i + 3, i + 5, i + len(keyword) + 1, i - 2]
    cuts += [len(data) - 1, len(data) - 3]
    return cuts


def hostile_hosts():
    from hostile_mx import HostileMX
    from mx import TLS_ALERT_HANDSHAKE_FAILURE, TLSOptions
    split = dict(ehlo_split=[1, 7, 13, 64, 3, 97, 2, 41, 211], ehlo_gap=0.0005)
    low = huge_ehlo(200, "starttls")
    last = huge_ehlo(200, "STARTTLS", "last")
    absent = huge_ehlo(200)
    flights = mutated_flights()
    h = {
        "lower": HostileMX(HOSTILE["lower"], ehlo=low, ehlo_cuts=odd_cuts(low, "starttls"), starttls="refuse",
                           **split),
        "last": HostileMX(HOSTILE["last"], ehlo=last, ehlo_cuts=odd_cuts(last, "STARTTLS"), starttls="refuse",
                          **split),
        "alone": HostileMX(HOSTILE["alone"], ehlo=["250 STARTTLS"], starttls="refuse", ehlo_split=[2, 3, 1, 50],
                           ehlo_gap=0.01),
        "absent": HostileMX(HOSTILE["absent"], ehlo=absent, starttls="absent", **split),
        "pregreet": HostileMX(HOSTILE["pregreet"],
                              pre_greeting=b"\x00\xff\x16\x03\x01 not smtp\r\nHELLO? \x07\r\n\xde\xad",
                              greeting=b"\r\n220-hostile.test first line\r\n220 hostile.test ESMTP\r\n"),
        "big-tls10": HostileMX(HOSTILE["big-tls10"], ehlo=huge_ehlo(200, "STARTTLS", "last"), starttls="tls",
                               tls=TLSOptions(version="1.0")),
        "tls10": HostileMX(HOSTILE["tls10"], ehlo=["250-hostile.test", "250-PIPELINING", "250 STARTTLS"],
                           starttls="tls", tls=TLSOptions(version="1.0")),
        "hreq10": HostileMX(HOSTILE["hreq10"], ehlo=["250-hostile.test", "250-PIPELINING", "250 STARTTLS"],
                            starttls="tls", tls=TLSOptions(version="1.0"), tls_prefix=HELLO_REQUEST),
        "big-refuse": HostileMX(HOSTILE["big-refuse"], ehlo=huge_ehlo(200, "STARTTLS", "last"), starttls="refuse"),
        "big-desync": HostileMX(HOSTILE["big-desync"], ehlo=ehlo_exact(), replies={"DOT": ["354 3.0.0 not yet"]}),
        "data330": HostileMX(HOSTILE["data330"], ehlo=["250-hostile.test", "250-PIPELINING", "250-CHUNKING",
                                                       "250 8BITMIME"], chunking=True,
                             replies={"DATA": ["330 3.0.0 go on"]}),
        "unwrap13": HostileMX(HOSTILE["unwrap13"], ehlo=["250-hostile.test", "250 STARTTLS"], starttls="tls",
                              tls=TLSOptions(version="1.3"), unwrap=True),
        # The start of a reply, sent unasked: the MTA would read it with the agent's 550 as
        # "250 2.1.0 Ok550 5.7.10 ...", a 250 to the held MAIL.
        "presend-part": HostileMX(HOSTILE["presend-part"], presend=b"250 2.1.0 Ok"),
        # The replies of a whole transaction, sent unasked: a reused connection's next MAIL,
        # RCPT, DATA and body would be answered by them.
        "presend-all": HostileMX(HOSTILE["presend-all"],
                                 presend=b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go on\r\n250 2.0.0 Ok: queued\r\n"),
        "chunking": HostileMX(HOSTILE["chunking"], ehlo=["250-hostile.test", "250-PIPELINING", "250-CHUNKING",
                                                         "250 8BITMIME"], chunking=True),
    }
    h["tls-leftover"] = HostileMX(HOSTILE["tls-leftover"], ehlo=["250-hostile.test", "250 STARTTLS"],
                                  starttls="raw", flight=TLS_ALERT_HANDSHAKE_FAILURE,
                                  flight_after=b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go on\r\n"
                                               b"250 2.0.0 Ok: queued\r\n")
    for key in ("sh-badext", "sh-legacy13", "sh-replay12", "sh-replay13"):
        h[key] = HostileMX(HOSTILE[key], ehlo=["250-hostile.test", "250 STARTTLS"], starttls="raw",
                           flight=flights[key],
                           flight_after=TLS_ALERT_HANDSHAKE_FAILURE if "replay" in key else b"")
    return h


class Case:
    def __init__(self, name, hosts, pause_check=None, log_check=None, note=None, before_agent=False):
        self.name, self.hosts, self.pause_check, self.log_check, self.note = name, hosts, pause_check, log_check, note
        self.before_agent = before_agent  # runs first; its pause starts tlsguardd


def start_agent(daemon, tag, addr, local):
    """A pause check: tlsguardd starts now (it was not running)."""
    if daemon.proc is None:
        daemon.start()
    return [], ["tlsguardd started at %s" % tag]


def flows_row(daemon, addr):
    import subprocess
    r = subprocess.run(daemon.ctl + ["flows"], capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        return None, "tlsguardctl flows: exit %d: %s" % (r.returncode, (r.stderr or r.stdout).strip())
    rows = [x.split() for x in r.stdout.splitlines() if x.split()[:1] == ["%s[%s]:25" % (addr, addr)]]
    return rows, r.stdout


def want_flow(states, starttls=None):
    """A pause check: the live flow's STATE in states (and its STARTTLS column, if given)."""
    def check(daemon, tag, addr, local):
        rows, out = flows_row(daemon, addr)
        if rows is None:
            return [out], []
        if len(rows) != 1:
            return ["%d rows for %s in tlsguardctl flows at %s, expected 1:\n%s" % (len(rows), addr, tag, out)], []
        row = rows[0]
        p = []
        if row[1] not in states:
            p.append("tlsguardctl flows at %s: %s is %r (TLS %s), expected %s" % (
                tag, addr, row[1], row[2], " or ".join(states)))
        if starttls is not None and row[3] != starttls:
            p.append("tlsguardctl flows at %s: STARTTLS column %r, expected %r" % (tag, row[3], starttls))
        return p, ["flows at %s: %s" % (tag, " ".join(row[1:5]))]
    return check


def never_tls(log_lines, addr):
    """From tlsguardd -v: the flow's handshake events must not say TLS >= 1.2 (state 2)."""
    name = "[%s]:25" % addr
    bad = [x for x in log_lines if name in x and "handshake:" in x and re.search(r"state 2\b", x)]
    seen = [x.split("tlsguardd: ", 1)[-1] for x in log_lines if name in x and ("handshake:" in x or "negotiated" in x)]
    return (["tlsguardd -v: the flow was taken for TLS: %s" % bad[0].strip()] if bad else []), \
        ["log: %s" % x.strip() for x in seen]


def cases():
    plain = ["plain"]
    C = Case
    return [
        C("one_byte_per_write", plain),
        C("crlf_split", plain, note="a write that passes a complete line and corks the rest of a MAIL line"),
        C("verb_case", plain), C("from_spaces", plain),
        C("esmtp_params", plain), C("quoted_local_domain_entry", plain),
        C("quoted_local_address_entry", plain, note="\"alice\"@example.org is alice@example.org"),
        C("source_route", plain), C("smtputf8", plain), C("rset_then_guaranteed", plain),
        C("second_message", plain), C("held_then_other", plain), C("bdat_chunking_host", ["chunking"]),
        C("bdat_no_chunking_host", plain, note="the test MX does not offer CHUNKING: it answers 502 and reads "
                                               "the chunk as commands, another server might frame it: the flow "
                                               "fails closed"),
        C("long_lines", plain), C("garbage_first", plain),
        C("leading_whitespace", plain), C("pipelined_behind_rset", plain), C("data_body_tracking", plain),
        C("writev_sendfile", plain),
        C("hostile_ehlo_lower", ["lower"], want_flow(["plain"], "offered")),
        C("hostile_ehlo_last", ["last"], want_flow(["plain"], "offered")),
        C("hostile_ehlo_alone", ["alone"], want_flow(["plain"], "offered")),
        C("hostile_ehlo_absent", ["absent"], want_flow(["plain"], "-")),
        C("hostile_ehlo_one_segment", ["big-refuse"], want_flow(["plain"], "offered"),
          note="a 9.6 KB EHLO reply in one write: tg_reply_skb reads all of a segment"),
        C("hostile_pre_greeting", ["pregreet"]),
        C("hostile_serverhello_bad_ext", ["sh-badext"], want_flow(["tls-failed", "plain"]), never_tls),
        C("hostile_serverhello_legacy13", ["sh-legacy13"], want_flow(["tls-failed", "plain"]), never_tls),
        # A well-formed ServerHello is taken at its word until the client shows otherwise (an
        # alert in the clear, or bytes that are not TLS records): the flow may show "tls" for a
        # moment; what must hold is that the plaintext that follows is read and held.
        C("hostile_serverhello_replay12", ["sh-replay12"], want_flow(["tls", "tls-failed", "plain"]),
          note="an unmodified TLS 1.2 ServerHello from another session, then an alert"),
        C("hostile_serverhello_replay13", ["sh-replay13"], want_flow(["tls", "tls-failed", "plain"]),
          note="an unmodified TLS 1.3 ServerHello from another session, then an alert"),
        C("hostile_weak_tls_control", ["tls10"], want_flow(["weak-tls"], "offered")),
        C("hostile_weak_tls_big_ehlo", ["big-tls10"], want_flow(["weak-tls"], "offered"),
          note="as the control, but the EHLO reply (9.6 KB) comes in one segment"),
        C("hostile_hello_request", ["hreq10"], want_flow(["weak-tls", "tls-failed"], "offered"),
          note="an on-path HelloRequest record in front of an honest TLS 1.0 first flight"),
        C("hostile_hello_request_other", ["hreq10"],
          note="the same path, another sender: delivered over TLS 1.0, as the MTA chose"),
        C("hostile_data_3xx", ["data330"], note="DATA answered 330; the body holds a BDAT line with a "
                                                 "huge size and a guaranteed MAIL line"),
        C("hostile_reply_desync", ["big-desync"], want_flow(["plain"]),
          note="EHLO reply in one segment whose final line starts at byte 4096; the host answers "
               "bob's end of data with 354"),
        C("hostile_tls_then_plaintext", ["unwrap13"], want_flow(["plain", "tls-failed", "tls"])),
        C("unprobed_tls_write", ["tls10"], note="a write the uprobes do not see, on a weak session they tied"),
        C("preagent_connection", plain, start_agent, before_agent=True,
          note="a connection the MTA made before tlsguardd attached: destroyed when it does"),
        C("tfo_sendto", ["tfo"], note="sendto(MSG_FASTOPEN) with EHLO and a guaranteed MAIL in the SYN; then "
                                      "with no data, as Exim connects"),
        C("tfo_connect", ["tfo"], note="TCP_FASTOPEN_CONNECT, then the same lines in the first write"),
        C("hostile_tls_leftover", ["tls-leftover"],
          note="replies queued behind a failed handshake, then plaintext on the same connection"),
        C("hostile_presend_partial", ["presend-part"],
          note="the host sends the start of a reply unasked after a message: the flow fails at once"),
        C("hostile_presend_replies", ["presend-all"],
          note="the host sends the replies of a whole transaction unasked after a message"),
    ]


class Client:
    """This file with --client CASE, started inside the test cgroup (its shell joins the
    cgroup, then execs)."""

    def __init__(self, cgroup, case):
        import subprocess
        script = 'echo $$ > "$1" && exec /usr/bin/python3 "$2" --client "$3"'
        self.proc = subprocess.Popen(["/bin/sh", "-c", script, "sh", cgroup.procs_file, os.path.abspath(__file__),
                                      case], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, bufsize=0, start_new_session=True)
        self.buf = b""

    def lines(self, deadline):
        fd = self.proc.stdout.fileno()
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                yield line.decode("utf-8", "replace")
            left = deadline - time.monotonic()
            if left <= 0:
                return
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    return
                self.buf += chunk

    def resume(self):
        try:
            self.proc.stdin.write(b"\n")
        except OSError:
            pass

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()  # by pid: our own child
        try:
            self.proc.wait(5)
        except Exception:
            pass

    def stderr(self):
        try:
            return self.proc.stderr.read()[-600:].decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""


def read_log(path, offset):
    try:
        with open(path, errors="replace") as f:
            f.seek(offset)
            return f.read().splitlines()
    except OSError:
        return []


def run_case(case, cgroup, daemon, hosts, log_path, verbose, report):
    offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0
    client = Client(cgroup, case.name)
    res, problems, info = None, [], []
    try:
        for line in client.lines(time.monotonic() + CLIENT_TIMEOUT + 5):
            if line.startswith("PAUSE "):
                _, tag, addr, local = line.split()
                time.sleep(0.1)  # let the replies just read settle in the flow state
                if case.pause_check:
                    p, i = case.pause_check(daemon, tag, addr, int(local))
                    problems += p
                    info += i
                client.resume()
            elif line.startswith("RESULT "):
                res = json.loads(line[7:])
                break
    finally:
        client.kill()
    if res is None:
        report(case.name, ["client gave no result: %s" % client.stderr().strip()], [])
        return
    time.sleep(0.3)  # the MX threads record what is still in flight
    problems = res["problems"] + problems
    mxp, record = mx_check(case.name, res, {HOSTILE.get(k, PLAIN_MX): hosts[k] for k in case.hosts})
    problems += mxp
    log = read_log(log_path, offset)
    if case.log_check:
        for k in case.hosts:
            p, i = case.log_check(log, HOSTILE[k])
            problems += p
            info += i
    details = ["    " + x for x in res["outcomes"]] + ["    info: " + x for x in res["info"] + info]
    if case.note:
        details.insert(0, "    note: " + case.note)
    if problems or verbose:
        details += ["    client " + x for x in res["trace"]] + record
        details += ["    tlsguardd: " + x for x in log if x.strip()][:40]
    report(case.name, problems, details)


def parse_args(argv):
    import harness
    ap = harness.arg_parser(__doc__, keep_help="tlsguardd log, audit",
                            verbose_help="show client traces and MX records of every case")
    ap.add_argument("--only", help="comma-separated case names")
    return ap.parse_args(argv)



def harness_write(path, text):
    """Write text to a file such as a sysctl, closing it at once."""
    with open(path, "w") as f:
        f.write(text)

def main(argv=None):
    import harness
    from mx import TestMX

    args = parse_args(argv)
    all_cases = harness.only(cases(), args.only, lambda c: c.name)
    results = harness.Results(shown=6)

    def report(name, problems, details=()):
        results.report(name, problems)
        for d in details:
            print(d, flush=True)

    with harness.Run(results, keep=args.keep, root="framing_run.py must run as root (cgroups, BPF, port 25)") as suite:
        try:
            harness.require_tools(args.tlsguardd, args.tlsguardctl)
            tmp, cgroup = suite.workspace("tlsguard-framing")
            hosts = {"plain": suite.started(TestMX(PLAIN_MX, 25, name="plain"))}
            if any(c.hosts == ["tfo"] for c in all_cases):
                with open(TFO_SYSCTL) as f:
                    tfo_was = f.read().strip()
                suite.push(lambda: harness_write(TFO_SYSCTL, tfo_was + "\n"))
                harness_write(TFO_SYSCTL, "%d\n" % TFO_ON)
                hosts["tfo"] = suite.started(TestMX(HOSTILE["tfo"], 25, name="tfo"))
            for key, h in hostile_hosts().items():
                hosts[key] = suite.started(h)
            daemon = suite.daemon(args, cgroup, SENDERS_FILE, "-v", "--audit", os.path.join(tmp, "audit.jsonl"),
                                  start=False)
            log_path = daemon.log_path
            # Cases about connections older than the agent run before it starts.
            for case in [c for c in all_cases if c.before_agent]:
                run_case(case, cgroup, daemon, hosts, log_path, args.verbose, report)
            if daemon.proc is None:
                daemon.start()
        except (RuntimeError, OSError, ValueError) as e:
            report("setup", [str(e)])
        else:
            for case in [c for c in all_cases if not c.before_agent]:
                if daemon.proc.poll() is not None:
                    report(case.name, ["tlsguardd is gone (exit %s)%s" % (daemon.proc.returncode,
                                                                           daemon.log_tail())])
                    continue
                run_case(case, cgroup, daemon, hosts, log_path, args.verbose, report)
    return suite.finish()


if __name__ == "__main__":
    sys.exit(client_main(sys.argv[2:]) if sys.argv[1:2] == ["--client"] else main())
