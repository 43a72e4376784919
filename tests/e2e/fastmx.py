#!/usr/bin/python3
"""A fast, lean recording SMTP sink for volume tests (asyncio, one process).

Usage:
    fastmx.py --out FILE --cert PEM --key PEM HOST:PORT:MODE...

MODE is ``plain`` (no STARTTLS offered), ``tls13`` or ``tls10`` (STARTTLS
offered; the handshake is pinned to TLS 1.3 or to TLS 1.0, real OpenSSL).
Many connections at once, pipelining, no per-event memory: unlike mx.py
(which keeps every event of every connection, for the functional suites),
this sink keeps nothing and appends one line per fact to FILE:

    O <host> <peer port>                a connection opened
    T <host> <peer port> <version>      its TLS handshake ended (TLSv1.3, TLSv1)
    M <host> <peer port> <tls> <sender> a MAIL command   (<tls>: the version, or -)
    R <host> <peer port> <tls> <rcpt>   a RCPT command
    D <host> <peer port> <tls> <marker> a message accepted after DATA; <marker>
                                        is the value of its X-Soak-Marker header,
                                        or - when it has none
    C <host> <peer port>                the connection closed

Addresses are written as the client wrote them, without the angle brackets.
Replies: 220 greeting, EHLO (PIPELINING, 8BITMIME, STARTTLS when offered),
250 to MAIL, RCPT, RSET, NOOP, 354 to DATA and 250 after the final dot, 221
to QUIT (then close), 502 to anything else.  The file is flushed once a
second and on SIGTERM/SIGINT, after which the sink exits 0.  It prints
``ready`` on stdout once every listener is bound.
"""

import argparse
import asyncio
import signal
import ssl
import sys

MAX_LINE = 1 << 16
IDLE = 300.0


class Sink:
    def __init__(self, out, cert, key):
        self.out = open(out, "a", buffering=1 << 20)
        self.ctx = {}
        for mode, ver in (("tls13", ssl.TLSVersion.TLSv1_3), ("tls10", ssl.TLSVersion.TLSv1)):
            c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            c.minimum_version = c.maximum_version = ver
            if ver == ssl.TLSVersion.TLSv1:
                c.set_ciphers("ALL:@SECLEVEL=0")  # OpenSSL 3 refuses TLS 1.0 above level 0
            c.load_cert_chain(cert, key)
            self.ctx[mode] = c

    def log(self, *fields):
        self.out.write(" ".join(str(f) for f in fields) + "\n")

    async def serve(self, host, mode, reader, writer):
        peer = writer.get_extra_info("peername")[1]
        tls = "-"
        self.log("O", host, peer)
        try:
            writer.write(b"220 fastmx.test ESMTP\r\n")
            while True:
                try:
                    line = await asyncio.wait_for(reader.readuntil(b"\n"), IDLE)
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError):
                    return
                text = line.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
                verb = text[:4].upper()
                arg = text[4:].strip()
                if verb in ("EHLO", "HELO"):
                    caps = ["fastmx.test", "PIPELINING", "8BITMIME"]
                    if mode != "plain" and tls == "-":
                        caps.append("STARTTLS")
                    writer.write("".join("250%s%s\r\n" % ("-" if i < len(caps) - 1 else " ", c)
                                         for i, c in enumerate(caps)).encode())
                elif text.upper() == "STARTTLS" and mode != "plain" and tls == "-":
                    writer.write(b"220 2.0.0 Ready to start TLS\r\n")
                    await writer.drain()
                    try:
                        await writer.start_tls(self.ctx[mode], ssl_handshake_timeout=60)
                    except (ssl.SSLError, OSError, asyncio.TimeoutError, ConnectionError):
                        return
                    tls = writer.get_extra_info("ssl_object").version()
                    self.log("T", host, peer, tls)
                elif verb == "MAIL":
                    self.log("M", host, peer, tls, addr(arg))
                    writer.write(b"250 2.1.0 Ok\r\n")
                elif verb == "RCPT":
                    self.log("R", host, peer, tls, addr(arg))
                    writer.write(b"250 2.1.5 Ok\r\n")
                elif verb == "DATA":
                    writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    await writer.drain()
                    marker = "-"
                    while True:
                        body = await asyncio.wait_for(reader.readuntil(b"\n"), IDLE)
                        b = body.rstrip(b"\r\n")
                        if b == b".":
                            break
                        if marker == "-" and b[:15].lower() == b"x-soak-marker: ":
                            marker = b[15:].decode("ascii", "replace").strip()
                    self.log("D", host, peer, tls, marker)
                    writer.write(b"250 2.0.0 Ok: queued\r\n")
                elif verb in ("RSET", "NOOP"):
                    writer.write(b"250 2.0.0 Ok\r\n")
                elif verb == "QUIT":
                    writer.write(b"221 2.0.0 Bye\r\n")
                    await writer.drain()
                    return
                else:
                    writer.write(b"502 5.5.2 Error: command not recognized\r\n")
                if not reader._buffer:  # answer a pipelined group in one go
                    await writer.drain()
        except (OSError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                asyncio.TimeoutError, ssl.SSLError):
            pass
        finally:
            self.log("C", host, peer)
            writer.close()


def addr(arg):
    _, _, rest = arg.partition(":")
    rest = rest.strip()
    if rest.startswith("<"):
        rest = rest[1:].partition(">")[0]
    else:
        rest = rest.split(" ")[0]
    return rest or "<>"


async def main_async(args):
    sink = Sink(args.out, args.cert, args.key)
    servers = []
    for spec in args.listen:
        host, port, mode = spec.rsplit(":", 2)
        if mode not in ("plain", "tls13", "tls10"):
            raise SystemExit("fastmx: %s: mode must be plain, tls13 or tls10" % spec)

        def cb(r, w, host=host, mode=mode):
            return sink.serve(host, mode, r, w)
        servers.append(await asyncio.start_server(cb, host, int(port), backlog=4096, limit=MAX_LINE,
                                                  reuse_address=True))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    print("ready", flush=True)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.TimeoutError:
            pass
        sink.out.flush()
    for s in servers:
        s.close()
    sink.out.flush()
    sink.out.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("listen", nargs="+", help="HOST:PORT:plain|tls13|tls10")
    args = ap.parse_args(argv)
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
