#!/usr/bin/python3
"""Self-check of the TLS side of the e2e harness: mx.py's STARTTLS and tlsproxy.py.

Usage (root for the Postfix part; nothing is built or attached):
    /usr/bin/python3 tests/e2e/suites/tls_selftest.py [--no-postfix] [--no-finger]
        [--capture-dir tests/unit/data] [--rewrite-captures] [-v]

It starts, on 127.0.0.20 and up (port 25), one test MX per variant:

    .20 TLS 1.3 only      .21 TLS 1.2 only     .22 TLS 1.1 only    .23 TLS 1.0 only
    .24 STARTTLS refused (454)                 .25-.28 STARTTLS 220, then a broken
    handshake (close, garbage, alert, reset)   .29 STARTTLS accepted, not advertised
    .30 TLS 1.2, "starttls" on the last EHLO line  <- .31 stripping proxy (remove)
    .32 TLS 1.3                                    <- .33 stripping proxy (garble)

and checks each with Python's smtplib (client contexts pinned to the MX's
version, ``@SECLEVEL=0`` for 1.0/1.1), with Postfix's ``posttls-finger -c
-l may`` (private MAIL_CONFIG, so the host's main.cf does not matter), and,
unless --no-postfix, with a private Postfix instance (postfix_env.py, in a
test cgroup, no tlsguard) delivering one mail to each variant at
``smtp_tls_security_level = may`` with no other TLS setting.

It also captures, for TLS 1.0, 1.1, 1.2 and 1.3, the server's first flight
up to and including the record that holds the ServerHello, with a client
that does the handshake through ``ssl.MemoryBIO`` over a raw socket after
EHLO/STARTTLS (client range TLS 1.0..1.3 with ALL:@SECLEVEL=0, like Postfix's
client), and checks each capture's framing and versions (record layer,
legacy_version, and TLS 1.3's supported_versions).  The MX's maximum is the
pinned version, so the 1.0-1.2 ServerHellos carry no RFC 8446 downgrade
sentinel (OpenSSL adds it only when the server itself could do 1.3).  The captures are written to
``CAPTURE_DIR/serverhello_tls1{0,1,2,3}.hex`` only if a file is missing or
with --rewrite-captures (they hold random bytes: rewriting them on every run
would churn the tree); existing files are parsed and checked instead.  File
format: one comment line starting with ``#``, then the bytes as lowercase hex,
32 bytes a line.

Output: ``PASS name`` / ``FAIL name: why`` per check (``SKIP`` lines are not
counted), then exactly ``N passed, M failed`` alone on a line; exit status 0
only if none failed (2 on a usage error).  Everything started is stopped and
every temporary directory and cgroup removed in a ``finally``.
"""

import argparse
import os
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "fixtures"))
sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree

from mx import LEGACY_CIPHERS, TestMX, TLSOptions, tls_version  # noqa: E402
from tlsproxy import StripProxy, strip_starttls  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
POSTTLS_FINGER = "/usr/sbin/posttls-finger"
TIMEOUT = 15.0

VERSIONS = {  # key -> (address, TLSOptions version, expected SSLSocket.version(), capture file suffix)
    "tls13": ("127.0.0.20", "1.3", "TLSv1.3", "tls13"),
    "tls12": ("127.0.0.21", "1.2", "TLSv1.2", "tls12"),
    "tls11": ("127.0.0.22", "1.1", "TLSv1.1", "tls11"),
    "tls10": ("127.0.0.23", "1.0", "TLSv1", "tls10"),
}
FAILS = {"close": "127.0.0.25", "garbage": "127.0.0.26", "alert": "127.0.0.27", "reset": "127.0.0.28"}
REFUSE, UNADVERTISED = "127.0.0.24", "127.0.0.29"
STRIP_UP, STRIP = "127.0.0.30", "127.0.0.31"  # proxy (remove) in front of a TLS 1.2 MX, STARTTLS last
GARBLE_UP, GARBLE = "127.0.0.32", "127.0.0.33"  # proxy (garble) in front of a TLS 1.3 MX
# The record-layer and ServerHello versions each capture must show.
RECORD_VERSION = {"TLSv1": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303, "TLSv1.3": 0x0303}
# RFC 8446 4.1.3: the end of the ServerHello random of a TLS 1.3-capable server that negotiates less.
DOWNGRADE_SENTINELS = (b"DOWNGRD\x01", b"DOWNGRD\x00")

