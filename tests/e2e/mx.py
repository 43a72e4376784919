#!/usr/bin/python3
"""Test MX: a small recording SMTP server for tlsguard's end-to-end tests.

Contract
--------
* ``TestMX(host, port=25, pipelining=True, name=None, jsonl_path=None)``
  listens on one IPv4 (for example 127.0.0.2) or IPv6 (``::1``) address.
  ``start()`` binds and serves from daemon threads (one per connection) and
  returns once the socket listens; ``stop()`` closes the listener and every
  open connection and waits for the threads.  The object is also a context
  manager.  A bind failure raises ``OSError`` with the address in the message.
* With ``tls=None`` (the default) it never offers STARTTLS, and a client that
  sends STARTTLS anyway gets ``502 5.5.1``.  With ``tls=TLSOptions(...)`` it
  speaks STARTTLS (RFC 3207) with a real OpenSSL handshake; see "TLS" below.
* Replies: ``220`` greeting; EHLO gets a multi-line ``250`` with PIPELINING
  (only when ``pipelining`` is on), SIZE and 8BITMIME (and SMTPUTF8 when
  ``smtputf8`` is on); HELO, MAIL, RCPT,
  RSET, NOOP get ``250``; DATA gets ``354`` and, after the terminating ``.``,
  ``250 2.0.0 Ok: queued as <ID>``; QUIT gets ``221`` and the server closes.
  RCPT of an address whose local part starts with ``reject-`` gets
  ``550 5.1.1`` (the harness uses it to prove the bounce plumbing works).
  Out-of-sequence commands get ``503 5.5.1``; unknown ones ``502 5.5.2``.
  Commands are answered strictly in order, so pipelined input works whether
  or not PIPELINING is advertised.
* Recording: every connection is a ``Connection`` with an ``events`` list of
  ``Event(kind, data, t)`` where kind is ``open`` (data: peer address),
  ``line`` (one raw line received, command or message data, without the line
  terminator, decoded as UTF-8 with surrogateescape), ``partial`` (bytes
  received without a final line terminator before the peer went away),
  ``reply`` (what the MX sent) and ``close`` (data: reason: ``quit``,
  ``eof``, ``error: ...``, ``timeout``, ``shutdown``).  Convenience views:
  ``Connection.lines()`` (received lines only), ``Connection.commands()``
  (received lines outside DATA), ``Connection.transactions()`` (parsed mail
  transactions) and ``Connection.closed``.  ``TestMX.connections()`` returns
  a snapshot list; ``TestMX.wait_closed()`` waits until all are closed.
  If ``jsonl_path`` is given, every event is also appended there as one JSON
  object a line: ``{"mx", "conn", "t", "kind", "data"}``.
* Clients that vanish (reset, EOF mid-command, mid-DATA) are recorded and
  never crash the server.

TLS
---
``TLSOptions(version=None, min_version=None, max_version=None,
starttls="offer", fail="close", ciphers=None, certfile=None, keyfile=None,
starttls_keyword="STARTTLS", starttls_last=False, implicit=False)``:

* ``version`` pins min and max to one of ``"1.0"``, ``"1.1"``, ``"1.2"``,
  ``"1.3"`` (or an ``ssl.TLSVersion``); ``min_version``/``max_version`` set
  a range instead (default: Python's server default, TLS 1.2 to 1.3).
* ``ciphers``: the OpenSSL cipher string of the server context (TLS <= 1.2
  suites).  Default ``None``: OpenSSL's default, except that a range that
  includes TLS 1.0 or 1.1 gets ``ALL:@SECLEVEL=0``, because OpenSSL 3 refuses
  those versions at security level 1 and above (their handshake signatures
  use SHA-1/MD5+SHA-1): without it the MX answers a 1.0/1.1 ClientHello with
  an ``internal_error`` alert.  A Python client needs ``@SECLEVEL=0`` too
  (else "legacy sigalg disallowed or unsupported").  Postfix 3.7 does not:
  its smtp client sets security level 0 itself for opportunistic TLS (only
  the verify/secure/dane/fingerprint levels raise it to 1), so at
  ``smtp_tls_security_level = may`` (or ``encrypt``) its defaults
  ``smtp_tls_protocols = >=TLSv1`` and ``smtp_tls_ciphers = medium``
  negotiate TLS 1.0 and 1.1 with this MX (verified in ``tls_selftest.py``,
  which also holds ``POSTFIX_TLS_LEGACY``).
* ``starttls``: ``"offer"`` (advertise it in EHLO, 220, handshake);
  ``"refuse"`` (advertise it, answer ``454 4.7.0 TLS not available due to
  local problem`` and go on in plaintext); ``"fail"`` (advertise it, answer
  ``220 2.0.0 Ready to start TLS``, read the ClientHello, then break the
  handshake as ``fail`` says and close); ``"unadvertised"`` (EHLO does not
  list it, but STARTTLS is accepted and the handshake done).
* ``fail`` (with ``starttls="fail"``): ``"close"`` (FIN after the
  ClientHello), ``"garbage"`` (a plaintext line instead of a ServerHello,
  then FIN), ``"alert"`` (a fatal TLS ``handshake_failure`` alert, then FIN),
  ``"reset"`` (RST).
* ``certfile``/``keyfile``: PEM files to use.  Default: a self-signed RSA
  2048 certificate for CN=mx.test made once per process with ``openssl req
  -x509 -newkey rsa:2048 -nodes -subj /CN=mx.test -days 2`` in a temporary
  directory that is removed at once (the PEM text is kept in memory;
  ``self_signed_pem()``); each context loads it from a fresh temporary
  directory that is removed right after loading.
* ``starttls_keyword`` is the EHLO line's text (for example ``starttls`` or
  ``StartTLS``, to test case-insensitive parsers); ``starttls_last`` puts it
  on the last line of the EHLO reply (``250 STARTTLS``) instead of before
  8BITMIME.
* ``implicit=True``: implicit TLS (SMTPS, RFC 8314; for port 465).  The
  handshake starts right after accept, before any byte of SMTP; then the
  whole dialogue, greeting included, runs inside TLS exactly as after
  STARTTLS (EHLO does not list STARTTLS; STARTTLS gets ``554 5.5.1``), and
  every line is recorded as received inside TLS.  A failed handshake is
  recorded as ``tls-error`` and ends the connection without a greeting.
  ``starttls`` must then be ``"offer"`` (the default; it means "do the
  handshake") or ``"fail"`` (break the handshake after the ClientHello, as
  ``fail`` says).  Default ``False``: STARTTLS, as described here.
* After ``220`` the MX discards any plaintext the client pipelined behind
  STARTTLS (recorded as a ``discard`` event, never as lines: RFC 3207's
  command-injection rule), does the handshake, and then serves exactly as in
  plaintext, recording every line received inside TLS the same way
  (``lines()``, ``commands()``, ``transactions()``).  After TLS the client
  must send EHLO again (MAIL before it gets ``503``); the second EHLO reply
  does not list STARTTLS and a second STARTTLS gets ``554 5.5.1``.
* ``Connection.tls_version`` (``"TLSv1"``, ``"TLSv1.1"``, ``"TLSv1.2"``,
  ``"TLSv1.3"``: ``SSLSocket.version()``), ``Connection.tls_cipher``
  (``SSLSocket.cipher()``: ``(name, protocol, bits)``) and
  ``Connection.tls_error`` are set after the handshake (``None`` otherwise).
  New event kinds, emitted only by a TLS MX: ``tls`` (data: ``"TLSv1.3
  TLS_AES_256_GCM_SHA384 256"``), ``tls-error`` (data: why), ``discard``.
  ``lines(tls=True)`` / ``commands(tls=True)`` return only what arrived
  inside TLS (``tls=False``: only plaintext; default: all, as before), and
  each ``Transaction`` has ``tls_version`` (the version its MAIL FROM arrived
  under, ``None`` for plaintext).

CLI: ``mx.py --host 127.0.0.2 [--port 25] [--no-pipelining] [--jsonl FILE]
[--tls 1.0|1.1|1.2|1.3|default] [--starttls offer|refuse|fail|unadvertised]
[--fail close|garbage|alert|reset] [--starttls-last] [--implicit]``
serves until SIGINT/SIGTERM and prints events to stdout.
"""

