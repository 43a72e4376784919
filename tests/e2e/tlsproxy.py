#!/usr/bin/python3
"""A STARTTLS-stripping man in the middle for tlsguard's end-to-end tests.

Contract
--------
* ``StripProxy(host, port=25, upstream=("127.0.0.21", 25), name=None,
  strip="remove", jsonl_path=None)`` listens on one IPv4 (127.0.0.x) or IPv6
  (``::1``) address and, for each client it accepts, opens a TCP connection to
  ``upstream`` (a (host, port) pair, loopback only) and relays bytes both ways.
  ``start()`` binds (a failure raises ``OSError`` naming the address) and
  serves from daemon threads; ``stop()`` closes the listener and every relayed
  connection and waits for the threads.  Also a context manager.
* Client to upstream: every byte is forwarded verbatim and at once.
* Upstream to client: replies are forwarded line by line, verbatim, except
  that in a ``250`` reply every line whose text is the STARTTLS keyword (any
  case, surrounding blanks allowed) is removed (``strip="remove"``) or
  replaced by ``XXXXXXXA`` (``strip="garble"``, what some firewalls do; the
  client then sees an unknown extension).  A multi-line reply is held until
  its last line has arrived, and when the removed line was the last one the
  new last line's ``250-`` becomes ``250 `` so the reply stays valid.  Each
  line keeps its own terminator (CRLF or bare LF).  ``strip=None`` relays
  everything untouched (a transparent proxy).
* If the client sends STARTTLS anyway (it is not stripped from the command
  stream) and the upstream answers ``220``, the proxy stops looking at the
  stream and relays raw bytes both ways from then on (the TLS session is
  end to end; the proxy cannot read it).
* Lines are only parsed outside DATA (between the upstream's ``354`` and the
  client's ``.``); message content is never taken for a command.
* Recording: each accepted client is a ``ProxyConnection`` with ``events``,
  a list of ``ProxyEvent(kind, data, t)``; kinds: ``open`` (data: client
  address), ``upstream`` (data: the upstream's address, or ``error: ...``),
  ``c2s`` (bytes forwarded to the upstream), ``s2c`` (bytes forwarded to
  the client), ``stripped`` (the upstream's line that was removed or
  garbled), ``fixup`` (the line whose ``-`` became a blank, as received),
  ``raw`` (the relay switched to raw bytes after STARTTLS/220), ``close``
  (data: reason).  ``data`` is ``bytes`` for ``c2s``/``s2c``/``stripped``/
  ``fixup`` and ``str`` otherwise.  Views: ``to_upstream()`` and
  ``to_client()`` (all bytes forwarded that way, joined), ``client_lines()``
  / ``upstream_lines()`` (the same, split into decoded lines),
  ``stripped()``, ``closed``.  ``StripProxy.connections()`` is a snapshot;
  ``wait_closed(timeout)`` waits until every connection is closed.  With
  ``jsonl_path`` every event is appended there as one JSON object a line:
  ``{"proxy", "conn", "t", "kind", "data"}`` (bytes decoded as UTF-8 with
  surrogateescape).

Module function: ``strip_starttls(lines, mode="remove")`` does the reply
rewrite on a list of raw reply lines (bytes, with terminators) and returns
``(new_lines, removed_lines, fixed_line_or_None)``.

CLI: ``tlsproxy.py --host 127.0.0.30 [--port 25] --upstream 127.0.0.21
[--upstream-port 25] [--garble | --transparent] [--jsonl FILE] [--quiet]``
relays until SIGINT/SIGTERM and prints events to stdout.
"""

import argparse
import itertools
import json
import re
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass

from mx import ServerLifecycle

MAX_HELD = 1 << 20  # bytes of one upstream reply held back; beyond that, relay raw
CONNECT_TIMEOUT = 10.0
GARBLED = b"XXXXXXXA"
_REPLY_LINE = re.compile(rb"^(\d{3})([ -]?)(.*?)(\r?\n)$", re.S)


@dataclass
class ProxyEvent:
    kind: str  # open | upstream | c2s | s2c | stripped | fixup | raw | close
    data: object  # bytes for c2s, s2c, stripped, fixup; str otherwise
    t: float


def _is_starttls(text):
    return text.strip().upper() == b"STARTTLS"


def strip_starttls(lines, mode="remove"):
    """Rewrite one reply (a list of raw lines with terminators).

    Returns (new_lines, removed, fixed): ``removed`` are the lines taken out
    (or garbled), ``fixed`` is the original line whose separator was changed
    from '-' to ' ' (None if none was).  Only ``250`` replies are touched.
    """
    if mode is None or not lines:
        return list(lines), [], None
    parsed = [_REPLY_LINE.match(x) for x in lines]
    if any(m is None for m in parsed) or parsed[0].group(1) != b"250":
        return list(lines), [], None
    out, removed = [], []
    for i, (raw, m) in enumerate(zip(lines, parsed)):
        if i > 0 and _is_starttls(m.group(3)):  # line 0 is the greeting domain, never a keyword
            removed.append(raw)
            if mode == "garble":
                out.append(m.group(1) + m.group(2) + GARBLED + m.group(4))
            continue
        out.append(raw)
    fixed = None
    if removed and mode == "remove":
        last = _REPLY_LINE.match(out[-1])
        if last.group(2) == b"-":
            fixed = out[-1]
            out[-1] = last.group(1) + b" " + last.group(3) + last.group(4)
    return out, removed, fixed