# What a Postfix 3.7 smtp client needs to negotiate TLS 1.0 .. 1.3 with these
# MX hosts: nothing beyond opportunistic TLS.  The other values are Postfix's
# defaults, spelled out.  Postfix's tls_client_init() sets OpenSSL security
# level 0 on its client context ("Backwards compatible security as a base for
# opportunistic TLS"); only the levels that verify certificates (verify,
# secure, dane, fingerprint) raise it to 1 per session.  So @SECLEVEL=0 is
# needed only on the MX side (mx.py does it).
POSTFIX_TLS_LEGACY = {
    "smtp_tls_security_level": "may",
    "smtp_tls_protocols": ">=TLSv1",  # default; ">=TLSv1.2" would make 1.0/1.1 hosts fail the handshake
    "smtp_tls_ciphers": "medium",  # default grade: tls_medium_cipherlist, no @SECLEVEL needed
    "smtp_tls_loglevel": "1",  # "Untrusted TLS connection established to ...: TLSv1 with cipher ..."
}


class Results:
    def __init__(self, verbose):
        self.passed, self.failed, self.verbose = 0, 0, verbose

    def check(self, name, ok, why=""):
        if ok:
            self.passed += 1
            print("PASS %s%s" % (name, (": " + why) if why and self.verbose else ""), flush=True)
        else:
            self.failed += 1
            print("FAIL %s: %s" % (name, why or "failed"), flush=True)
        return ok

    def skip(self, name, why):
        print("SKIP %s: %s" % (name, why), flush=True)

    def run(self, name, fn, *args):
        """Run one check function; an exception is a failure of that check."""
        try:
            fn(self, name, *args)
        except Exception as e:  # noqa: BLE001 -- report and go on with the next check
            self.check(name, False, "%s: %s" % (type(e).__name__, e))


def log(args, *what):
    if args.verbose:
        print("    " + " ".join(str(x) for x in what), flush=True)


# ------------------------------------------------------------------ clients

def client_context(min_version="1.0", max_version="1.3", seclevel0=None):
    """A client context without certificate checks; @SECLEVEL=0 when TLS < 1.2 is allowed."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    lo, hi = tls_version(min_version), tls_version(max_version)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version, ctx.maximum_version = lo, hi
    if seclevel0 if seclevel0 is not None else lo < ssl.TLSVersion.TLSv1_2:
        ctx.set_ciphers(LEGACY_CIPHERS)
    return ctx


def starttls_anyway(s):
    """STARTTLS on the smtplib.SMTP ``s`` whether offered or not, a TLS 1.2-1.3
    handshake, EHLO again: (the reply code to STARTTLS, the TLS version)."""
    code, _ = s.docmd("STARTTLS")
    s.sock = client_context("1.2", "1.3").wrap_socket(s.sock)
    s.file = None
    s.helo_resp = s.ehlo_resp = None
    s.esmtp_features, s.does_esmtp = {}, False
    version = s.sock.version()
    s.ehlo()
    return code, version


def new_conns(mx, before, n=1, timeout=TIMEOUT):
    """Wait until mx has ``n`` connections after index ``before`` and all are closed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conns = mx.connections()[before:]
        if len(conns) >= n and all(c.closed for c in conns):
            return conns
        time.sleep(0.02)
    return mx.connections()[before:]


def send_over_tls(host, ctx, marker):
    """smtplib: EHLO, STARTTLS, EHLO, one mail; returns (features before TLS, version, cipher)."""
    with smtplib.SMTP(host, 25, timeout=TIMEOUT) as s:
        s.ehlo("client.test")
        features = dict(s.esmtp_features)
        s.starttls(context=ctx)
        version, cipher = s.sock.version(), s.sock.cipher()
        s.ehlo("client.test")
        s.sendmail("tls-sender@client.test", ["rcpt1@mx.test", "rcpt2@mx.test"],
                   "Subject: over TLS %s\r\n\r\nbody line %s\r\n.leading dot\r\n" % (marker, marker))
    return features, version, cipher


def finger(args, host, *opts):
    """posttls-finger -c -l may [host]:25 with a private, minimal MAIL_CONFIG; returns its output."""
    env = dict(os.environ, MAIL_CONFIG=args.finger_conf)
    r = subprocess.run([POSTTLS_FINGER, "-c", "-l", "may", "-t", "10", "-T", "10", *opts, "[%s]:25" % host],
                       capture_output=True, text=True, timeout=60, env=env)
    out = r.stdout + r.stderr
    log(args, "posttls-finger %s [%s]:25 ->" % (" ".join(opts), host), out.strip().replace("\n", "\n    "))
    return out


def finger_tls(out, host):
    m = re.search(r"TLS connection established to %s\[%s\]:25: (\S+) with cipher (\S+)"
                  % (re.escape(host), re.escape(host)), out)
    return (m.group(1), m.group(2)) if m else (None, None)


# ------------------------------------------------------------------ checks