import argparse
import itertools
import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field

MAX_LINE = 1 << 20  # bytes; longer lines are recorded as a partial and the connection dropped
IDLE_TIMEOUT = 120.0  # seconds without input before the MX hangs up
SIZE_LIMIT = 10240000
TLS_HANDSHAKE_TIMEOUT = 30.0  # seconds for the client's handshake after our 220
OPENSSL = "/usr/bin/openssl"

# ssl.SSLSocket.version() for each TLS version, and the names the options accept.
TLS_VERSION_NAMES = {
    ssl.TLSVersion.TLSv1: "TLSv1",
    ssl.TLSVersion.TLSv1_1: "TLSv1.1",
    ssl.TLSVersion.TLSv1_2: "TLSv1.2",
    ssl.TLSVersion.TLSv1_3: "TLSv1.3",
}
_VERSION_ALIASES = {
    "1.0": ssl.TLSVersion.TLSv1, "1": ssl.TLSVersion.TLSv1, "tlsv1": ssl.TLSVersion.TLSv1,
    "tlsv1.0": ssl.TLSVersion.TLSv1, "1.1": ssl.TLSVersion.TLSv1_1, "tlsv1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2, "tlsv1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3, "tlsv1.3": ssl.TLSVersion.TLSv1_3,
}
LEGACY_CIPHERS = "ALL:@SECLEVEL=0"  # what TLS 1.0/1.1 need on OpenSSL 3 (both ends)
STARTTLS_MODES = ("offer", "refuse", "fail", "unadvertised")
FAIL_MODES = ("close", "garbage", "alert", "reset")
# A fatal alert record: handshake_failure(40), record version TLS 1.0.
TLS_ALERT_HANDSHAKE_FAILURE = bytes([0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x28])