class ProxyConnection:
    """The record of one relayed client connection (thread-safe to read)."""

    def __init__(self, proxy, conn_id, peer):
        self.proxy = proxy
        self.id = conn_id
        self.peer = peer
        self.events = []
        self._lock = threading.Lock()
        # relay state, shared by the two directions
        self.in_data = False  # between the upstream's 354 and the client's "."
        self.starttls_pending = False  # the client sent STARTTLS; its reply is not in yet
        self.raw = False  # TLS started end to end: no more parsing

    def _add(self, kind, data):
        ev = ProxyEvent(kind, data, time.time())
        with self._lock:
            self.events.append(ev)
        self.proxy._emit(self, ev)

    def snapshot(self):
        with self._lock:
            return list(self.events)

    @property
    def closed(self):
        return any(e.kind == "close" for e in self.snapshot())

    def to_upstream(self):
        return b"".join(e.data for e in self.snapshot() if e.kind == "c2s")

    def to_client(self):
        return b"".join(e.data for e in self.snapshot() if e.kind == "s2c")

    def client_lines(self):
        """What the client was sent, as decoded lines without terminators."""
        return _lines(self.to_client())

    def upstream_lines(self):
        """What the upstream was sent, as decoded lines without terminators."""
        return _lines(self.to_upstream())

    def stripped(self):
        return [e.data for e in self.snapshot() if e.kind == "stripped"]

    def __repr__(self):
        return "<ProxyConnection %s#%d from %s: %d stripped>" % (self.proxy.name, self.id, self.peer,
                                                                len(self.stripped()))


def _lines(data):
    text = data.decode("utf-8", "surrogateescape")
    out = text.split("\n")
    if out and out[-1] == "":
        out.pop()
    return [x[:-1] if x.endswith("\r") else x for x in out]