def check_version(res, name, args, mxs, key):
    host, _, want, _ = VERSIONS[key]
    mx = mxs[key]
    before = len(mx.connections())
    marker = uuid.uuid4().hex[:12]
    features, version, cipher = send_over_tls(host, client_context(VERSIONS[key][1], VERSIONS[key][1]), marker)
    conns = new_conns(mx, before)
    c = conns[0] if conns else None
    ts = c.transactions() if c else []
    t = ts[0] if ts else None
    res.check(name + "_offered", "starttls" in features, "EHLO features %s" % sorted(features))
    res.check(name + "_client_version", version == want, "client negotiated %s %s" % (version, cipher and cipher[0]))
    res.check(name + "_mx_recorded", c is not None and c.tls_version == want and c.tls_cipher is not None
              and c.tls_cipher[0] == cipher[0],
              "MX recorded %s %s" % (c and c.tls_version, c and c.tls_cipher))
    ok = (t is not None and len(ts) == 1 and t.sender == "tls-sender@client.test"
          and t.recipients == ["rcpt1@mx.test", "rcpt2@mx.test"] and t.tls_version == want
          and t.data is not None and "body line %s" % marker in t.data and ".leading dot" in t.data
          and t.queue_id)
    res.check(name + "_mail_recorded_in_tls", ok, "transaction %r" % (t,))
    pre, post = (c.commands(tls=False), c.commands(tls=True)) if c else ([], [])
    res.check(name + "_commands_split", [x.split()[0].upper() for x in pre] == ["EHLO", "STARTTLS"]
              and [x.split()[0].upper() for x in post][:2] == ["EHLO", "MAIL"]
              and not any("MAIL" in x.upper() for x in pre),
              "plaintext %s; TLS %s" % (pre, post))
    if not args.no_finger:
        out = finger(args, host)
        fv, fc = finger_tls(out, host)
        res.check(name + "_posttls_finger", fv == want, "posttls-finger: %s with cipher %s" % (fv, fc))


def check_version_mismatch(res, name, args, mxs):
    """The pins are real: clients outside an MX's version get a handshake error."""
    cases = [("tls10", client_context("1.2", "1.3")),  # Python's default range, default SECLEVEL
             ("tls11", client_context("1.2", "1.3")),
             ("tls12", client_context("1.3", "1.3")),
             ("tls13", client_context("1.0", "1.2")),
             ("tls10", client_context("1.0", "1.0", seclevel0=False))]  # right version, no SECLEVEL=0
    bad = []
    for key, ctx in cases:
        mx = mxs[key]
        before = len(mx.connections())
        try:
            with smtplib.SMTP(mx.host, 25, timeout=TIMEOUT) as s:
                s.ehlo()
                s.starttls(context=ctx)
                bad.append("%s: negotiated %s" % (key, s.sock.version()))
        except (ssl.SSLError, smtplib.SMTPServerDisconnected, OSError) as e:
            log(args, key, "client error:", e)
        conns = new_conns(mx, before)
        if not conns or conns[0].tls_version is not None or not conns[0].tls_error:
            bad.append("%s: MX recorded %s / %s" % (key, conns and conns[0].tls_version, conns and conns[0].tls_error))
    res.check(name, not bad, "; ".join(bad) or "5 mismatched clients refused, MX recorded tls_error")
    if not args.no_finger:
        out = finger(args, VERSIONS["tls10"][0], "-p", ">=TLSv1.2")
        res.check(name + "_posttls_finger_min_tls12", finger_tls(out, VERSIONS["tls10"][0])[0] is None
                  and "TLS connection established" not in out, "posttls-finger -p '>=TLSv1.2' vs TLSv1 MX")


def check_refuse(res, name, args, mxs):
    mx = mxs["refuse"]
    before = len(mx.connections())
    code = text = None
    with smtplib.SMTP(REFUSE, 25, timeout=TIMEOUT) as s:
        s.ehlo()
        offered = s.has_extn("starttls")
        try:
            s.starttls(context=client_context("1.2", "1.3"))
        except smtplib.SMTPResponseException as e:
            code, text = e.smtp_code, e.smtp_error.decode()
        s.sendmail("plain@client.test", ["rcpt@mx.test"], "Subject: after 454\r\n\r\nplaintext\r\n")
    c = (new_conns(mx, before) or [None])[0]
    res.check(name + "_454", offered and code == 454 and text == "4.7.0 TLS not available due to local problem",
              "offered=%s reply %s %s" % (offered, code, text))
    ts = c.transactions() if c else []
    res.check(name + "_plaintext_continues", c is not None and c.tls_version is None and len(ts) == 1
              and ts[0].tls_version is None and ts[0].data is not None, "transactions %r" % ts)
    if not args.no_finger:
        out = finger(args, REFUSE)
        res.check(name + "_posttls_finger", "TLS connection established" not in out and "454" in out,
                  out.strip().splitlines()[-1] if out.strip() else "no output")


