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
* It never offers STARTTLS (``tls`` is reserved for later issues; anything
  but ``None`` raises ``NotImplementedError``).  A client that sends STARTTLS
  anyway gets ``502 5.5.1``.
* Replies: ``220`` greeting; EHLO gets a multi-line ``250`` with PIPELINING
  (only when ``pipelining`` is on), SIZE and 8BITMIME; HELO, MAIL, RCPT,
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

CLI: ``mx.py --host 127.0.0.2 [--port 25] [--no-pipelining] [--jsonl FILE]``
serves until SIGINT/SIGTERM and prints events to stdout.
"""

import argparse
import itertools
import json
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field

MAX_LINE = 1 << 20  # bytes; longer lines are recorded as a partial and the connection dropped
IDLE_TIMEOUT = 120.0  # seconds without input before the MX hangs up
SIZE_LIMIT = 10240000


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

    def lines(self):
        """All raw lines received, commands and message data."""
        return [e.data for e in self.snapshot() if e.kind in ("line", "partial")]

    def commands(self):
        """Received lines that were SMTP commands (not message content)."""
        out, in_data = [], False
        for e in self.snapshot():
            if e.kind == "reply" and e.data.startswith("354"):
                in_data = True
            elif e.kind in ("line", "partial"):
                if in_data:
                    if e.data == ".":
                        in_data = False
                else:
                    out.append(e.data)
        return out

    def verbs(self):
        """Upper-cased first word of each command, e.g. ['EHLO', 'MAIL', ...]."""
        return [c.split(" ", 1)[0].split(":", 1)[0].upper() for c in self.commands() if c]

    def transactions(self):
        """Mail transactions parsed from the events (see ``Transaction``)."""
        out, cur, in_data, body = [], None, False, None
        for e in self.snapshot():
            if e.kind == "reply":
                if e.data.startswith("354"):
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
            if upper.startswith("MAIL FROM:"):
                cur = Transaction(mail_from=e.data[10:].strip())
                out.append(cur)
            elif upper.startswith("RCPT TO:") and cur is not None:
                cur.rcpts.append(e.data[8:].strip())
        return out

    def __repr__(self):
        return "<Connection %s#%d from %s: %s>" % (self.mx.name, self.id, self.peer, self.verbs())


class TestMX:
    """A recording SMTP server on one address (see the module docstring)."""

    __test__ = False  # not a pytest test class

    def __init__(self, host, port=25, pipelining=True, name=None, jsonl_path=None, tls=None):
        if tls is not None:
            raise NotImplementedError("TLS on the test MX is not implemented yet")
        self.host = host
        self.port = port
        self.pipelining = pipelining
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
            socks = list(self._socks.values())
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

    def _serve(self, conn, sock):
        conn._add("open", conn.peer)
        reason = "eof"
        try:
            sock.settimeout(IDLE_TIMEOUT)
            reason = _Session(self, conn, sock).run()
        except socket.timeout:
            reason = "timeout"
        except OSError as e:
            reason = "shutdown" if self._stopping.is_set() else "error: %s" % e
        finally:
            try:
                sock.close()
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
                ext += ["SIZE %d" % SIZE_LIMIT, "8BITMIME"]
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
                self.send("502 5.5.1 Error: STARTTLS not offered")
            else:
                self.send("502 5.5.2 Error: command not recognized")


def _strip_addr(arg):
    """'<a@b> SIZE=1' -> 'a@b'."""
    arg = arg.strip()
    if arg.startswith("<"):
        return arg[1:].split(">", 1)[0]
    return arg.split(" ", 1)[0]


def main(argv=None):
    ap = argparse.ArgumentParser(description="Recording test MX (never offers STARTTLS).")
    ap.add_argument("--host", default="127.0.0.2", help="127.0.0.x or ::1 (default 127.0.0.2)")
    ap.add_argument("--port", type=int, default=25)
    ap.add_argument("--no-pipelining", dest="pipelining", action="store_false",
                    help="do not advertise PIPELINING")
    ap.add_argument("--jsonl", help="append every event to this JSONL file")
    ap.add_argument("--quiet", action="store_true", help="do not print events")
    args = ap.parse_args(argv)
    mx = TestMX(args.host, args.port, pipelining=args.pipelining, jsonl_path=args.jsonl)
    if not args.quiet:
        def show(conn, ev):
            print("%s #%d %-7s %s" % (mx.name, conn.id, ev.kind, ev.data), flush=True)
        mx.on_event = show
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        mx.start()
    except OSError as e:
        print(e, file=sys.stderr)
        return 1
    print("listening on %s (pipelining %s)" % (mx.name, "on" if mx.pipelining else "off"), flush=True)
    done.wait()
    mx.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
