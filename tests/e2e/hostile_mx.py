#!/usr/bin/python3
"""Hostile test MX: a small recording SMTP server that misbehaves on purpose.

Used by ``framing_run.py`` ("Replies from hostile hosts", issue 7).  It records
what it receives with ``mx.Connection`` (the same ``events``, ``lines()``,
``commands()`` views as ``mx.TestMX``), so the checks can say exactly which
bytes of an envelope reached it.

``HostileMX(host, port=25, name=None, **knobs)``; ``start()`` / ``stop()`` /
``connections()`` as in ``mx.TestMX``.  Knobs (all optional):

* ``pre_greeting`` (bytes): sent before the greeting.
* ``greeting`` (bytes): default ``220 hostile.test ESMTP\\r\\n``.
* ``ehlo`` (list of str): the EHLO reply lines, with their ``250-``/``250 ``
  prefixes, without CRLF.  Default: ``hostile.test``, ``PIPELINING``,
  ``8BITMIME``.
* ``ehlo_split`` (list of int): send the EHLO reply in writes of these sizes
  (cycled), with ``ehlo_gap`` seconds between writes (TCP_NODELAY is set, so
  each write is its own segment); ``ehlo_cuts`` (list of int): extra offsets
  to cut at (inside a keyword, between CR and LF).  Default: one write.
* ``starttls``: ``"absent"`` (502, as a host that does not know it),
  ``"refuse"`` (454), ``"raw"`` (220, read the client's first TLS record,
  send ``flight`` bytes, then ``flight_after``; then discard the client's TLS
  records and go on reading plaintext SMTP lines from the first byte that
  is not a TLS record), ``"tls"`` (220 and a real handshake with the
  ``mx.TLSOptions`` given as ``tls``; with ``unwrap=True`` a client
  close_notify returns the session to plaintext instead of ending it).
* ``tls_prefix`` (bytes): with ``starttls="tls"``, sent once the client's
  ClientHello has arrived and before the real handshake answers it, as an
  on-path inserter would put records in front of an honest server's first
  flight (e.g. a HelloRequest, which the client's library skips).
* ``chunking`` (bool): implement ``BDAT n [LAST]`` (RFC 3030): the chunk is
  read by count and recorded as one ``chunk`` event (never as lines).
  Without it BDAT gets ``502`` and whatever follows is read as lines, as a
  host that does not know BDAT does.
* ``presend`` (bytes): sent unasked 0.1 s after the reply to the end of
  each DATA body, as a host that answers the next transaction before it
  comes (replies queued ahead on a reused connection, or part of one).
* ``replies`` (dict): scripted replies that replace the normal ones, each a
  list used in order (then the normal reply): keys ``RCPT``, ``DATA``,
  ``DOT`` (the reply to the end of a DATA body), ``RSET``, ``MAIL``.

Extra event kinds: ``tls-client`` (data: bytes of a client TLS record read
and discarded in ``raw`` mode), ``raw-sent`` (what ``raw`` sent after 220,
hex), ``tls`` (data: ``"TLSv1 CIPHER BITS"``), ``tls-error``, ``tls-end``
(the client left TLS: ``unwrap``), ``chunk`` (data: the chunk text).
"""

import itertools
import socket
import ssl
import threading
import time

from mx import Connection

IDLE = 30.0
REC_MAX = 16384 + 2048