def tls_version(value):
    """'1.2', 'TLSv1.2', ssl.TLSVersion.TLSv1_2 ... -> ssl.TLSVersion."""
    if isinstance(value, ssl.TLSVersion):
        return value
    v = _VERSION_ALIASES.get(str(value).strip().lower())
    if v is None:
        raise ValueError("unknown TLS version %r (use 1.0, 1.1, 1.2 or 1.3)" % (value,))
    return v


@dataclass
class TLSOptions:
    """How a TestMX does STARTTLS (see the module docstring)."""
    version: object = None  # pins min and max: "1.0" | "1.1" | "1.2" | "1.3" | ssl.TLSVersion
    min_version: object = None
    max_version: object = None
    starttls: str = "offer"  # offer | refuse | fail | unadvertised
    fail: str = "close"  # with starttls="fail": close | garbage | alert | reset
    ciphers: str = None  # OpenSSL cipher string; None: default (ALL:@SECLEVEL=0 if TLS < 1.2 allowed)
    certfile: str = None
    keyfile: str = None
    starttls_keyword: str = "STARTTLS"
    starttls_last: bool = False
    implicit: bool = False  # TLS from the first byte (SMTPS), greeting inside

    def __post_init__(self):
        if self.starttls not in STARTTLS_MODES:
            raise ValueError("starttls must be one of %s, not %r" % (", ".join(STARTTLS_MODES), self.starttls))
        if self.implicit and self.starttls not in ("offer", "fail"):
            raise ValueError("implicit TLS takes starttls=\"offer\" or \"fail\", not %r" % (self.starttls,))
        if self.fail not in FAIL_MODES:
            raise ValueError("fail must be one of %s, not %r" % (", ".join(FAIL_MODES), self.fail))
        if self.version is not None:
            if self.min_version is not None or self.max_version is not None:
                raise ValueError("give version, or min_version/max_version, not both")
            self.min_version = self.max_version = self.version
        if self.min_version is not None:
            self.min_version = tls_version(self.min_version)
        if self.max_version is not None:
            self.max_version = tls_version(self.max_version)
        if self.min_version is not None and self.max_version is not None and self.min_version > self.max_version:
            raise ValueError("min_version %s is above max_version %s" % (self.min_version, self.max_version))

    @property
    def legacy(self):
        """True when the range allows TLS 1.0 or 1.1 (the context then needs @SECLEVEL=0)."""
        return self.min_version is not None and self.min_version < ssl.TLSVersion.TLSv1_2

    @property
    def advertised(self):
        return self.starttls != "unadvertised"

    def describe(self):
        lo = TLS_VERSION_NAMES.get(self.min_version, "default")
        hi = TLS_VERSION_NAMES.get(self.max_version, "default")
        rng = lo if lo == hi else "%s..%s" % (lo, hi)
        if self.implicit:
            s = "implicit TLS, %s" % rng
        else:
            s = "STARTTLS %s, %s" % (self.starttls, rng)
        return s + (" (fail: %s)" % self.fail if self.starttls == "fail" else "")

    def server_context(self):
        """A fresh server SSLContext for these options."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with warnings.catch_warnings():  # Python deprecates TLS 1.0/1.1; testing them is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            if self.min_version is not None:
                ctx.minimum_version = self.min_version
            if self.max_version is not None:
                ctx.maximum_version = self.max_version
        ciphers = self.ciphers if self.ciphers is not None else (LEGACY_CIPHERS if self.legacy else None)
        if ciphers:
            ctx.set_ciphers(ciphers)
        if self.certfile:
            ctx.load_cert_chain(self.certfile, self.keyfile)
        else:
            cert, key = self_signed_pem()
            tmp = tempfile.mkdtemp(prefix="tlsguard-mx-cert-")
            try:
                cpath, kpath = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
                with open(cpath, "w") as f:
                    f.write(cert)
                fd = os.open(kpath, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(key)
                ctx.load_cert_chain(cpath, kpath)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return ctx


_cert_lock = threading.Lock()
_cert_pem = None


def self_signed_pem():
    """(certificate PEM, key PEM): a self-signed CN=mx.test, made once per process."""
    global _cert_pem
    with _cert_lock:
        if _cert_pem is None:
            tmp = tempfile.mkdtemp(prefix="tlsguard-mx-cert-")
            try:
                cpath, kpath = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
                r = subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                                    "-subj", "/CN=mx.test", "-addext", "subjectAltName=DNS:mx.test",
                                    "-days", "2", "-keyout", kpath, "-out", cpath],
                                   capture_output=True, text=True, timeout=60)
                if r.returncode != 0:
                    raise RuntimeError("openssl req failed (exit %d): %s" % (r.returncode, r.stderr.strip()))
                with open(cpath) as f:
                    cert = f.read()
                with open(kpath) as f:
                    key = f.read()
                _cert_pem = (cert, key)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return _cert_pem


def starts_data(reply, last_command):
    """Whether a reply line starts message data: 354, or any 3xx to DATA (clients such as
    Postfix and Exim send the message after any 3xx reply to DATA)."""
    return reply.startswith("354") or (reply[:1] == "3" and last_command == "DATA")


@dataclass
class Event:
    kind: str  # open | line | partial | reply | close
    data: str
    t: float


@dataclass
class Transaction:
    """One mail transaction as the MX saw it (MAIL ... then DATA or not)."""
    mail_from: str  # the raw argument of MAIL FROM:, e.g. "<bob@mta.test>"
    rcpts: list = field(default_factory=list)  # raw RCPT arguments, accepted or not
    data: list = None  # message lines (dot-unstuffed) if DATA completed, else None
    queue_id: str = None  # the id of the 250 reply after DATA, if any
    tls_version: str = None  # "TLSv1.2" etc. if MAIL FROM arrived inside TLS, else None

    @property
    def sender(self):
        """The envelope sender without brackets or parameters ('' for <>)."""
        return _strip_addr(self.mail_from)

    @property
    def recipients(self):
        return [_strip_addr(r) for r in self.rcpts]


class Connection:
    """The record of one SMTP connection (thread-safe to read at any time)."""

    def __init__(self, mx, conn_id, peer):
        self.mx = mx
        self.id = conn_id
        self.peer = peer
        self.events = []
        self.tls_version = None  # SSLSocket.version() once a STARTTLS handshake completed
        self.tls_cipher = None  # SSLSocket.cipher(): (name, protocol, secret bits)
        self.tls_error = None  # why STARTTLS did not end in TLS, if it did not
        self._lock = threading.Lock()

    def _add(self, kind, data):
        ev = Event(kind, data, time.time())
        with self._lock:
            self.events.append(ev)
        self.mx._emit(self, ev)

    def snapshot(self):
        with self._lock:
            return list(self.events)

    @property
    def closed(self):
        return any(e.kind == "close" for e in self.snapshot())

    @property
    def tls(self):
        """True once a STARTTLS handshake completed on this connection."""
        return self.tls_version is not None

    def _received(self):
        """(event, inside TLS) for each event, in order."""
        in_tls = False
        for e in self.snapshot():
            if e.kind == "tls":
                in_tls = True
            yield e, in_tls

    def lines(self, tls=None):
        """All raw lines received, commands and message data.

        ``tls=True``: only those received inside TLS; ``False``: only plaintext ones."""
        return [e.data for e, in_tls in self._received()
                if e.kind in ("line", "partial") and (tls is None or in_tls == tls)]

    def commands(self, tls=None):
        """Received lines that were SMTP commands (not message content); ``tls`` as in ``lines``."""
        out, in_data, last = [], False, ""
        for e, in_tls in self._received():
            if e.kind == "reply" and starts_data(e.data, last):
                in_data = True
            elif e.kind in ("line", "partial"):
                if in_data:
                    if e.data == ".":
                        in_data = False
                else:
                    last = e.data.strip().upper()
                    if tls is None or in_tls == tls:
                        out.append(e.data)
        return out

    def starttls_offered(self):
        """True if any EHLO reply on this connection listed STARTTLS."""
        return any(e.kind == "reply" and e.data[:4] in ("250-", "250 ") and e.data[4:].strip().upper() == "STARTTLS"
                   for e in self.snapshot())

    def verbs(self):
        """Upper-cased first word of each command, e.g. ['EHLO', 'MAIL', ...]."""
        return [c.split(" ", 1)[0].split(":", 1)[0].upper() for c in self.commands() if c]

    def transactions(self):
        """Mail transactions parsed from the events (see ``Transaction``)."""
        out, cur, in_data, body, last = [], None, False, None, ""
        for e, in_tls in self._received():
            if e.kind == "reply":
                if starts_data(e.data, last):
                    in_data, body = True, []
                elif in_data is None and cur is not None:  # reply to end of DATA
                    if e.data.startswith("250"):
                        cur.data = body
                        cur.queue_id = e.data.rsplit(" ", 1)[-1]
                    in_data = False
                continue
            if e.kind not in ("line", "partial"):
                continue
            if in_data:
                if e.data == "." and e.kind == "line":
                    in_data = None  # the next reply settles the transaction
                else:
                    body.append(e.data[1:] if e.data.startswith(".") else e.data)
                continue
            upper = e.data.upper()
            last = upper.strip()
            if upper.startswith("MAIL FROM:"):
                cur = Transaction(mail_from=e.data[10:].strip(),
                                  tls_version=self.tls_version if in_tls else None)
                out.append(cur)
            elif upper.startswith("RCPT TO:") and cur is not None:
                cur.rcpts.append(e.data[8:].strip())
        return out

    def __repr__(self):
        tls = " %s" % self.tls_version if self.tls_version else ""
        return "<Connection %s#%d from %s%s: %s>" % (self.mx.name, self.id, self.peer, tls, self.verbs())


class ServerLifecycle:
    """Stop, context management and connection queries shared by the test servers
    (TestMX here, StripProxy in tlsproxy.py). A subclass has _stopping, _listener,
    _accept_thread, _lock, _threads, _conns, _jsonl, and returns its open client
    sockets from _open_sockets() (called with _lock held)."""

    def stop(self):
        self._stopping.set()
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
        if self._accept_thread is not None:
            self._accept_thread.join(5)
        with self._lock:
            socks = self._open_sockets()
            threads = list(self._threads)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in threads:
            t.join(5)
        with self._lock:
            if self._jsonl:
                self._jsonl.close()
                self._jsonl = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- queries ---------------------------------------------------------

    def connections(self):
        with self._lock:
            return list(self._conns)

    def wait_closed(self, timeout):
        """Wait until every connection so far is closed; return True if so."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(c.closed for c in self.connections()):
                return True
            time.sleep(0.05)
        return all(c.closed for c in self.connections())