def check_fail(res, name, args, mxs, how):
    mx = mxs["fail-" + how]
    before = len(mx.connections())
    err = None
    with smtplib.SMTP(FAILS[how], 25, timeout=TIMEOUT) as s:
        s.ehlo()
        offered = s.has_extn("starttls")
        try:
            s.starttls(context=client_context("1.0", "1.3"))
        except (ssl.SSLError, OSError, smtplib.SMTPServerDisconnected) as e:
            err = e
        try:
            s.close()
        except OSError:
            pass
    c = (new_conns(mx, before) or [None])[0]
    replies = [e.data for e in c.snapshot() if e.kind == "reply"] if c else []
    res.check(name, offered and err is not None and "220 2.0.0 Ready to start TLS" in replies
              and c.tls_version is None and bool(c.tls_error),
              "client: %s: %s; MX: %s" % (type(err).__name__, err, c and c.tls_error))
    if not args.no_finger:
        out = finger(args, FAILS[how])
        res.check(name + "_posttls_finger", "TLS connection established" not in out
                  and ("SSL_connect error" in out or "handshake" in out.lower()),
                  " | ".join(x for x in out.strip().splitlines() if "SSL" in x or "TLS" in x)[:300])


def check_unadvertised(res, name, args, mxs):
    mx = mxs["unadvertised"]
    before = len(mx.connections())
    with smtplib.SMTP(UNADVERTISED, 25, timeout=TIMEOUT) as s:
        s.ehlo()
        offered = s.has_extn("starttls")
        code, version = starttls_anyway(s)
        s.sendmail("hidden@client.test", ["rcpt@mx.test"], "Subject: hidden STARTTLS\r\n\r\nx\r\n")
    c = (new_conns(mx, before) or [None])[0]
    ts = c.transactions() if c else []
    res.check(name, not offered and code == 220 and version == "TLSv1.3" and c.tls_version == "TLSv1.3"
              and len(ts) == 1 and ts[0].tls_version == "TLSv1.3",
              "offered=%s 220=%s client %s MX %s" % (offered, code, version, c and c.tls_version))
    if not args.no_finger:
        out = finger(args, UNADVERTISED)
        res.check(name + "_posttls_finger_plaintext", "TLS connection established" not in out,
                  "posttls-finger does not try STARTTLS that is not advertised")


def check_injection(res, name, args, mxs):
    """Plaintext pipelined behind STARTTLS is discarded, never executed (RFC 3207 4.2)."""
    mx = mxs["tls12"]
    before = len(mx.connections())
    sock = socket.create_connection((mx.host, 25), timeout=TIMEOUT)
    try:
        rd = _LineReader(sock)
        rd.ehlo("inject.test")
        sock.sendall(b"STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n")
        r = rd.reply()
        tls = client_context("1.2", "1.2").wrap_socket(sock)
        sock = tls
        rd = _LineReader(tls)
        tls.sendall(b"EHLO inject.test\r\n")
        rd.reply()
        tls.sendall(b"MAIL FROM:<real@client.test>\r\n")
        r2 = rd.reply()
        tls.sendall(b"QUIT\r\n")
        rd.reply()
    finally:
        sock.close()
    c = (new_conns(mx, before) or [None])[0]
    disc = [e.data for e in c.snapshot() if e.kind == "discard"] if c else []
    res.check(name, r[0].startswith("220") and r2[0].startswith("250") and disc == ["MAIL FROM:<injected@evil.test>\r\n"]
              and not any("injected" in x for x in c.lines()),
              "discarded %r; commands %s" % (disc, c and c.commands()))


def check_strip_function(res, name, args):
    cases = [
        ([b"250-mx.test\r\n", b"250-PIPELINING\r\n", b"250 STARTTLS\r\n"],
         [b"250-mx.test\r\n", b"250 PIPELINING\r\n"], 1, True),
        ([b"250-mx.test\r\n", b"250-starttls \r\n", b"250 8BITMIME\r\n"],
         [b"250-mx.test\r\n", b"250 8BITMIME\r\n"], 1, False),
        ([b"250-mx.test\n", b"250 StartTLS\n"], [b"250 mx.test\n"], 1, True),  # bare LF kept
        ([b"250-mx.test\r\n", b"250-STARTTLSX\r\n", b"250 SIZE\r\n"], None, 0, False),  # not the keyword
        ([b"220 STARTTLS\r\n"], None, 0, False),  # not a 250 reply
        ([b"250 STARTTLS\r\n"], None, 0, False),  # the first line is the host name
    ]
    bad = []
    for lines, want, nrem, fix in cases:
        out, removed, fixed = strip_starttls(lines)
        if out != (want if want is not None else lines) or len(removed) != nrem or (fixed is not None) != fix:
            bad.append("%r -> %r %r %r" % (lines, out, removed, fixed))
    out, removed, _ = strip_starttls([b"250-mx.test\r\n", b"250-STARTTLS\r\n", b"250 8BITMIME\r\n"], "garble")
    if out != [b"250-mx.test\r\n", b"250-XXXXXXXA\r\n", b"250 8BITMIME\r\n"] or len(removed) != 1:
        bad.append("garble -> %r" % out)
    res.check(name, not bad, "; ".join(bad) or "%d cases" % (len(cases) + 1))