class HostileMX:
    __test__ = False

    def __init__(self, host, port=25, name=None, pre_greeting=b"", greeting=b"220 hostile.test ESMTP\r\n",
                 ehlo=None, ehlo_split=None, ehlo_cuts=(), ehlo_gap=0.001, starttls="absent", flight=b"",
                 flight_after=b"", tls=None, unwrap=False, chunking=False, replies=None, tls_prefix=b"",
                 presend=b""):
        if starttls not in ("absent", "refuse", "raw", "tls"):
            raise ValueError("starttls: absent, refuse, raw or tls, not %r" % (starttls,))
        self.host, self.port = host, port
        self.name = name or "%s:%d" % (host, port)
        self.pre_greeting, self.greeting = pre_greeting, greeting
        self.ehlo = ehlo or ["250-hostile.test", "250-PIPELINING", "250 8BITMIME"]
        self.ehlo_split, self.ehlo_cuts, self.ehlo_gap = ehlo_split, tuple(ehlo_cuts), ehlo_gap
        self.starttls, self.flight, self.flight_after = starttls, flight, flight_after
        self.tls, self.unwrap, self.chunking = tls, unwrap, chunking
        self.tls_prefix = tls_prefix
        self.presend = presend
        self.replies = {k: list(v) for k, v in (replies or {}).items()}
        self._ctx = None
        self._conns, self._socks, self._threads = [], {}, []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._listener = None
        self._stopping = threading.Event()
        self._accept = None

    # what mx.Connection needs of its server
    def _emit(self, conn, ev):
        pass

    def ehlo_bytes(self):
        return "".join(x + "\r\n" for x in self.ehlo).encode("utf-8")

    def start(self):
        if self.starttls == "tls":
            self._ctx = self.tls.server_context()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((self.host, self.port))
            s.listen(16)
        except OSError as e:
            s.close()
            raise OSError(e.errno, "hostile MX cannot listen on %s: %s" % (self.name, e.strerror)) from e
        self._listener = s
        self._accept = threading.Thread(target=self._accept_loop, daemon=True, name="hostile-" + self.name)
        self._accept.start()
        return self

    def stop(self):
        self._stopping.set()
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
        if self._accept is not None:
            self._accept.join(5)
        with self._lock:
            socks, threads = list(self._socks.values()), list(self._threads)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in threads:
            t.join(5)

    def connections(self):
        with self._lock:
            return list(self._conns)

    def _accept_loop(self):
        while not self._stopping.is_set():
            try:
                sock, addr = self._listener.accept()
            except OSError:
                return
            conn = Connection(self, next(self._ids), "%s:%d" % addr)
            t = threading.Thread(target=self._serve, args=(conn, sock), daemon=True)
            with self._lock:
                self._conns.append(conn)
                self._socks[conn.id] = sock
                self._threads = [x for x in self._threads if x.is_alive()] + [t]
            t.start()

    def _serve(self, conn, sock):
        conn._add("open", conn.peer)
        why = "eof"
        sess = _Session(self, conn, sock)
        try:
            sock.settimeout(IDLE)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            why = sess.run()
        except socket.timeout:
            why = "timeout"
        except (OSError, ssl.SSLError) as e:
            why = "shutdown" if self._stopping.is_set() else "error: %s" % e
        finally:
            for s in {id(sess.sock): sess.sock, id(sock): sock}.values():
                try:
                    s.close()
                except OSError:
                    pass
            with self._lock:
                self._socks.pop(conn.id, None)
            conn._add("close", why)