class TestMX(ServerLifecycle):
    """A recording SMTP server on one address (see the module docstring)."""

    __test__ = False  # not a pytest test class

    def __init__(self, host, port=25, pipelining=True, name=None, jsonl_path=None, tls=None, smtputf8=False):
        if tls is not None and not isinstance(tls, TLSOptions):
            raise TypeError("tls must be None or a TLSOptions, not %r" % (tls,))
        self.tls = tls
        self._ssl_ctx = None
        self.host = host
        self.port = port
        self.pipelining = pipelining
        self.smtputf8 = smtputf8
        self.name = name or ("[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port))
        self.jsonl_path = jsonl_path
        self._jsonl = None
        self._conns = []
        self._socks = {}
        self._threads = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._qids = itertools.count(1)
        self._listener = None
        self._accept_thread = None
        self._stopping = threading.Event()
        self.on_event = None  # optional callback(conn, event), used by the CLI

    # ---- lifecycle -------------------------------------------------------

    def start(self):
        if self.tls is not None and self._ssl_ctx is None:
            self._ssl_ctx = self.tls.server_context()  # errors (bad ciphers, no openssl) before binding
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((self.host, self.port))
            s.listen(128)
        except OSError as e:
            s.close()
            raise OSError(e.errno, "test MX cannot listen on %s: %s" % (self.name, e.strerror)) from e
        if self.jsonl_path:
            self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")
        self._listener = s
        self._accept_thread = threading.Thread(target=self._accept_loop, name="mx-accept-" + self.name,
                                               daemon=True)
        self._accept_thread.start()
        return self

    def _open_sockets(self):
        return list(self._socks.values())


    def transactions(self):
        return [t for c in self.connections() for t in c.transactions()]

    # ---- internals -------------------------------------------------------

    def _emit(self, conn, ev):
        if self._jsonl is not None:
            rec = {"mx": self.name, "conn": conn.id, "t": round(ev.t, 6), "kind": ev.kind, "data": ev.data}
            line = json.dumps(rec) + "\n"  # ASCII-only: lone surrogates become \udcXX
            with self._lock:
                if self._jsonl is not None:
                    self._jsonl.write(line)
                    self._jsonl.flush()
        cb = self.on_event
        if cb is not None:
            cb(conn, ev)

    def _accept_loop(self):
        while not self._stopping.is_set():
            try:
                sock, addr = self._listener.accept()
            except OSError:
                return
            conn = Connection(self, next(self._ids), "%s:%d" % (addr[0], addr[1]))
            t = threading.Thread(target=self._serve, args=(conn, sock), daemon=True,
                                 name="mx-%s-%d" % (self.name, conn.id))
            with self._lock:
                self._conns.append(conn)
                self._socks[conn.id] = sock
                self._threads = [x for x in self._threads if x.is_alive()] + [t]
            t.start()

    def _replace_sock(self, conn, sock):
        """After STARTTLS: stop() must shut down the SSLSocket that now owns the fd."""
        with self._lock:
            if conn.id in self._socks:
                self._socks[conn.id] = sock

    def _serve(self, conn, sock):
        conn._add("open", conn.peer)
        reason = "eof"
        session = None
        try:
            sock.settimeout(IDLE_TIMEOUT)
            session = _Session(self, conn, sock)
            reason = session.run()
        except socket.timeout:
            reason = "timeout"
        except OSError as e:
            reason = "shutdown" if self._stopping.is_set() else "error: %s" % e
        finally:
            for s in ((session.sock,) if session is not None and session.sock is not sock else ()) + (sock,):
                try:
                    s.close()
                except OSError:
                    pass
            with self._lock:
                self._socks.pop(conn.id, None)
            conn._add("close", reason)

    def _next_queue_id(self):
        return "MX%s%06d" % ("".join(ch for ch in self.host if ch.isalnum())[-4:].upper(), next(self._qids))


class _Session:
    """The SMTP state machine of one connection."""

    def __init__(self, mx, conn, sock):
        self.mx, self.conn, self.sock = mx, conn, sock
        self.buf = b""
        self.helo = False
        self.mail = False
        self.rcpts = 0
        self.in_tls = False

    def send(self, *lines):
        for line in lines:
            self.conn._add("reply", line)
        self.sock.sendall("".join(line + "\r\n" for line in lines).encode("ascii"))

    def readline(self):
        """Return one received line without its terminator, or None at EOF."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                raw, self.buf = self.buf[:i], self.buf[i + 1:]
                if raw.endswith(b"\r"):
                    raw = raw[:-1]
                line = raw.decode("utf-8", "surrogateescape")
                self.conn._add("line", line)
                return line
            if len(self.buf) > MAX_LINE:
                self.conn._add("partial", self.buf.decode("utf-8", "surrogateescape"))
                self.buf = b""
                return None
            chunk = self.sock.recv(65536)
            if not chunk:
                if self.buf:
                    self.conn._add("partial", self.buf.decode("utf-8", "surrogateescape"))
                    self.buf = b""
                return None
            self.buf += chunk

    def run(self):
        tls = self.mx.tls
        if tls is not None and tls.implicit:  # SMTPS: the handshake first, the greeting inside
            end = self.break_handshake(tls.fail) if tls.starttls == "fail" else self.handshake()
            if end is not None:
                return end
        self.send("220 mx.test ESMTP tlsguard test MX")
        while True:
            line = self.readline()
            if line is None:
                return "eof"
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            if line.upper().startswith(("MAIL FROM:", "RCPT TO:")):
                verb = line[:4].upper()
                arg = line.split(":", 1)[1]
            if verb == "EHLO":
                ext = ["mx.test"]
                if self.mx.pipelining:
                    ext.append("PIPELINING")
                ext.append("SIZE %d" % SIZE_LIMIT)
                tls = self.mx.tls
                offer = tls is not None and tls.advertised and not self.in_tls
                if offer and not tls.starttls_last:
                    ext.append(tls.starttls_keyword)
                ext.append("8BITMIME")
                if self.mx.smtputf8:
                    ext.append("SMTPUTF8")
                if offer and tls.starttls_last:
                    ext.append(tls.starttls_keyword)
                self.send(*["250-" + e for e in ext[:-1]] + ["250 " + ext[-1]])
                self.helo, self.mail, self.rcpts = True, False, 0
            elif verb == "HELO":
                self.send("250 mx.test")
                self.helo, self.mail, self.rcpts = True, False, 0
            elif verb == "MAIL":
                if not self.helo:
                    self.send("503 5.5.1 Error: send HELO/EHLO first")
                elif self.mail:
                    self.send("503 5.5.1 Error: nested MAIL command")
                else:
                    self.mail, self.rcpts = True, 0
                    self.send("250 2.1.0 Ok")
            elif verb == "RCPT":
                addr = _strip_addr(arg)
                if not self.mail:
                    self.send("503 5.5.1 Error: need MAIL command")
                elif addr.lower().startswith("reject-"):
                    self.send("550 5.1.1 <%s>: Recipient address rejected: test MX rejects reject-*" % addr)
                else:
                    self.rcpts += 1
                    self.send("250 2.1.5 Ok")
            elif verb == "DATA":
                if not self.mail:
                    self.send("503 5.5.1 Error: need RCPT command")
                elif not self.rcpts:
                    self.send("554 5.5.1 Error: no valid recipients")
                else:
                    self.send("354 End data with <CR><LF>.<CR><LF>")
                    while True:
                        dline = self.readline()
                        if dline is None:
                            return "eof"
                        if dline == ".":
                            break
                    self.send("250 2.0.0 Ok: queued as %s" % self.mx._next_queue_id())
                    self.mail, self.rcpts = False, 0
            elif verb == "RSET":
                self.mail, self.rcpts = False, 0
                self.send("250 2.0.0 Ok")
            elif verb == "NOOP":
                self.send("250 2.0.0 Ok")
            elif verb == "QUIT":
                self.send("221 2.0.0 Bye")
                return "quit"
            elif verb == "STARTTLS":
                if self.mx.tls is None:
                    self.send("502 5.5.1 Error: STARTTLS not offered")
                else:
                    end = self.starttls(arg)
                    if end is not None:
                        return end
            else:
                self.send("502 5.5.2 Error: command not recognized")

    def starttls(self, arg):
        """Answer STARTTLS; return a close reason to end the session, None to go on."""
        opts, conn = self.mx.tls, self.conn
        if self.in_tls:
            self.send("554 5.5.1 Error: TLS already active")
            return None
        if arg.strip():
            self.send("501 5.5.4 Syntax: STARTTLS")
            return None
        if opts.starttls == "refuse":
            self.send("454 4.7.0 TLS not available due to local problem")
            return None
        if self.buf:  # pipelined behind STARTTLS: never executed (RFC 3207, section 4.2)
            conn._add("discard", self.buf.decode("utf-8", "surrogateescape"))
            self.buf = b""
        self.send("220 2.0.0 Ready to start TLS")
        if opts.starttls == "fail":
            return self.break_handshake(opts.fail)
        return self.handshake()

    def handshake(self):
        """Server side of the TLS handshake; return a close reason on failure, None once in TLS."""
        conn = self.conn
        self.sock.settimeout(TLS_HANDSHAKE_TIMEOUT)
        ssock = self.mx._ssl_ctx.wrap_socket(self.sock, server_side=True, do_handshake_on_connect=False)
        self.sock = ssock
        self.mx._replace_sock(conn, ssock)
        try:
            ssock.do_handshake()
        except (ssl.SSLError, OSError) as e:  # socket.timeout is an OSError too
            if self.mx._stopping.is_set():
                raise
            conn.tls_error = "handshake: %s" % e
            conn._add("tls-error", conn.tls_error)
            return "error: tls %s" % conn.tls_error
        ssock.settimeout(IDLE_TIMEOUT)
        conn.tls_cipher = ssock.cipher()
        conn.tls_version = ssock.version()
        conn._add("tls", "%s %s %s" % (conn.tls_version, conn.tls_cipher[0], conn.tls_cipher[2]))
        self.in_tls = True
        self.helo, self.mail, self.rcpts = False, False, 0  # RFC 3207: forget what came before
        return None

    def break_handshake(self, how):
        """starttls="fail": read the ClientHello, then fail the handshake on purpose."""
        got = 0
        try:
            self.sock.settimeout(10.0)
            chunk = self.sock.recv(65536)
            got += len(chunk)
            self.sock.settimeout(0.2)  # drain the rest of the flight, so that close() sends FIN, not RST
            while chunk:
                chunk = self.sock.recv(65536)
                got += len(chunk)
        except (socket.timeout, OSError):
            pass
        self.conn.tls_error = "handshake broken on purpose (%s) after %d bytes from the client" % (how, got)
        self.conn._add("tls-error", self.conn.tls_error)
        try:
            if how == "garbage":
                self.sock.sendall(b"garbage from the test MX: this is not a TLS record\r\n")
            elif how == "alert":
                self.sock.sendall(TLS_ALERT_HANDSHAKE_FAILURE)
            elif how == "reset":
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            if how != "reset":
                self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        return "error: tls %s" % self.conn.tls_error


_LINGER_RESET = struct.pack("ii", 1, 0)  # struct linger {l_onoff=1, l_linger=0}: close() sends RST


def _strip_addr(arg):
    """'<a@b> SIZE=1' -> 'a@b'."""
    arg = arg.strip()
    if arg.startswith("<"):
        return arg[1:].split(">", 1)[0]
    return arg.split(" ", 1)[0]


def main(argv=None):
    ap = argparse.ArgumentParser(description="Recording test MX (STARTTLS only with --tls).")
    ap.add_argument("--host", default="127.0.0.2", help="127.0.0.x or ::1 (default 127.0.0.2)")
    ap.add_argument("--port", type=int, default=25)
    ap.add_argument("--no-pipelining", dest="pipelining", action="store_false",
                    help="do not advertise PIPELINING")
    ap.add_argument("--jsonl", help="append every event to this JSONL file")
    ap.add_argument("--quiet", action="store_true", help="do not print events")
    ap.add_argument("--tls", metavar="VERSION", choices=["1.0", "1.1", "1.2", "1.3", "default"],
                    help="speak STARTTLS with exactly this TLS version (default: Python's 1.2..1.3)")
    ap.add_argument("--starttls", choices=STARTTLS_MODES, default="offer",
                    help="with --tls: offer (default), refuse (454), fail (220, then a broken handshake), "
                         "unadvertised (accepted, not in EHLO)")
    ap.add_argument("--fail", choices=FAIL_MODES, default="close", help="with --starttls fail: how to break it")
    ap.add_argument("--starttls-last", action="store_true", help="list STARTTLS on the last EHLO line")
    ap.add_argument("--ciphers", help="OpenSSL cipher string of the server context")
    ap.add_argument("--implicit", action="store_true",
                    help="with --tls: implicit TLS (SMTPS, port 465): the handshake right after accept")
    args = ap.parse_args(argv)
    tls = None
    if args.implicit and not args.tls:
        ap.error("--implicit needs --tls")
    if args.tls:
        tls = TLSOptions(version=None if args.tls == "default" else args.tls, starttls=args.starttls,
                         fail=args.fail, starttls_last=args.starttls_last, ciphers=args.ciphers,
                         implicit=args.implicit)
    mx = TestMX(args.host, args.port, pipelining=args.pipelining, jsonl_path=args.jsonl, tls=tls)
    if not args.quiet:
        def show(conn, ev):
            print("%s #%d %-7s %s" % (mx.name, conn.id, ev.kind, ev.data), flush=True)
        mx.on_event = show
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        mx.start()
    except (OSError, RuntimeError, ssl.SSLError) as e:
        print(e, file=sys.stderr)
        return 1
    print("listening on %s (pipelining %s%s)" % (mx.name, "on" if mx.pipelining else "off",
                                                ", " + tls.describe() if tls else ""), flush=True)
    done.wait()
    mx.stop()
    return 0

if __name__ == "__main__":
    sys.exit(main())