def check_proxy(res, name, args, mxs, proxies, key):
    """A client through the proxy sees no STARTTLS and mails in plaintext; the upstream offered it."""
    proxy, up = proxies[key], mxs[key + "-up"]
    pbefore, before = len(proxy.connections()), len(up.connections())
    marker = uuid.uuid4().hex[:12]
    with smtplib.SMTP(proxy.host, 25, timeout=TIMEOUT) as s:
        code, _ = s.ehlo("client.test")
        features = dict(s.esmtp_features)
        s.sendmail("stripped@client.test", ["rcpt@mx.test"], "Subject: %s\r\n\r\nplain %s\r\n" % (marker, marker))
    c = (new_conns(up, before) or [None])[0]
    pc = proxy.connections()[pbefore:]
    pc = pc[0] if pc else None
    proxy.wait_closed(TIMEOUT)
    ts = c.transactions() if c else []
    ehlo_lines = [x for x in pc.client_lines() if x.startswith("250")][:8] if pc else []
    res.check(name + "_client_sees_no_starttls", code == 250 and "starttls" not in features
              and not any(x[4:].strip().upper() == "STARTTLS" for x in ehlo_lines),
              "client EHLO features %s" % sorted(features))
    res.check(name + "_upstream_offered", c is not None and c.starttls_offered(), "upstream EHLO listed STARTTLS")
    res.check(name + "_plaintext_delivery", c is not None and c.tls_version is None and len(ts) == 1
              and ts[0].tls_version is None and ts[0].sender == "stripped@client.test"
              and ts[0].data is not None and "plain %s" % marker in ts[0].data,
              "upstream transactions %r" % ts)
    want_removed = 1
    ok = (pc is not None and len(pc.stripped()) == want_removed
          and b"MAIL FROM:<STRIPPED@CLIENT.TEST>" in pc.to_upstream().upper())
    if proxy.strip == "remove":
        ok = ok and b"STARTTLS" not in pc.to_client().upper()
    else:
        ok = ok and b"250-XXXXXXXA" in pc.to_client()
    res.check(name + "_proxy_recorded", ok, "stripped %r, fixup %r" % (
        pc and pc.stripped(), pc and [e.data for e in pc.snapshot() if e.kind == "fixup"]))
    if proxy.strip == "remove":
        res.check(name + "_reply_fixed_up", pc is not None and any(e.kind == "fixup" for e in pc.snapshot())
                  and [x[:4] for x in ehlo_lines[:4]] == ["250-", "250-", "250-", "250 "],
                  "EHLO reply to client: %s" % ehlo_lines[:5])
    # A client that sends STARTTLS anyway gets TLS end to end (the proxy switches to raw bytes).
    before = len(up.connections())
    with smtplib.SMTP(proxy.host, 25, timeout=TIMEOUT) as s:
        s.ehlo()
        code, version = starttls_anyway(s)
        s.sendmail("forced@client.test", ["rcpt@mx.test"], "Subject: forced\r\n\r\nx\r\n")
    c = (new_conns(up, before) or [None])[0]
    res.check(name + "_forced_starttls_end_to_end", code == 220 and c is not None and c.tls_version == version
              and [t.tls_version for t in c.transactions()] == [version],
              "client %s, upstream %s" % (version, c and c.tls_version))
    if not args.no_finger:
        out = finger(args, proxy.host)
        res.check(name + "_posttls_finger", "TLS connection established" not in out,
                  "posttls-finger through the proxy: no TLS")


# ------------------------------------------------------------------ ServerHello captures

class _LineReader:
    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("connection closed mid-reply")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode()

    def reply(self):
        out = [self.line()]
        while out[-1][3:4] == "-":
            out.append(self.line())
        return out

    def ehlo(self, name):
        """The greeting, then EHLO ``name`` and its reply."""
        self.reply()
        self.sock.sendall(b"EHLO %s\r\n" % name.encode())
        return self.reply()


def records(data):
    """Complete TLS records at the start of data: [(type, version, body, end)]."""
    out, i = [], 0
    while len(data) - i >= 5:
        n = int.from_bytes(data[i + 3:i + 5], "big")
        if len(data) - i - 5 < n:
            break
        out.append((data[i], int.from_bytes(data[i + 1:i + 3], "big"), data[i + 5:i + 5 + n], i + 5 + n))
        i += 5 + n
    return out