class _Session:
    def __init__(self, mx, conn, sock):
        self.mx, self.conn, self.sock = mx, conn, sock
        self.buf = b""
        self.in_tls = False

    # ---- I/O
    def _recv(self):
        try:
            chunk = self.sock.recv(65536)
        except ssl.SSLError as e:
            self.conn._add("tls-error", "read: %s" % e)
            return b""
        if not chunk and self.in_tls and self.mx.unwrap:
            try:
                self.sock = self.sock.unwrap()
                self.in_tls = False
                self.conn._add("tls-end", "client close_notify: plaintext again")
                return self.sock.recv(65536)
            except (OSError, ssl.SSLError) as e:
                self.conn._add("tls-error", "unwrap: %s" % e)
                return b""
        return chunk

    def _fill(self, n):
        while len(self.buf) < n:
            chunk = self._recv()
            if not chunk:
                return False
            self.buf += chunk
        return True

    def send(self, *lines):
        for line in lines:
            self.conn._add("reply", line)
        self.sock.sendall("".join(x + "\r\n" for x in lines).encode("utf-8", "surrogateescape"))

    def reply(self, key, default):
        q = self.mx.replies.get(key)
        self.send(q.pop(0) if q else default)

    def readline(self):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                raw, self.buf = self.buf[:i], self.buf[i + 1:]
                if raw.endswith(b"\r"):
                    raw = raw[:-1]
                line = raw.decode("utf-8", "surrogateescape")
                self.conn._add("line", line)
                return line
            if len(self.buf) > (1 << 20):
                self.conn._add("partial", self.buf.decode("utf-8", "surrogateescape"))
                return None
            chunk = self._recv()
            if not chunk:
                if self.buf:
                    self.conn._add("partial", self.buf.decode("utf-8", "surrogateescape"))
                    self.buf = b""
                return None
            self.buf += chunk

    def read_tls_record(self):
        """One client TLS record (bytes), or None if the next byte does not start one."""
        if not self._fill(1):
            return None
        if not (20 <= self.buf[0] <= 23):
            return None
        if not self._fill(5):
            return None
        if self.buf[1] != 3:
            return None
        n = int.from_bytes(self.buf[3:5], "big")
        if n == 0 or n > REC_MAX or not self._fill(5 + n):
            return None
        rec, self.buf = self.buf[:5 + n], self.buf[5 + n:]
        self.conn._add("tls-client", "type %d, %d bytes" % (rec[0], len(rec)))
        return rec

    def send_ehlo(self):
        data = self.mx.ehlo_bytes()
        for line in self.mx.ehlo:
            self.conn._add("reply", line)
        sizes = self.mx.ehlo_split
        if not sizes:
            self.sock.sendall(data)
            return
        cuts, pos, it = set(self.mx.ehlo_cuts), 0, itertools.cycle(sizes)
        while pos < len(data):
            end = min(len(data), pos + next(it))
            inner = [c for c in cuts if pos < c < end]
            if inner:
                end = min(inner)
            self.sock.sendall(data[pos:end])
            pos = end
            if self.mx.ehlo_gap:
                time.sleep(self.mx.ehlo_gap)

    # ---- the conversation
    def run(self):
        if self.mx.pre_greeting:
            self.conn._add("reply", "(pre-greeting) %r" % self.mx.pre_greeting)
            self.sock.sendall(self.mx.pre_greeting)
            time.sleep(0.05)
        self.conn._add("reply", self.mx.greeting.decode("latin-1").rstrip("\r\n"))
        self.sock.sendall(self.mx.greeting)
        mail = False
        while True:
            line = self.readline()
            if line is None:
                return "eof"
            words = line.split(" ", 1)
            verb = words[0].upper()
            arg = words[1] if len(words) > 1 else ""
            if line.upper().startswith(("MAIL FROM:", "RCPT TO:")):
                verb = line[:4].upper()
            if verb in ("EHLO", "HELO"):
                self.send_ehlo() if verb == "EHLO" else self.send("250 hostile.test")
                mail = False
            elif verb == "MAIL":
                mail = True
                self.reply("MAIL", "250 2.1.0 Ok")
            elif verb == "RCPT":
                self.reply("RCPT", "250 2.1.5 Ok")
            elif verb == "DATA":
                q = self.mx.replies.get("DATA")
                r = q.pop(0) if q else "354 End data with <CR><LF>.<CR><LF>"
                self.send(r)
                if r.startswith("3"):  # the client sends the message after any 3xx
                    while True:
                        d = self.readline()
                        if d is None:
                            return "eof"
                        if d == ".":
                            break
                    self.reply("DOT", "250 2.0.0 Ok: queued as HOSTILE%d" % self.conn.id)
                    mail = False
                    if self.mx.presend:
                        time.sleep(0.1)
                        self.conn._add("reply", "(unasked) %r" % self.mx.presend)
                        self.sock.sendall(self.mx.presend)
            elif verb == "BDAT" and self.mx.chunking:
                parts = arg.split()
                if not parts or not parts[0].isdigit():
                    self.send("501 5.5.4 Syntax: BDAT size [LAST]")
                    continue
                n = int(parts[0])
                if not self._fill(n):
                    return "eof"
                chunk, self.buf = self.buf[:n], self.buf[n:]
                self.conn._add("chunk", chunk.decode("utf-8", "surrogateescape"))
                if not mail:
                    self.send("503 5.5.1 Error: need MAIL command")
                else:
                    self.send("250 2.0.0 Ok: %d octets%s" % (n, ", queued" if "LAST" in arg.upper() else ""))
                    if "LAST" in arg.upper():
                        mail = False
            elif verb == "RSET":
                mail = False
                self.reply("RSET", "250 2.0.0 Ok")
            elif verb == "NOOP":
                self.send("250 2.0.0 Ok")
            elif verb == "QUIT":
                self.send("221 2.0.0 Bye")
                return "quit"
            elif verb == "STARTTLS" and not self.in_tls:
                end = self.starttls()
                if end:
                    return end
            else:
                self.send("502 5.5.2 Error: command not recognized")

    def starttls(self):
        how = self.mx.starttls
        if how == "absent":
            self.send("502 5.5.1 Error: STARTTLS not offered")
            return None
        if how == "refuse":
            self.send("454 4.7.0 TLS not available due to local problem")
            return None
        self.send("220 2.0.0 Ready to start TLS")
        if how == "raw":
            if self.read_tls_record() is None:  # the ClientHello
                self.conn._add("tls-error", "no ClientHello")
                return None
            out = self.mx.flight + self.mx.flight_after
            self.conn._add("raw-sent", out.hex())
            self.sock.sendall(self.mx.flight)
            if self.mx.flight_after:
                time.sleep(0.02)
                self.sock.sendall(self.mx.flight_after)
            # The client fails the handshake: discard its records (alerts),
            # then read plaintext again from the first byte that is not TLS.
            while self.read_tls_record() is not None:
                pass
            return None
        # a real handshake
        if self.buf:
            self.conn._add("discard", self.buf.decode("utf-8", "surrogateescape"))
            self.buf = b""
        if self.mx.tls_prefix:
            # The ClientHello stays queued for the handshake below.
            self.sock.settimeout(IDLE)
            if not self.sock.recv(1, socket.MSG_PEEK):
                return "eof"
            self.sock.sendall(self.mx.tls_prefix)
            self.conn._add("raw-sent", self.mx.tls_prefix.hex())
        ss = self.mx._ctx.wrap_socket(self.sock, server_side=True, do_handshake_on_connect=False)
        self.sock = ss
        with self.mx._lock:
            self.mx._socks[self.conn.id] = ss
        try:
            ss.do_handshake()
        except (ssl.SSLError, OSError) as e:
            self.conn.tls_error = str(e)
            self.conn._add("tls-error", "handshake: %s" % e)
            return "error: tls %s" % e
        self.in_tls = True
        self.conn.tls_version = ss.version()
        self.conn.tls_cipher = ss.cipher()
        self.conn._add("tls", "%s %s %s" % (ss.version(), ss.cipher()[0], ss.cipher()[2]))
        return None