class StripProxy(ServerLifecycle):
    """See the module docstring."""

    __test__ = False

    def __init__(self, host, port=25, upstream=("127.0.0.21", 25), name=None, strip="remove", jsonl_path=None):
        if strip not in (None, "remove", "garble"):
            raise ValueError("strip must be 'remove', 'garble' or None, not %r" % (strip,))
        self.host, self.port = host, port
        self.upstream = (upstream[0], int(upstream[1]))
        self.strip = strip
        self.name = name or _fmt(host, port)
        self.jsonl_path = jsonl_path
        self._jsonl = None
        self._conns = []
        self._socks = []
        self._threads = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._listener = None
        self._accept_thread = None
        self._stopping = threading.Event()
        self.on_event = None  # optional callback(conn, event)

    # ---- lifecycle -------------------------------------------------------

    def start(self):
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
            raise OSError(e.errno, "STARTTLS-stripping proxy cannot listen on %s: %s" % (self.name, e.strerror)) from e
        if self.jsonl_path:
            self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")
        self._listener = s
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True,
                                               name="proxy-accept-" + self.name)
        self._accept_thread.start()
        return self

    def _open_sockets(self):
        return list(self._socks)

    # ---- internals -------------------------------------------------------

    def _emit(self, conn, ev):
        if self._jsonl is not None:
            data = ev.data.decode("utf-8", "surrogateescape") if isinstance(ev.data, bytes) else ev.data
            rec = {"proxy": self.name, "conn": conn.id, "t": round(ev.t, 6), "kind": ev.kind, "data": data}
            line = json.dumps(rec) + "\n"
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
                client, addr = self._listener.accept()
            except OSError:
                return
            conn = ProxyConnection(self, next(self._ids), _fmt(addr[0], addr[1]))
            t = threading.Thread(target=self._relay, args=(conn, client), daemon=True,
                                 name="proxy-%s-%d" % (self.name, conn.id))
            with self._lock:
                self._conns.append(conn)
                self._socks.append(client)
                self._threads = [x for x in self._threads if x.is_alive()] + [t]
            t.start()

    def _relay(self, conn, client):
        conn._add("open", conn.peer)
        upstream = None
        reasons = []
        try:
            try:
                upstream = socket.create_connection(self.upstream, timeout=CONNECT_TIMEOUT)
                upstream.settimeout(None)
            except OSError as e:
                conn._add("upstream", "error: %s" % e)
                reasons.append("upstream connect failed: %s" % e)
                return
            conn._add("upstream", _fmt(*self.upstream))
            with self._lock:
                self._socks.append(upstream)
            if self._stopping.is_set():
                reasons.append("shutdown")
                return
            back = threading.Thread(target=self._pump_s2c, args=(conn, upstream, client, reasons), daemon=True,
                                    name="proxy-%s-%d-s2c" % (self.name, conn.id))
            back.start()
            self._pump_c2s(conn, client, upstream, reasons)
            back.join()
        finally:
            for s in (client, upstream):
                if s is None:
                    continue
                try:
                    s.close()
                except OSError:
                    pass
                with self._lock:
                    if s in self._socks:
                        self._socks.remove(s)
            reason = "shutdown" if self._stopping.is_set() else ("; ".join(reasons) or "eof")
            conn._add("close", reason)

    def _pump_c2s(self, conn, client, upstream, reasons):
        """Client -> upstream: verbatim; watch for STARTTLS and the end of DATA."""
        buf = b""
        try:
            while True:
                chunk = client.recv(65536)
                if not chunk:
                    reasons.append("client eof")
                    break
                if not conn.raw:
                    buf += chunk
                    while True:
                        i = buf.find(b"\n")
                        if i < 0:
                            break
                        line, buf = buf[:i].rstrip(b"\r"), buf[i + 1:]
                        if conn.in_data:
                            if line == b".":
                                conn.in_data = False
                        elif line.strip().upper() == b"STARTTLS":
                            conn.starttls_pending = True  # before forwarding: the 220 may come back at once
                    if len(buf) > MAX_HELD:
                        buf = b""
                conn._add("c2s", chunk)
                upstream.sendall(chunk)
        except OSError as e:
            reasons.append("client->upstream: %s" % e)
        finally:
            try:
                upstream.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _pump_s2c(self, conn, upstream, client, reasons):
        """Upstream -> client: whole replies, with STARTTLS taken out of 250 replies."""
        buf = b""
        held = []  # lines of a multi-line reply whose last line has not arrived
        try:
            while True:
                chunk = upstream.recv(65536)
                if not chunk:
                    reasons.append("upstream eof")
                    break
                if conn.raw:
                    self._to_client(conn, client, chunk)
                    continue
                buf += chunk
                while buf and not conn.raw:
                    i = buf.find(b"\n")
                    if i < 0:
                        if len(buf) + sum(map(len, held)) > MAX_HELD:  # not SMTP: give up parsing
                            self._to_client(conn, client, b"".join(held) + buf)
                            held, buf = [], b""
                            conn.raw = True
                            conn._add("raw", "upstream sent more than %d bytes without a reply end" % MAX_HELD)
                        break
                    line, buf = buf[:i + 1], buf[i + 1:]
                    held.append(line)
                    m = _REPLY_LINE.match(line)
                    if m is not None and m.group(2) == b"-":
                        continue  # more lines of this reply to come
                    self._reply(conn, client, held)
                    held = []
                if conn.raw and buf:  # TLS bytes right behind the 220 (should not happen)
                    self._to_client(conn, client, buf)
                    buf = b""
        except OSError as e:
            reasons.append("upstream->client: %s" % e)
        finally:
            rest = b"".join(held) + buf
            if rest:
                try:
                    self._to_client(conn, client, rest)
                except OSError:
                    pass
            try:
                client.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _reply(self, conn, client, lines):
        code = lines[0][:3]
        if code == b"354":
            conn.in_data = True  # before forwarding: the client sends the body once it sees 354
        if conn.starttls_pending:
            conn.starttls_pending = False
            if code == b"220":
                conn.raw = True
                conn._add("raw", "client sent STARTTLS and the upstream said 220: relaying raw bytes")
        new, removed, fixed = strip_starttls(lines, self.strip)
        for r in removed:
            conn._add("stripped", r)
        if fixed is not None:
            conn._add("fixup", fixed)
        self._to_client(conn, client, b"".join(new))

    def _to_client(self, conn, client, data):
        conn._add("s2c", data)
        client.sendall(data)


def _fmt(host, port):
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def main(argv=None):
    ap = argparse.ArgumentParser(description="TCP proxy that strips STARTTLS from the upstream's EHLO reply.")
    ap.add_argument("--host", required=True, help="listen address: 127.0.0.x or ::1")
    ap.add_argument("--port", type=int, default=25)
    ap.add_argument("--upstream", required=True, help="the real MX: 127.0.0.y or ::1")
    ap.add_argument("--upstream-port", type=int, default=25)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--garble", action="store_true", help="replace STARTTLS by XXXXXXXA instead of removing it")
    mode.add_argument("--transparent", action="store_true", help="strip nothing (a plain relay)")
    ap.add_argument("--jsonl", help="append every event to this JSONL file")
    ap.add_argument("--quiet", action="store_true", help="do not print events")
    args = ap.parse_args(argv)
    strip = None if args.transparent else ("garble" if args.garble else "remove")
    proxy = StripProxy(args.host, args.port, (args.upstream, args.upstream_port), strip=strip, jsonl_path=args.jsonl)
    if not args.quiet:
        def show(conn, ev):
            data = ev.data.decode("utf-8", "backslashreplace") if isinstance(ev.data, bytes) else ev.data
            print("%s #%d %-8s %r" % (proxy.name, conn.id, ev.kind, data), flush=True)
        proxy.on_event = show
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        proxy.start()
    except OSError as e:
        print(e, file=sys.stderr)
        return 1
    print("relaying %s -> %s (STARTTLS: %s)" % (proxy.name, _fmt(*proxy.upstream), strip or "untouched"), flush=True)
    done.wait()
    proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