def through_serverhello(data):
    """data[:end of the record holding the ServerHello], or None while incomplete."""
    for rtype, _, body, end in records(data):
        if rtype == 22 and body[:1] == b"\x02":
            return data[:end]
    return None


def parse_serverhello(capture):
    """Facts about the ServerHello in a capture (raises ValueError on bad framing)."""
    recs = records(capture)
    if not recs or recs[-1][3] != len(capture):
        raise ValueError("capture is not a whole number of TLS records")
    rtype, rversion, body, _ = recs[-1]
    if rtype != 22 or body[0] != 2:
        raise ValueError("last record is not a handshake record holding a ServerHello")
    hlen = int.from_bytes(body[1:4], "big")
    hs = body[4:4 + hlen]
    if len(hs) != hlen:
        raise ValueError("ServerHello split across records")
    legacy = int.from_bytes(hs[0:2], "big")
    random = hs[2:34]
    sid_len = hs[34]
    p = 35 + sid_len
    suite = int.from_bytes(hs[p:p + 2], "big")
    p += 3  # cipher suite, compression method
    selected = None
    if p + 2 <= len(hs):
        ext_end = p + 2 + int.from_bytes(hs[p:p + 2], "big")
        p += 2
        while p + 4 <= ext_end:
            etype, elen = int.from_bytes(hs[p:p + 2], "big"), int.from_bytes(hs[p + 2:p + 4], "big")
            if etype == 43:  # supported_versions
                selected = int.from_bytes(hs[p + 4:p + 6], "big")
            p += 4 + elen
    names = {0x0301: "TLSv1", 0x0302: "TLSv1.1", 0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}
    return {"record_version": rversion, "legacy_version": legacy, "supported_versions": selected,
            "version": names.get(selected or legacy), "random": random, "cipher_suite": suite,
            "records": len(recs)}


def capture_serverhello(host):
    """EHLO, STARTTLS, then a MemoryBIO handshake; returns (capture, version, cipher)."""
    sock = socket.create_connection((host, 25), timeout=TIMEOUT)
    try:
        rd = _LineReader(sock)
        rd.ehlo("capture.test")
        sock.sendall(b"STARTTLS\r\n")
        r = rd.reply()
        if not r[0].startswith("220") or rd.buf:
            raise RuntimeError("STARTTLS got %r (extra %r)" % (r, rd.buf))
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = client_context("1.0", "1.3").wrap_bio(incoming, outgoing, server_side=False)
        got, capture = b"", None
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            pending = outgoing.read()
            if pending:
                sock.sendall(pending)  # the ClientHello, later the client's Finished
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed during the handshake")
            got += chunk
            if capture is None:
                capture = through_serverhello(got)
            incoming.write(chunk)
        sock.sendall(outgoing.read())
        version, cipher = tls.version(), tls.cipher()
        # A short SMTP exchange inside TLS proves the session works.
        tls.write(b"QUIT\r\n")
        sock.sendall(outgoing.read())
        reply = b""
        while b"\n" not in reply:
            try:
                reply += tls.read(4096)
            except ssl.SSLWantReadError:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                incoming.write(chunk)
        if not reply.startswith(b"221"):
            raise RuntimeError("QUIT inside TLS got %r" % reply)
        return capture, version, cipher
    finally:
        sock.close()


def write_hex(path, comment, data):
    with open(path + ".tmp", "w") as f:
        f.write("# " + comment.replace("\n", " ") + "\n")
        for i in range(0, len(data), 32):
            f.write(data[i:i + 32].hex() + "\n")
    os.replace(path + ".tmp", path)


def read_hex(path):
    with open(path) as f:
        return bytes.fromhex("".join(x for x in f.read().splitlines() if not x.startswith("#")))


def check_capture_facts(info, want):
    """What a ServerHello for version ``want`` must show; returns a list of problems."""
    bad = []
    if info["version"] != want:
        bad.append("version %s" % info["version"])
    if want == "TLSv1.3":
        if info["legacy_version"] != 0x0303 or info["supported_versions"] != 0x0304:
            bad.append("legacy %04x supported_versions %s" % (info["legacy_version"], info["supported_versions"]))
    else:
        if info["legacy_version"] != RECORD_VERSION[want] or info["supported_versions"] is not None:
            bad.append("legacy %04x supported_versions %s" % (info["legacy_version"], info["supported_versions"]))
    if info["record_version"] not in (0x0301, RECORD_VERSION[want]):
        bad.append("record version %04x" % info["record_version"])
    return bad


def check_captures(res, name, args, mxs):
    os.makedirs(args.capture_dir, exist_ok=True)
    for key, (host, _, want, suffix) in VERSIONS.items():
        cname = "%s_%s" % (name, suffix)
        path = os.path.join(args.capture_dir, "serverhello_%s.hex" % suffix)
        try:
            mx = mxs[key]
            before = len(mx.connections())
            capture, version, cipher = capture_serverhello(host)
            c = (new_conns(mx, before) or [None])[0]
            info = parse_serverhello(capture)
            bad = check_capture_facts(info, want)
            if version != want or c is None or c.tls_version != want:
                bad.append("negotiated %s, MX recorded %s" % (version, c and c.tls_version))
            if not res.check(cname, not bad, "%d bytes, %d record(s), suite %04x, %s" % (
                    len(capture), info["records"], info["cipher_suite"], version) if not bad else "; ".join(bad)):
                continue
            if args.rewrite_captures or not os.path.exists(path):
                comment = ("%s ServerHello: the server's bytes after the ClientHello, up to and including the record "
                           "holding the ServerHello (%d bytes, %d record(s)); server tests/e2e/fixtures/mx.py TLSOptions("
                           "version=%r) after STARTTLS, Python %s ssl / %s; client: raw socket, ssl.MemoryBIO, "
                           "range TLSv1..TLSv1.3 with ALL:@SECLEVEL=0 (as Postfix offers); negotiated %s %s (suite 0x%04x), "
                           "%scaptured by tests/e2e/suites/tls_selftest.py on %s" % (
                               want, len(capture), info["records"], VERSIONS[key][1], sys.version.split()[0],
                               ssl.OPENSSL_VERSION, version, cipher[0], info["cipher_suite"],
                               "" if want == "TLSv1.3" else "RFC 8446 downgrade sentinel in the random: %s "
                               "(the server's maximum is %s); " % (
                                   "yes" if info["random"][-8:] in DOWNGRADE_SENTINELS else "no", want),
                               time.strftime("%Y-%m-%d")))
                write_hex(path, comment, capture)
                log(args, "wrote", path)
            stored = parse_serverhello(read_hex(path))
            bad = check_capture_facts(stored, want)
            res.check(cname + "_file", not bad, "%s: %s" % (os.path.relpath(path, REPO), "; ".join(bad) or "ok"))
        except Exception as e:  # noqa: BLE001
            res.check(cname, False, "%s: %s" % (type(e).__name__, e))


# ------------------------------------------------------------------ Postfix

def check_postfix(res, name, args, mxs, proxies, tmp):
    try:
        from postfix_env import Cgroup, PostfixInstance, check_postfix_installed
        check_postfix_installed()
    except Exception as e:  # noqa: BLE001 -- PostfixMissing, or an import problem
        res.skip(name, str(e).splitlines()[0])
        return
    targets = {  # domain -> (address Postfix connects to, recording MX, expected TLS version or None)
        "tls13.test": (VERSIONS["tls13"][0], mxs["tls13"], "TLSv1.3"),
        "tls12.test": (VERSIONS["tls12"][0], mxs["tls12"], "TLSv1.2"),
        "tls11.test": (VERSIONS["tls11"][0], mxs["tls11"], "TLSv1.1"),
        "tls10.test": (VERSIONS["tls10"][0], mxs["tls10"], "TLSv1"),
        "refuse.test": (REFUSE, mxs["refuse"], None),
        "strip.test": (STRIP, mxs["strip-up"], None),
        "fail.test": (FAILS["close"], mxs["fail-close"], None),
    }
    cg = Cgroup.create("tlsguard-tls-selftest")
    pf = None
    try:
        root = os.path.join(tmp, "postfix")
        os.makedirs(root)
        pf = PostfixInstance(root, cg, {d: "smtp:[%s]:25" % a for d, (a, _, _) in targets.items()},
                             mailbox_domains=["mta.test"], mailboxes=["sender@mta.test"],
                             extra_main=POSTFIX_TLS_LEGACY)
        pf.start()
        mails = {d: pf.send("sender@mta.test", ["rcpt@%s" % d], subject="tls selftest " + d, body="via " + d)
                 for d in targets}
        outcomes = pf.wait_final(list(mails.values()), 60)
        logtext = "\n".join(pf.log_lines())
        for d, (addr, mx, want) in targets.items():
            m = mails[d]
            st = outcomes[m.marker].status_of("rcpt@" + d)
            got = [t for t in mx.transactions() if t.data is not None and any(m.marker in x for x in t.data)]
            tlsline = re.findall(r"(?:Untrusted|Anonymous|Trusted|Verified) TLS connection established to %s\[%s\]:25: "
                                 r"(\S+) with cipher (\S+)" % (re.escape(addr), re.escape(addr)), logtext)
            sent = st is not None and st.status == "sent" and len(got) == 1
            if want:
                ok = sent and got[0].tls_version == want and (want, ) == tuple({v for v, _ in tlsline})
                why = "status %s, MX got it over %s, log: %s" % (st and st.status, got and got[0].tls_version,
                                                                 sorted(set(tlsline)))
            elif d == "fail.test":
                # Postfix at "may": the first attempt defers (4.7.5), the retry is plaintext without STARTTLS.
                deferred = re.search(r"to=<rcpt@fail\.test>.*dsn=(4\.7\.5), status=deferred \(([^)]*)\)", logtext)
                conn = [c for c in mx.connections() if any(m.marker in x for x in c.lines())]
                ok = (sent and got[0].tls_version is None and not tlsline and deferred is not None
                      and len(conn) == 1 and "STARTTLS" not in conn[0].verbs())
                why = "first attempt: %s; then %s over %s, commands %s" % (
                    " ".join(deferred.groups()) if deferred else "not deferred", st and st.status,
                    got and got[0].tls_version, conn and conn[0].verbs())
            else:
                ok = sent and got[0].tls_version is None and not tlsline
                why = "status %s, plaintext at the MX: %s" % (st and st.status, got and got[0].tls_version is None)
            res.check("%s_%s" % (name, d.split(".")[0]), ok, why)
        if args.verbose:
            for line in pf.log_lines():
                if "TLS" in line or "status=" in line:
                    log(args, line.split(": ", 1)[-1])
    finally:
        if pf is not None:
            pf.stop()
        cg.remove()


# ------------------------------------------------------------------ main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--no-postfix", action="store_true", help="skip the private Postfix instance")
    ap.add_argument("--no-finger", action="store_true", help="skip the posttls-finger checks")
    ap.add_argument("--capture-dir", default=os.path.join(REPO, "tests", "unit", "data"))
    ap.add_argument("--rewrite-captures", action="store_true", help="overwrite existing serverhello_*.hex files")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    if not args.no_finger and not os.access(POSTTLS_FINGER, os.X_OK):
        print("SKIP posttls-finger: %s is missing (apt-get install postfix)" % POSTTLS_FINGER)
        args.no_finger = True

    res = Results(args.verbose)
    tmp = tempfile.mkdtemp(prefix="tlsguard-tls-selftest-")
    os.chmod(tmp, 0o755)  # Postfix's users must traverse it
    args.finger_conf = os.path.join(tmp, "finger")
    os.makedirs(args.finger_conf)
    with open(os.path.join(args.finger_conf, "main.cf"), "w") as f:
        f.write("# posttls-finger only: Postfix defaults\ncompatibility_level = 3.6\n")
    specs = {key: (host, TLSOptions(version=v)) for key, (host, v, _, _) in VERSIONS.items()}
    specs["refuse"] = (REFUSE, TLSOptions(starttls="refuse"))
    specs.update({"fail-" + how: (addr, TLSOptions(starttls="fail", fail=how)) for how, addr in FAILS.items()})
    specs["unadvertised"] = (UNADVERTISED, TLSOptions(starttls="unadvertised"))
    specs["strip-up"] = (STRIP_UP, TLSOptions(version="1.2", starttls_last=True, starttls_keyword="starttls"))
    specs["garble-up"] = (GARBLE_UP, TLSOptions(version="1.3"))
    mxs, proxies = {}, {}
    try:
        try:
            for key, (host, opts) in specs.items():
                mxs[key] = TestMX(host, 25, name="%s(%s)" % (key, host), tls=opts).start()
            proxies["strip"] = StripProxy(STRIP, 25, (STRIP_UP, 25), name="strip").start()
            proxies["garble"] = StripProxy(GARBLE, 25, (GARBLE_UP, 25), name="garble", strip="garble").start()
        except (OSError, RuntimeError) as e:
            res.check("setup", False, str(e))
            return finish(res)
        for key in VERSIONS:
            res.run(key, check_version, args, mxs, key)
        res.run("version_pins_enforced", check_version_mismatch, args, mxs)
        res.run("refuse", check_refuse, args, mxs)
        for how in FAILS:
            res.run("fail_" + how, check_fail, args, mxs, how)
        res.run("unadvertised", check_unadvertised, args, mxs)
        res.run("starttls_injection_discarded", check_injection, args, mxs)
        res.run("strip_starttls_function", check_strip_function, args)
        res.run("strip_proxy", check_proxy, args, mxs, proxies, "strip")
        res.run("garble_proxy", check_proxy, args, mxs, proxies, "garble")
        res.run("serverhello", check_captures, args, mxs)
        if args.no_postfix:
            res.skip("postfix", "--no-postfix")
        else:
            res.run("postfix", check_postfix, args, mxs, proxies, tmp)
    finally:
        for p in proxies.values():
            p.stop()
        for mx in mxs.values():
            mx.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return finish(res)


def finish(res):
    print("%d passed, %d failed" % (res.passed, res.failed), flush=True)
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())
