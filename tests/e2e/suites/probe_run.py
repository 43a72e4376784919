#!/usr/bin/python3
"""End-to-end run of ``tlsguardctl probe``: test MX hosts, real handshakes, a DNS server from Debian.

Usage (as root, for port 25 and the packages; builds nothing):
    /usr/bin/python3 tests/e2e/suites/probe_run.py [--tlsguardctl build/tlsguardctl] [--keep] [-v]

What it tests: ``tlsguardctl probe`` (tools/tg_probe.h) finds a domain's MX
hosts through the DNS server given to --resolver, takes each through EHLO,
STARTTLS and an OpenSSL handshake, and prints per host the STARTTLS offer,
the TLS version and cipher, the certificate, the TLSA records with the
DNSSEC AD bit, and the verdict for a guaranteed sender, then the overall
verdict; exit status 0 (every host secure), 1 (some host would bounce or
defer), 2 (usage or lookup error).  No tlsguardd runs.

Setup (nothing leaves loopback; 127.0.0.150-159 only):
  * unbound and ldnsutils from Debian (dns_env.ensure_unbound: no service is
    started by the install).  Our own unbound runs in the foreground on
    127.0.0.150:53 (dns_env.Unbound) with ``validator iterator``: the zone
    ``probe.test.`` is signed here with fresh keys (ldns-keygen,
    ldns-signzone) and served as an auth-zone, validated against its own
    key-signing key as trust anchor, so its answers carry the AD bit;
    ``plain.test.`` is a static local zone (no AD bit).  Everything else is
    refused and nothing is asked upstream:

        secure.probe.test   MX 10 tls13.probe.test   127.0.0.151  TLS 1.3
                            MX 20 tls12.probe.test   127.0.0.152  TLS 1.2 only
        weak.probe.test     MX 10 tls10.probe.test   127.0.0.153  TLS 1.0 only
                            MX 20 tls13.probe.test
        nostarttls.probe.test MX 10 plain.probe.test 127.0.0.154  no STARTTLS
        dane.probe.test     MX 10 mx1.dane.probe.test 127.0.0.151, two TLSA
                            (3 1 1 and 3 0 1 of its certificate)
                            MX 20 mx2.dane.probe.test 127.0.0.152, no TLSA
        down.probe.test     MX 10 closed.probe.test  127.0.0.155  port closed
                            MX 20 tls12.probe.test
        late.probe.test     MX 10 tls10, MX 20 plain, MX 30 tls13 (.probe.test)
        insecure.probe.test MX 10 plain, MX 20 tls10 (.probe.test)
        nullmx.probe.test   MX 0 . (RFC 7505)
        nomx.probe.test     no MX, A 127.0.0.152
        nosuch.probe.test   NXDOMAIN
        daneta.probe.test   MX 10 ta.probe.test 127.0.0.156 (a chain from
                            the test CA), TLSA 2 0 1 of the CA
        badtlsa.probe.test  MX 10 mx.badtlsa 127.0.0.151, TLSA 3 1 1 of
                            another key (tls12's)
        danenotls.probe.test MX 10 mx.danenotls 127.0.0.154 (no STARTTLS),
                            the same TLSA
        daneclosed.probe.test MX 10 mx.daneclosed 127.0.0.155 (closed), the
                            same TLSA
        sts.probe.test      MX 10 mx.sts 127.0.0.156, MX 20 tls13;
                            _mta-sts TXT "v=STSv1; id=...", mta-sts.sts
                            127.0.0.157 (HTTPS: mode enforce,
                            mx *.sts.probe.test)
        plain.test          MX 10 mx.plain.test 127.0.0.151, one TLSA,
                            not DNSSEC-authenticated

  * the test MXs (mx.py's TestMX, Python's ssl module over OpenSSL) on port 25
    of .151-.154, each with its own self-signed ECDSA certificate whose CN is
    the host's name (tls13.probe.test, ...); nothing listens on .155;
  * ta.probe.test on 127.0.0.156 sends a chain from a test CA (names
    ta.probe.test, mx.sts.probe.test); an HTTPS server (Python's http.server)
    on 127.0.0.157:443 serves the MTA-STS policy with a certificate from the
    same CA, given to the probe with --ca-file;
  * unbound answers on ::1 too (``--resolver ::1``);
  * a Postfix configuration directory written by the test (main.cf with
    relayhost = [tls12.probe.test] and transport_maps = hash:, texthash:,
    inline:), read by the probe through postconf and postmap;
  * a passive watch for DNS queries that leave the machine (dns_env.LeakWatch).
Every probe gets ``--resolver 127.0.0.150`` and, but for the routing cases,
``--no-postfix-config`` (the host's own /etc/postfix must not route the test's
domains).

Cases: one per destination above, asserting the printed fields (version,
cipher not empty, certificate subject CN, TLSA count and authentication,
verdicts, overall verdict, exit status), and what the MX hosts saw (EHLO,
STARTTLS, the version they negotiated; never a MAIL command); a literal
address ``[127.0.0.153]`` and ``tls12.probe.test:25`` (no MX lookup); --json;
usage and lookup errors (one line on stderr naming what was wrong, exit 2:
bad --resolver, bad port, bad name, bad --timeout, no DNS answer);
DANE: verified DANE-EE and DANE-TA records, a record that matches nothing
(FAILED, the host deferred, exit 1), records at a host without STARTTLS,
records not validated, the JSON fields; MTA-STS with and without the test CA;
the IPv6 resolver; the Postfix routes (relayhost, hash:, a parent key in
texthash:, inline:, an error: transport);
``dns_isolation`` (unbound answered the probe's queries, none of the test's
names left the machine).

Output: ``PASS name`` / ``FAIL name: why`` per case, then exactly ``N
passed, M failed``; exit status 0 only if none failed (2 on a usage error).
Everything is removed in a ``finally``: the MXs, the watch, unbound (SIGTERM
by pid), the temp dir unless --keep.  -v prints the probe's output of failed
cases and unbound's log.
"""

import hashlib
import http.server
import json
import os
import re
import shutil
import socketserver
import ssl
import subprocess
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "fixtures"))
sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree

from dns_env import (T_MX, T_TLSA, LeakWatch, Unbound, answer_problems, ensure_unbound,  # noqa: E402
                     sign_zone)
import harness  # noqa: E402
from mx import TestMX, TLSOptions  # noqa: E402

OPENSSL = "/usr/bin/openssl"
DNS = "127.0.0.150"
# host name -> (address, TLS options or None for no STARTTLS; certificates added at setup)
HOSTS = {
    "tls13.probe.test": ("127.0.0.151", {"version": "1.3"}),
    "tls12.probe.test": ("127.0.0.152", {"version": "1.2"}),
    "tls10.probe.test": ("127.0.0.153", {"version": "1.0"}),
    "plain.probe.test": ("127.0.0.154", None),
}
CLOSED = "127.0.0.155"  # nothing listens here
TA_ADDR = "127.0.0.156"  # ta.probe.test: a certificate from the test CA, chain sent
HTTPS_ADDR = "127.0.0.157"  # mta-sts.sts.probe.test:443, a certificate from the test CA
TA_NAMES = ("ta.probe.test", "mx.sts.probe.test")
STS_ID = "20261205T000000"
STS_POLICY = "version: STSv1\r\nmode: enforce\r\nmx: *.sts.probe.test\r\nmax_age: 86400\r\n"
TIMEOUT_PROBE = 120.0  # seconds for one tlsguardctl run (it bounds each step by --timeout)
PROBE_STEP = "10"  # --timeout

WEAK10 = "would bounce: TLS 1.2 or higher is required, but host negotiated TLSv1.0"
NO_TLS = "would bounce: TLS is required, but was not offered by host"
NO_DANE = ("no TLSA records: a man in the middle who presents a certificate of its own goes unnoticed "
           "(tlsguard checks the TLS version, not who answers)")
NO_TLSA_DENIED = "no TLSA (DNSSEC-authenticated denial): DANE does not apply"
DANE_DELIVERED = "would be delivered, DANE-authenticated: a man in the middle can neither read nor change it"
DANE_DEFER = ("would be deferred: DANE FAILED: %s: an MTA that uses DANE does not deliver to this host "
              "(a man in the middle, or TLSA records the host's certificate no longer matches)")
NO_MATCH = "no TLSA record matches the certificate chain the host presented"


def signed_records(dane_tlsa, ta_tlsa, wrong_tlsa):
    return [
        "tls13 IN A 127.0.0.151",
        "tls12 IN A 127.0.0.152",
        "tls10 IN A 127.0.0.153",
        "plain IN A 127.0.0.154",
        "closed IN A %s" % CLOSED,
        "secure IN MX 10 tls13.probe.test.",
        "secure IN MX 20 tls12.probe.test.",
        "weak IN MX 10 tls10.probe.test.",
        "weak IN MX 20 tls13.probe.test.",
        "nostarttls IN MX 10 plain.probe.test.",
        "dane IN MX 10 mx1.dane.probe.test.",
        "dane IN MX 20 mx2.dane.probe.test.",
        "mx1.dane IN A 127.0.0.151",
        "mx2.dane IN A 127.0.0.152",
        "down IN MX 10 closed.probe.test.",
        "down IN MX 20 tls12.probe.test.",
        "nomx IN A 127.0.0.152",
        "late IN MX 10 tls10.probe.test.",
        "late IN MX 20 plain.probe.test.",
        "late IN MX 30 tls13.probe.test.",
        "insecure IN MX 10 plain.probe.test.",
        "insecure IN MX 20 tls10.probe.test.",
        "nullmx IN MX 0 .",
        # DANE: a DANE-TA(2) host, a record that matches nothing, one without STARTTLS
        "ta IN A %s" % TA_ADDR,
        "daneta IN MX 10 ta.probe.test.",
        "_25._tcp.ta IN TLSA %s" % ta_tlsa,
        "badtlsa IN MX 10 mx.badtlsa.probe.test.",
        "mx.badtlsa IN A 127.0.0.151",
        "_25._tcp.mx.badtlsa IN TLSA %s" % wrong_tlsa,
        "danenotls IN MX 10 mx.danenotls.probe.test.",
        "mx.danenotls IN A 127.0.0.154",
        "_25._tcp.mx.danenotls IN TLSA %s" % wrong_tlsa,
        "daneclosed IN MX 10 mx.daneclosed.probe.test.",
        "mx.daneclosed IN A %s" % CLOSED,
        "_25._tcp.mx.daneclosed IN TLSA %s" % wrong_tlsa,
        # MTA-STS: the policy names *.sts.probe.test, the second MX is not in it
        "sts IN MX 10 mx.sts.probe.test.",
        "sts IN MX 20 tls13.probe.test.",
        "mx.sts IN A %s" % TA_ADDR,
        '_mta-sts.sts IN TXT "v=STSv1; id=%s;"' % STS_ID,
        "mta-sts.sts IN A %s" % HTTPS_ADDR,
    ] + ["_25._tcp.mx1.dane IN TLSA %s" % t for t in dane_tlsa]


def plain_zone(tlsa):
    return [
        "plain.test. 60 IN MX 10 mx.plain.test.",
        "mx.plain.test. 60 IN A 127.0.0.151",
        "_25._tcp.mx.plain.test. 60 IN TLSA %s" % tlsa,
    ]


# ------------------------------------------------------------------ certificates

def make_cert(directory, cn):
    """A self-signed ECDSA P-256 certificate for CN=cn; (certfile, keyfile)."""
    cert, key = os.path.join(directory, cn + ".crt"), os.path.join(directory, cn + ".key")
    r = subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-subj", "/CN=" + cn, "-addext", "subjectAltName=DNS:" + cn, "-days", "2",
                        "-keyout", key, "-out", cert], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("openssl req for CN=%s: %s" % (cn, r.stderr.strip()))
    return cert, key


def make_ca(directory):
    """A test CA (CN=tlsguard test CA); (certfile, keyfile)."""
    cert, key = os.path.join(directory, "ca.crt"), os.path.join(directory, "ca.key")
    r = subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-subj", "/CN=tlsguard test CA", "-addext", "basicConstraints=critical,CA:TRUE",
                        "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-days", "2",
                        "-keyout", key, "-out", cert], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("openssl req for the test CA: %s" % r.stderr.strip())
    return cert, key


def make_issued(directory, ca, names):
    """A certificate for names[0] (SANs: all names) issued by ca; (chainfile, keyfile): the
    chain file holds the certificate and then the CA's, as the server sends them."""
    cn = names[0]
    key, csr = os.path.join(directory, cn + ".key"), os.path.join(directory, cn + ".csr")
    crt, chain = os.path.join(directory, cn + ".crt"), os.path.join(directory, cn + ".chain")
    ext = os.path.join(directory, cn + ".ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
                % ",".join("DNS:" + n for n in names))
    for cmd in ([OPENSSL, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-subj", "/CN=" + cn, "-keyout", key, "-out", csr],
                [OPENSSL, "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
                 "-days", "2", "-extfile", ext, "-out", crt]):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("%s for CN=%s: %s" % (" ".join(cmd[:2]), cn, r.stderr.strip()))
    with open(chain, "w") as out:
        for f in (crt, ca[0]):
            with open(f) as src:
                out.write(src.read())
    return chain, key


def cert_sha256(certfile):
    with open(certfile) as f:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read())).hexdigest()


class PolicyServer:
    """HTTPS on HTTPS_ADDR:443 (loopback) serving STS_POLICY at /.well-known/mta-sts.txt;
    ``requests`` records (path, Host header) of each GET."""

    def __init__(self, chain, key):
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 -- http.server's name
                outer.requests.append((self.path, self.headers.get("Host")))
                body = STS_POLICY.encode() if self.path == "/.well-known/mta-sts.txt" else b"not found\n"
                self.send_response(200 if self.path == "/.well-known/mta-sts.txt" else 404)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            def server_bind(self):
                # HTTPServer's own asks DNS for the address's name (getfqdn): no lookups here
                socketserver.TCPServer.server_bind(self)
                self.server_name, self.server_port = HTTPS_ADDR, 443

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(chain, key)
        self.httpd = Server((HTTPS_ADDR, 443), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="mta-sts", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def write_postfix_config(directory):
    """A Postfix configuration directory for the routing cases: relayhost, and transport_maps
    with a hash, a texthash and an inline table (postmap builds the hash)."""
    os.makedirs(directory)
    transport = os.path.join(directory, "transport")
    transport2 = os.path.join(directory, "transport2")
    with open(transport, "w") as f:
        f.write("weak.probe.test smtp:[tls13.probe.test]:25\nerror.probe.test error:5.1.2 no such domain\n")
    with open(transport2, "w") as f:
        f.write(".sub.probe.test relay:secure.probe.test\n")
    with open(os.path.join(directory, "main.cf"), "w") as f:
        f.write("# written by tlsguard tests/e2e/suites/probe_run.py\n"
                "compatibility_level = 3.6\n"
                "relayhost = [tls12.probe.test]\n"
                "smtp_tls_security_level = dane\n"
                "smtp_dns_support_level = dnssec\n"
                "transport_maps = hash:%s, texthash:%s,\n"
                "    inline:{ inline.probe.test=smtp:[tls13.probe.test] }\n" % (transport, transport2))
    if os.path.exists("/etc/postfix/master.cf"):
        shutil.copy("/etc/postfix/master.cf", directory)
    r = subprocess.run(["/usr/sbin/postmap", "-c", directory, "hash:" + transport], capture_output=True,
                       text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("postmap hash:%s: %s" % (transport, r.stderr.strip()))
    return directory


def tlsa_of(certfile):
    """TLSA data "3 1 1 <SPKI sha256>" and "3 0 1 <certificate sha256>" for a certificate."""
    with open(certfile) as f:
        der = ssl.PEM_cert_to_DER_cert(f.read())
    pub = subprocess.run([OPENSSL, "x509", "-in", certfile, "-noout", "-pubkey"], capture_output=True,
                         timeout=30, check=True).stdout
    spki = subprocess.run([OPENSSL, "pkey", "-pubin", "-outform", "DER"], input=pub, capture_output=True,
                          timeout=30, check=True).stdout
    return ["3 1 1 %s" % hashlib.sha256(spki).hexdigest(), "3 0 1 %s" % hashlib.sha256(der).hexdigest()]


# ------------------------------------------------------------------ running and reading the probe

class Run:
    def __init__(self, argv, proc):
        self.argv, self.rc, self.out, self.err = argv, proc.returncode, proc.stdout, proc.stderr
        self.top, self.hosts = parse(self.out)

    def host(self, header):
        for h in self.hosts:
            if h["header"] == header:
                return h
        return None

    def __str__(self):
        return "$ %s\n(exit %s)\n%s%s" % (" ".join(self.argv), self.rc, self.out,
                                          ("stderr: " + self.err) if self.err else "")


TOP_KEYS = ("destination", "route", "DNS server", "MX hosts", "MTA-STS", "overall", "DANE", "note")


def parse(out):
    """({top key: value}, [{"header": "name[addr]:port", key: value, ...}, ...]) of the text output."""
    top, hosts, cur = {}, [], None
    for line in out.splitlines():
        if not line.strip():
            cur = None
            continue
        m = re.match(r"^(%s):\s+(.*)$" % "|".join(re.escape(k) for k in TOP_KEYS), line)
        if m and m.group(1) == "note":
            top.setdefault("notes", []).append(m.group(2))
        elif m:
            top[m.group(1)] = m.group(2)
        elif not line.startswith(" "):
            cur = {"header": line}
            hosts.append(cur)
        elif cur is not None:
            key, _, value = line.strip().partition(":")
            cur[key] = value.strip()
    return top, hosts


def probe(ctl, target, *extra, resolver=True, postfix=False):
    """Without ``postfix``, --no-postfix-config: the host's own /etc/postfix does not route the test's domains."""
    argv = [ctl, "probe", target] + (["--resolver", DNS, "--timeout", PROBE_STEP] if resolver else []) + \
        ([] if postfix or "--postfix-config" in extra else ["--no-postfix-config"]) + list(extra)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_PROBE)
    return Run(argv, p)


def want(p, what, got, expected):
    if got != expected:
        p.append("%s: %r, expected %r" % (what, got, expected))


def want_field(p, h, what, key, expected):
    """want() on field ``key`` of a host block ``h``; nothing if there is no block (said already)."""
    if h is not None:
        want(p, what, h.get(key), expected)


def check_tls_host(p, run, header, version, cn, dane=False):
    h = run.host(header)
    if h is None:
        p.append("no block for %s in the output" % header)
        return None
    want(p, header + " STARTTLS offered", h.get("STARTTLS offered"), "yes")
    want(p, header + " TLS version", h.get("TLS version"), version)
    if not re.match(r"^\S+ \(\d+ bits\)$", h.get("cipher", "")) or h.get("cipher", "").startswith("("):
        p.append("%s cipher: %r, expected a cipher name and its bits" % (header, h.get("cipher")))
    want(p, header + " subject", h.get("subject"), "CN=" + cn)
    want(p, header + " issuer", h.get("issuer"), "CN=" + cn)
    for key in ("not before", "not after"):
        if not re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", h.get(key, "")):
            p.append("%s %s: %r, expected a UTC time" % (header, key, h.get(key)))
    if "(not expired)" not in h.get("not after", ""):
        p.append("%s not after: %r, expected '(not expired)' (a 2-day certificate made now)" % (
            header, h.get("not after")))
    if dane:
        want(p, header + " verification", h.get("verification"), "ok (by DANE)")
    elif not h.get("verification") or h.get("verification", "").startswith("ok"):
        p.append("%s verification: %r, expected a reason (the certificate is self-signed)" % (
            header, h.get("verification")))
    return h


def mx_saw(p, mx, since, version):
    """The MX's connections after since: EHLO, STARTTLS, the version (None: no STARTTLS), no MAIL."""
    conns = mx.connections()[since:]
    if not conns:
        p.append("%s saw no connection" % mx.name)
        return
    c = conns[-1]
    verbs = c.verbs()
    if "EHLO" not in verbs:
        p.append("%s saw no EHLO (%s)" % (mx.name, verbs))
    if "MAIL" in verbs or "RCPT" in verbs or "DATA" in verbs:
        p.append("%s saw a mail transaction from the probe: %s" % (mx.name, verbs))
    if version is None:
        if "STARTTLS" in verbs:
            p.append("%s saw STARTTLS though it offered none" % mx.name)
    elif c.tls_version != version:
        p.append("%s negotiated %s (error %s), expected %s" % (mx.name, c.tls_version, c.tls_error, version))


# ------------------------------------------------------------------ cases

def case_secure(ctx):
    since = {k: len(m.connections()) for k, m in ctx.mxs.items()}
    run, p = ctx.probe_exits(0, "secure.probe.test")
    want(p, "MX hosts", run.top.get("MX hosts"), "10 tls13.probe.test, 20 tls12.probe.test (DNSSEC-authenticated)")
    want(p, "DNS server", run.top.get("DNS server"), DNS)
    want(p, "hosts", [h["header"] for h in run.hosts],
         ["tls13.probe.test[127.0.0.151]:25", "tls12.probe.test[127.0.0.152]:25"])
    for header, version, cn in (("tls13.probe.test[127.0.0.151]:25", "TLSv1.3", "tls13.probe.test"),
                                ("tls12.probe.test[127.0.0.152]:25", "TLSv1.2", "tls12.probe.test")):
        h = check_tls_host(p, run, header, version, cn)
        if h:
            want(p, header + " verdict", h.get("verdict"), "would be delivered")
            want(p, header + " MX preference", h.get("MX preference"), "10" if "tls13" in header else "20")
            if "DNSSEC-authenticated denial" not in h.get("TLSA (DANE)", ""):
                p.append("%s TLSA: %r, expected none with an authenticated denial" % (header, h.get("TLSA (DANE)")))
    want(p, "overall", run.top.get("overall"), "would be delivered: every host takes mail over TLS 1.2 or higher")
    want(p, "MTA-STS", run.top.get("MTA-STS"), "none (no STSv1 TXT record at _mta-sts)")
    want(p, "DANE", run.top.get("DANE"), NO_DANE)
    want(p, "host DANE", [h.get("DANE") for h in run.hosts], [NO_TLSA_DENIED] * 2)
    mx_saw(p, ctx.mxs["tls13.probe.test"], since["tls13.probe.test"], "TLSv1.3")
    mx_saw(p, ctx.mxs["tls12.probe.test"], since["tls12.probe.test"], "TLSv1.2")
    return p, run


def case_weak(ctx):
    since = len(ctx.mxs["tls10.probe.test"].connections())
    run, p = ctx.probe_exits(1, "weak.probe.test")
    h = check_tls_host(p, run, "tls10.probe.test[127.0.0.153]:25", "TLSv1.0", "tls10.probe.test")
    want_field(p, h, "tls10 verdict", "verdict", WEAK10)
    h = check_tls_host(p, run, "tls13.probe.test[127.0.0.151]:25", "TLSv1.3", "tls13.probe.test")
    want_field(p, h, "tls13 verdict", "verdict", "would be delivered")
    want(p, "overall", run.top.get("overall"), "would be delivered, by tls13.probe.test[127.0.0.151]")
    want(p, "notes", run.top.get("notes"), [
        "at the host that would bounce it, tlsguardd answers 450 4.7.10 instead (another MX host takes "
        "TLS 1.2 or higher), and the MTA tries the next host"])
    mx_saw(p, ctx.mxs["tls10.probe.test"], since, "TLSv1")
    return p, run


def case_no_starttls(ctx):
    since = len(ctx.mxs["plain.probe.test"].connections())
    run, p = ctx.probe_exits(1, "nostarttls.probe.test")
    h = run.host("plain.probe.test[127.0.0.154]:25")
    if h is None:
        p.append("no block for plain.probe.test[127.0.0.154]:25")
    else:
        want(p, "STARTTLS offered", h.get("STARTTLS offered"), "no")
        want(p, "verdict", h.get("verdict"), NO_TLS)
        for key in ("TLS version", "cipher", "subject"):
            if key in h:
                p.append("%s printed without TLS: %r" % (key, h[key]))
        if not h.get("greeting", "").startswith("220 "):
            p.append("greeting: %r, expected the MX's 220" % h.get("greeting"))
    want(p, "overall", run.top.get("overall"), NO_TLS)
    mx_saw(p, ctx.mxs["plain.probe.test"], since, None)
    return p, run


def case_dane(ctx):
    """Two matching DANE-EE records at mx1 (its certificate's name is another: DANE-EE needs none), none at mx2."""
    run, p = ctx.probe_exits(0, "dane.probe.test")
    h = check_tls_host(p, run, "mx1.dane.probe.test[127.0.0.151]:25", "TLSv1.3", "tls13.probe.test", dane=True)
    want_field(p, h, "mx1 TLSA", "TLSA (DANE)",
               "2 records at _25._tcp.mx1.dane.probe.test, DNSSEC-authenticated")
    if h is not None and not re.match(r"^verified \(3/[01]/1: DANE-EE, (SPKI|certificate), SHA2-256, chain depth 0\)$",
                                      h.get("DANE", "")):
        p.append("mx1 DANE: %r, expected verified (3/1/1 or 3/0/1) at depth 0" % h.get("DANE"))
    want_field(p, h, "mx1 verdict", "verdict", DANE_DELIVERED)
    want(p, "DANE", run.top.get("DANE"), "1 of 2 hosts DANE-authenticated: at the others a man in the middle who "
         "presents a certificate of its own goes unnoticed")
    h = check_tls_host(p, run, "mx2.dane.probe.test[127.0.0.152]:25", "TLSv1.2", "tls12.probe.test")
    want_field(p, h, "mx2 TLSA", "TLSA (DANE)",
               "none at _25._tcp.mx2.dane.probe.test (DNSSEC-authenticated denial)")
    want_field(p, h, "mx2 DANE", "DANE", NO_TLSA_DENIED)
    want_field(p, h, "mx2 verdict", "verdict", "would be delivered")
    if not ctx.unbound.queried("_25._tcp.mx1.dane.probe.test", "TLSA"):
        p.append("unbound logged no TLSA query for _25._tcp.mx1.dane.probe.test")
    return p, run


def case_dane_unsigned(ctx):
    run, p = ctx.probe_exits(0, "plain.test")
    want(p, "MX hosts (no AD bit)", run.top.get("MX hosts"), "10 mx.plain.test")
    h = check_tls_host(p, run, "mx.plain.test[127.0.0.151]:25", "TLSv1.3", "tls13.probe.test")
    want_field(p, h, "TLSA", "TLSA (DANE)", "1 record at _25._tcp.mx.plain.test, not DNSSEC-authenticated "
               "(a DANE client ignores them)")
    want_field(p, h, "DANE", "DANE", "TLSA not validated (insecure: the TLSA answer has no AD bit): DANE does not apply")
    want_field(p, h, "verdict", "verdict", "would be delivered")
    want(p, "DANE", run.top.get("DANE"), "not in force: the TLSA records are not DNSSEC-validated; a man in the "
         "middle who presents a certificate of its own goes unnoticed")
    return p, run


def case_dane_mismatch(ctx):
    """A DNSSEC-validated DANE-EE record that does not match the host's certificate: FAILED, deferred."""
    run, p = ctx.probe_exits(1, "badtlsa.probe.test")
    h = check_tls_host(p, run, "mx.badtlsa.probe.test[127.0.0.151]:25", "TLSv1.3", "tls13.probe.test")
    want_field(p, h, "DANE", "DANE", "FAILED: " + NO_MATCH)
    want_field(p, h, "verdict", "verdict", DANE_DEFER % NO_MATCH)
    want(p, "overall", run.top.get("overall"), DANE_DEFER % NO_MATCH)
    want(p, "DANE", run.top.get("DANE"), "FAILED at 1 of 1 host: an MTA that uses DANE does not deliver there")
    return p, run


def case_dane_ta(ctx):
    """DANE-TA(2): the record names the CA that issued the host's certificate (sent in its chain)."""
    run, p, h = ctx.probe_host(0, "daneta.probe.test", "ta.probe.test[%s]:25" % TA_ADDR)
    if h is None:
        return p, run
    want(p, "subject", h.get("subject"), "CN=ta.probe.test")
    want(p, "issuer", h.get("issuer"), "CN=tlsguard test CA")
    want(p, "DANE", h.get("DANE"), "verified (2/0/1: DANE-TA, certificate, SHA2-256, chain depth 1)")
    want(p, "verification", h.get("verification"), "ok (by DANE)")
    want(p, "verdict", h.get("verdict"), DANE_DELIVERED)
    want(p, "overall", run.top.get("overall"), DANE_DELIVERED)
    want(p, "DANE", run.top.get("DANE"), "every host is DANE-authenticated: a man in the middle can neither read "
         "nor change the mail, for an MTA that uses DANE (Postfix: smtp_dns_support_level = dnssec, "
         "smtp_tls_security_level = dane)")
    return p, run


def case_dane_no_starttls(ctx):
    """Validated TLSA records, and the host offers no STARTTLS: a DANE MTA defers (never sends MAIL)."""
    run, p, h = ctx.probe_host(1, "danenotls.probe.test", "mx.danenotls.probe.test[127.0.0.154]:25")
    if h is None:
        return p, run
    why = "no TLS (STARTTLS not offered), and the TLSA records require it"
    want(p, "DANE", h.get("DANE"), "FAILED: " + why)
    want(p, "verdict", h.get("verdict"), DANE_DEFER % why)
    return p, run


def case_dane_unreached(ctx):
    """Validated TLSA records at a host that cannot be reached: not checked, deferred as any such host."""
    run, p, h = ctx.probe_host(1, "daneclosed.probe.test", "mx.daneclosed.probe.test[%s]:25" % CLOSED)
    if h is None:
        return p, run
    want(p, "DANE", h.get("DANE"), "not checked: the host was not reached (its TLSA records apply)")
    want(p, "verdict", h.get("verdict"), "would be deferred: cannot connect: Connection refused")
    return p, run


def case_dane_json(ctx):
    run, p = ctx.probe_exits(0, "daneta.probe.test", "--json")
    try:
        doc = json.loads(run.out)
    except ValueError as e:
        return ["not JSON: %s" % e], run
    hosts = doc.get("hosts") or [{}]
    dane = hosts[0].get("dane") or {}
    want(p, "hosts[0].dane", {k: dane.get(k) for k in ("status", "usage", "selector", "mtype", "depth")},
         {"status": "verified", "usage": 2, "selector": 0, "mtype": 1, "depth": 1})
    want(p, "hosts[0].tlsa.records", (hosts[0].get("tlsa") or {}).get("records"),
         [{"usage": 2, "selector": 0, "mtype": 1, "data": ctx.ca_sha256}])
    want(p, "hosts[0].verdict", hosts[0].get("verdict"), "delivered")
    if not str(doc.get("dane", "")).startswith("every host is DANE-authenticated"):
        p.append("dane: %r" % doc.get("dane"))
    want(p, "mta_sts.status", (doc.get("mta_sts") or {}).get("status"), "none")
    want(p, "route", doc.get("route"), None)
    return p, run


STS_ENFORCE = "enforce: a sender that applies MTA-STS does not deliver to this host"


def case_mta_sts(ctx):
    """The policy over HTTPS (the test CA via --ca-file): mx.sts matches *.sts.probe.test, tls13 does not."""
    before = len(ctx.https.requests)
    run, p = ctx.probe_exits(0, "sts.probe.test", "--ca-file", ctx.ca_file)
    want(p, "MTA-STS", run.top.get("MTA-STS"), "mode enforce (id %s, max_age 86400, mx *.sts.probe.test): "
         "some MX hosts fail" % STS_ID)
    h = run.host("mx.sts.probe.test[%s]:25" % TA_ADDR)
    want_field(p, h, "mx.sts MTA-STS", "MTA-STS", "ok: matches mx pattern *.sts.probe.test, valid certificate")
    want_field(p, h, "mx.sts verification", "verification", "ok")
    h = run.host("tls13.probe.test[127.0.0.151]:25")
    want_field(p, h, "tls13 MTA-STS", "MTA-STS",
               "FAILED: tls13.probe.test matches no mx pattern of the policy (%s)" % STS_ENFORCE)
    want(p, "policy requests", ctx.https.requests[before:],
         [("/.well-known/mta-sts.txt", "mta-sts.sts.probe.test")])
    return p, run


def case_mta_sts_untrusted(ctx):
    """Without the test CA the policy server's certificate does not verify: no policy, said so."""
    run, p = ctx.probe_exits(0, "sts.probe.test")
    want(p, "MTA-STS", run.top.get("MTA-STS"), "no policy (TXT record id %s): https://mta-sts.sts.probe.test/: "
         "certificate verification failed: self-signed certificate in certificate chain" % STS_ID)
    if any("MTA-STS" in h for h in run.hosts):
        p.append("per-host MTA-STS lines without a policy: %r" % [h.get("MTA-STS") for h in run.hosts])
    return p, run


def case_resolver_ipv6(ctx):
    """--resolver ::1 and [::1]:53: unbound on ::1 answers."""
    p, runs = [], []
    for resolver in ("::1", "[::1]:53"):
        run = probe(ctx.ctl, "secure.probe.test", "--resolver", resolver, "--timeout", PROBE_STEP, resolver=False)
        runs.append(run)
        ctx.runs.append(run)
        want(p, resolver + " exit status", run.rc, 0)
        want(p, resolver + " DNS server", run.top.get("DNS server"), resolver)
        want(p, resolver + " hosts", [h["header"] for h in run.hosts],
             ["tls13.probe.test[127.0.0.151]:25", "tls12.probe.test[127.0.0.152]:25"])
        want(p, resolver + " MX hosts", run.top.get("MX hosts"),
             "10 tls13.probe.test, 20 tls12.probe.test (DNSSEC-authenticated)")
    if not ctx.unbound.queried("secure.probe.test", "MX", client="::1"):
        p.append("unbound logged no MX query from ::1")
    return p, runs


def case_route_transport(ctx):
    """transport_maps (hash:) sends weak.probe.test to [tls13.probe.test]: only that host is probed."""
    run, p = ctx.probe_exits(0, "weak.probe.test", "--postfix-config", ctx.postfix)
    want(p, "route", run.top.get("route"), "transport_maps hash:%s/transport: weak.probe.test -> "
         "smtp:[tls13.probe.test]:25 (Postfix configuration %s)" % (ctx.postfix, ctx.postfix))
    want(p, "destination", run.top.get("destination"),
         "weak.probe.test (routed to tls13.probe.test: that host, no MX lookup), port 25")
    want(p, "hosts", [h["header"] for h in run.hosts], ["tls13.probe.test[127.0.0.151]:25"])
    want(p, "MTA-STS", run.top.get("MTA-STS"), "not applicable (the route is not the domain's MX hosts)")
    want(p, "overall", run.top.get("overall"), "would be delivered")
    want(p, "DANE", run.top.get("DANE"), NO_DANE + "; the Postfix of %s uses DANE (smtp_tls_security_level = dane, "
         "smtp_dns_support_level = dnssec)" % ctx.postfix)
    return p, run


def case_route_relayhost(ctx):
    """No transport_maps entry: relayhost = [tls12.probe.test] (text and --json)."""
    run, p = ctx.probe_exits(0, "insecure.probe.test", "--postfix-config", ctx.postfix)
    want(p, "route", run.top.get("route"), "relayhost = [tls12.probe.test] (Postfix configuration %s)" % ctx.postfix)
    want(p, "hosts", [h["header"] for h in run.hosts], ["tls12.probe.test[127.0.0.152]:25"])
    js, p2 = ctx.probe_exits(0, "insecure.probe.test", "--postfix-config", ctx.postfix, "--json")
    p += p2
    try:
        route = json.loads(js.out).get("route") or {}
    except ValueError as e:
        return p + ["not JSON: %s" % e], [run, js]
    want(p, "json route", {k: route.get(k) for k in ("transport", "routed", "nexthop", "mx_lookup", "postfix_config",
                                                      "postfix_uses_dane")},
         {"transport": "smtp", "routed": True, "nexthop": "tls12.probe.test", "mx_lookup": False,
          "postfix_config": ctx.postfix, "postfix_uses_dane": True})
    return p, [run, js]


def case_route_parent_inline(ctx):
    """texthash: ".sub.probe.test" matches a subdomain (relay:, MX lookup of the nexthop); inline: too."""
    run, p = ctx.probe_exits(0, "x.sub.probe.test", "--postfix-config", ctx.postfix)
    want(p, "route", run.top.get("route"), "transport_maps texthash:%s/transport2: .sub.probe.test -> "
         "relay:secure.probe.test (Postfix configuration %s)" % (ctx.postfix, ctx.postfix))
    want(p, "hosts", [h["header"] for h in run.hosts],
         ["tls13.probe.test[127.0.0.151]:25", "tls12.probe.test[127.0.0.152]:25"])
    run2, p2 = ctx.probe_exits(0, "inline.probe.test", "--postfix-config", ctx.postfix)
    p += p2
    if not run2.top.get("route", "").startswith("transport_maps inline:{ inline.probe.test=smtp:[tls13.probe.test] }: "
                                                "inline.probe.test -> smtp:[tls13.probe.test]"):
        p.append("inline route: %r" % run2.top.get("route"))
    want(p, "inline hosts", [h["header"] for h in run2.hosts], ["tls13.probe.test[127.0.0.151]:25"])
    return p, [run, run2]


def case_route_not_smtp(ctx):
    run, p = ctx.probe_exits(2, "error.probe.test", "--postfix-config", ctx.postfix)
    want(p, "stdout", run.out, "")
    if 'sends it with transport "error", not over SMTP' not in run.err or len(run.err.strip().splitlines()) != 1:
        p.append("stderr: %r, expected one line naming the error transport" % run.err)
    return p, run


def case_closed_port(ctx):
    run, p = ctx.probe_exits(1, "down.probe.test")
    h = run.host("closed.probe.test[%s]:25" % CLOSED)
    if h is None:
        p.append("no block for closed.probe.test[%s]:25" % CLOSED)
    else:
        want(p, "closed error", h.get("error"), "cannot connect: Connection refused")
        want(p, "closed verdict", h.get("verdict"), "would be deferred: cannot connect: Connection refused")
        if "STARTTLS offered" in h:
            p.append("STARTTLS offered printed for a host never reached: %r" % h["STARTTLS offered"])
    check_tls_host(p, run, "tls12.probe.test[127.0.0.152]:25", "TLSv1.2", "tls12.probe.test")
    want(p, "overall", run.top.get("overall"), "would be delivered, by tls12.probe.test[127.0.0.152]")
    want(p, "notes", run.top.get("notes"), ["the MTA passes over the host it cannot reach"])
    return p, run


def case_session_limit(ctx):
    """Two answering insecure hosts before the secure one: Postfix's 2-session limit is named."""
    run, p = ctx.probe_exits(1, "late.probe.test")
    want(p, "verdicts", [h.get("verdict") for h in run.hosts], [WEAK10, NO_TLS, "would be delivered"])
    want(p, "overall", run.top.get("overall"), "would be delivered, by tls13.probe.test[127.0.0.151]")
    notes = run.top.get("notes") or []
    if len(notes) != 2 or "2 hosts that answer come before tls13.probe.test[127.0.0.151]" not in notes[-1] \
            or "smtp_mx_session_limit" not in notes[-1]:
        p.append("notes: %r, expected the 450 note and the smtp_mx_session_limit note" % notes)
    return p, run


def case_null_mx(ctx):
    run, p = ctx.probe_exits(1, "nullmx.probe.test")
    want(p, "hosts", run.hosts, [])
    want(p, "MX hosts", run.top.get("MX hosts"), "null MX (RFC 7505) (DNSSEC-authenticated)")
    want(p, "overall", run.top.get("overall"),
         "would bounce: nullmx.probe.test publishes a null MX (RFC 7505) and takes no mail")
    return p, run


def case_all_insecure(ctx):
    run, p = ctx.probe_exits(1, "insecure.probe.test")
    want(p, "verdicts", [h.get("verdict") for h in run.hosts], [NO_TLS, WEAK10])
    want(p, "overall", run.top.get("overall"), "would bounce: no host takes mail over TLS 1.2 or higher")
    return p, run


def case_no_mx(ctx):
    run, p = ctx.probe_exits(0, "nomx.probe.test")
    if not run.top.get("MX hosts", "").startswith("none: the domain's own address"):
        p.append("MX hosts: %r, expected the fallback to the domain's address" % run.top.get("MX hosts"))
    check_tls_host(p, run, "nomx.probe.test[127.0.0.152]:25", "TLSv1.2", "tls12.probe.test")
    return p, run


def case_nxdomain(ctx):
    run, p = ctx.probe_exits(2, "nosuch.probe.test")
    want(p, "stdout", run.out, "")
    want(p, "stderr", run.err.strip(),
         "tlsguardctl: fatal: probe: nosuch.probe.test: no such domain (NXDOMAIN from %s)" % DNS)
    return p, run


def case_literal(ctx):
    run, p = ctx.probe_exits(1, "[127.0.0.153]")
    want(p, "hosts", [h["header"] for h in run.hosts], ["[127.0.0.153]:25"])
    h = check_tls_host(p, run, "[127.0.0.153]:25", "TLSv1.0", "tls10.probe.test")
    if h:
        want(p, "verdict", h.get("verdict"), WEAK10)
        want(p, "TLSA", h.get("TLSA (DANE)"), "not looked up (no host name)")
        want(p, "DANE", h.get("DANE"), "not applicable (an address has no TLSA records)")
    want(p, "overall", run.top.get("overall"), WEAK10)
    if "MX hosts" in run.top or "DNS server" in run.top:
        p.append("a literal address printed DNS lines: %r" % run.top)
    return p, run


def case_host_port(ctx):
    run, p = ctx.probe_exits(0, "tls12.probe.test:25")
    if "MX hosts" in run.top:
        p.append("HOST:PORT looked up MX hosts: %r" % run.top["MX hosts"])
    h = check_tls_host(p, run, "tls12.probe.test[127.0.0.152]:25", "TLSv1.2", "tls12.probe.test")
    if h and "MX preference" in h:
        p.append("HOST:PORT printed an MX preference")
    want(p, "overall", run.top.get("overall"), "would be delivered")
    return p, run


def case_json(ctx):
    run, p = ctx.probe_exits(1, "weak.probe.test", "--json")
    try:
        doc = json.loads(run.out)
    except ValueError as e:
        return ["not JSON: %s" % e], run
    want(p, "verdict", doc.get("verdict"), "delivered")
    want(p, "exit", doc.get("exit"), 1)
    want(p, "all_secure", doc.get("all_secure"), False)
    want(p, "mx", doc.get("mx"), [{"preference": 10, "host": "tls10.probe.test"},
                                  {"preference": 20, "host": "tls13.probe.test"}])
    hosts = doc.get("hosts") or []
    want(p, "host count", len(hosts), 2)
    if len(hosts) == 2:
        weak, good = hosts
        want(p, "hosts[0].address", weak.get("address"), "127.0.0.153")
        want(p, "hosts[0].starttls", weak.get("starttls"), True)
        want(p, "hosts[0].tls.version", (weak.get("tls") or {}).get("version"), "TLSv1.0")
        if not (weak.get("tls") or {}).get("cipher"):
            p.append("hosts[0].tls.cipher empty")
        want(p, "hosts[0].certificate.subject", (weak.get("certificate") or {}).get("subject"),
             "CN=tls10.probe.test")
        want(p, "hosts[0].verdict", weak.get("verdict"), "bounce")
        want(p, "hosts[0].verdict_text", weak.get("verdict_text"), WEAK10)
        want(p, "hosts[0].tlsa", weak.get("tlsa"), {"name": "_25._tcp.tls10.probe.test", "rcode": "NXDOMAIN",
                                                    "count": 0, "authenticated": True, "records": []})
        want(p, "hosts[0].dane", weak.get("dane"), {"status": "no-tlsa", "text": NO_TLSA_DENIED})
        want(p, "hosts[0].mta_sts", weak.get("mta_sts"), None)
        want(p, "hosts[1].tls.version", (good.get("tls") or {}).get("version"), "TLSv1.3")
        want(p, "hosts[1].verdict", good.get("verdict"), "delivered")
    if not any("450 4.7.10" in n for n in doc.get("notes") or []):
        p.append("notes: %r, expected the 450 4.7.10 note" % doc.get("notes"))
    return p, run


def case_errors(ctx):
    """Each bad input: exit 2, stdout empty, one stderr line naming the culprit."""
    p, runs = [], []
    for args, needle in ((["secure.probe.test", "--resolver", "127.0.0.150:99999"], "--resolver 127.0.0.150:99999"),
                         (["secure.probe.test", "--resolver", "dns.example"], "--resolver dns.example"),
                         (["secure.probe.test:0"], 'bad port "0"'),
                         (["bad..name"], '"bad..name": not a domain'),
                         (["secure.probe.test", "--timeout", "0"], "--timeout 0"),
                         (["secure.probe.test", "--frobnicate"], "unknown option --frobnicate"),
                         # nothing answers DNS there: a lookup error, not a verdict
                         (["secure.probe.test", "--resolver", DNS + ":5353", "--timeout", "2"],
                          "secure.probe.test: MX lookup: no answer from %s:5353" % DNS)):
        run = probe(ctx.ctl, args[0], *args[1:], resolver=False)
        runs.append(run)
        lines = run.err.strip().splitlines()
        if run.rc != 2 or run.out or len(lines) != 1 or not lines[0].startswith("tlsguardctl: fatal: probe: ") \
                or needle not in lines[0]:
            p.append("%s: exit %s, stdout %r, stderr %r; expected exit 2 and one line with %r" % (
                " ".join(args), run.rc, run.out[:80], run.err.strip()[:200], needle))
    run = probe(ctx.ctl, "--help", resolver=False)
    runs.append(run)
    if run.rc != 2 or "usage: tlsguardctl probe" not in run.err:
        p.append("probe --help: exit %s, stderr %r; expected exit 2 and the usage" % (run.rc, run.err[:200]))
    return p, runs


CASES = [
    ("probe_all_secure", case_secure),
    ("probe_weak_first_mx", case_weak),
    ("probe_no_starttls", case_no_starttls),
    ("probe_dane_tlsa", case_dane),
    ("probe_dane_unsigned", case_dane_unsigned),
    ("probe_dane_mismatch", case_dane_mismatch),
    ("probe_dane_ta", case_dane_ta),
    ("probe_dane_no_starttls", case_dane_no_starttls),
    ("probe_dane_unreached", case_dane_unreached),
    ("probe_dane_json", case_dane_json),
    ("probe_mta_sts", case_mta_sts),
    ("probe_mta_sts_untrusted", case_mta_sts_untrusted),
    ("probe_resolver_ipv6", case_resolver_ipv6),
    ("probe_route_transport", case_route_transport),
    ("probe_route_relayhost", case_route_relayhost),
    ("probe_route_parent_inline", case_route_parent_inline),
    ("probe_route_not_smtp", case_route_not_smtp),
    ("probe_closed_port", case_closed_port),
    ("probe_session_limit_note", case_session_limit),
    ("probe_all_insecure", case_all_insecure),
    ("probe_null_mx", case_null_mx),
    ("probe_no_mx_fallback", case_no_mx),
    ("probe_nxdomain", case_nxdomain),
    ("probe_literal_address", case_literal),
    ("probe_host_port", case_host_port),
    ("probe_json", case_json),
    ("probe_errors", case_errors),
]


class Ctx:
    def __init__(self, ctl, mxs, unbound, https=None, ca_file=None, ca_sha256=None, postfix=None):
        self.ctl, self.mxs, self.unbound = ctl, mxs, unbound
        self.https, self.ca_file, self.ca_sha256, self.postfix = https, ca_file, ca_sha256, postfix

        self.runs = []

    def probe(self, target, *extra):
        run = probe(self.ctl, target, *extra)
        self.runs.append(run)
        return run

    def probe_exits(self, rc, target, *extra):
        """probe(), and the problems so far: its exit status if it is not ``rc``."""
        run, p = self.probe(target, *extra), []
        want(p, "exit status", run.rc, rc)
        return run, p

    def probe_host(self, rc, target, header):
        """probe_exits(), and the block of the host ``header`` (None, with a
        problem saying so, when the output has none)."""
        run, p = self.probe_exits(rc, target)
        h = run.host(header)
        if h is None:
            p.append("no block for %s" % header)
        return run, p, h


def check_dns_server():
    """The signed zone answers, plain.test answers, outside is REFUSED, nosuch is NXDOMAIN."""
    return answer_problems(DNS, (("secure.probe.test", T_MX, 0, 2), ("plain.test", T_MX, 0, 1),
                                 ("_25._tcp.mx1.dane.probe.test", T_TLSA, 0, 2),
                                 ("nosuch.probe.test", T_MX, 3, 0), ("example.com", T_MX, 5, 0)))


def check_isolation(ctx, watch):
    p = []
    for name, qtype in (("secure.probe.test", "MX"), ("weak.probe.test", "MX"), ("plain.test", "MX"),
                        ("tls13.probe.test", "A"), ("nosuch.probe.test", "MX")):
        if not ctx.unbound.queried(name, qtype):
            p.append("unbound logged no %s query for %s (did the probe ask --resolver?)" % (qtype, name))
    return p + watch.problems(DNS)


def main(argv=None):
    # --tlsguardd is taken, and not used, as every suite takes it.
    args = harness.arg_parser(__doc__, keep_help="zone, keys, unbound's log",
                              verbose_help="show the probe's output of failed cases").parse_args(argv)
    results = harness.Results()

    def report(name, problems, runs=None):
        results.report(name, problems)
        if problems and args.verbose and runs is not None:
            for r in runs if isinstance(runs, list) else [runs]:
                print("    " + str(r).replace("\n", "\n    "))

    def say(text):
        print("    " + text, flush=True)

    with harness.Run(results, keep=args.keep,
                     root="probe_run.py must run as root (port 25, apt-get for unbound and ldnsutils)") as suite:
        try:
            if not os.access(args.tlsguardctl, os.X_OK):
                raise RuntimeError("%s is missing or not executable (run make)" % args.tlsguardctl)
            ensure_unbound(say, extra=("ldnsutils",))
            tmp = suite.tempdir("tlsguard-e2e-probe-")
            certs = os.path.join(tmp, "certs")
            os.makedirs(certs)
            tls = {}
            for name, (addr, opts) in HOSTS.items():
                if opts is None:
                    tls[name] = None
                else:
                    cert, key = make_cert(certs, name)
                    tls[name] = TLSOptions(**opts, certfile=cert, keyfile=key)
            dane_tlsa = tlsa_of(tls["tls13.probe.test"].certfile)
            ca = make_ca(certs)
            ta_chain, ta_key = make_issued(certs, ca, TA_NAMES)
            tls["ta.probe.test"] = TLSOptions(version="1.3", certfile=ta_chain, keyfile=ta_key)
            https_chain, https_key = make_issued(certs, ca, ("mta-sts.sts.probe.test",))
            ca_sha256 = cert_sha256(ca[0])
            wrong_tlsa = tlsa_of(tls["tls12.probe.test"].certfile)[0]
            signed = sign_zone(os.path.join(tmp, "zone"), "probe.test",
                               signed_records(dane_tlsa, "2 0 1 " + ca_sha256, wrong_tlsa), DNS)
            postfix = write_postfix_config(os.path.join(tmp, "postfix"))
            watch = LeakWatch().start()
            suite.push(watch.stop)
            unbound = Unbound(tmp, DNS, static_zones={"plain.test.": plain_zone(dane_tlsa[0])}, signed=signed,
                              ready=("secure.probe.test", T_MX, 2), verbosity=2 if args.verbose else 1,
                              also=("::1",))
            suite.push(unbound.stop)
            unbound.start()
            report("dns_server", check_dns_server())
            mxs = {}
            for name, (addr, _) in list(HOSTS.items()) + [("ta.probe.test", (TA_ADDR, None))]:
                mxs[name] = TestMX(addr, 25, name=name, tls=tls[name]).start()
                suite.push(mxs[name].stop)
            https = PolicyServer(https_chain, https_key).start()
            suite.push(https.stop)
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            report("setup", [str(e)])
        else:
            ctx = Ctx(args.tlsguardctl, mxs, unbound, https=https, ca_file=ca[0], ca_sha256=ca_sha256,
                      postfix=postfix)
            for name, case in CASES:
                ctx.runs = []
                try:
                    problems, runs = case(ctx)
                except Exception as e:  # noqa: BLE001 -- a harness error is one failure, the rest still run
                    problems, runs = ["%s: %s" % (type(e).__name__, e)], None
                # a verdict comes with nothing on stderr (a sanitizer report would be there)
                problems += ["%s: stderr %r" % (r.argv[2], r.err[:300]) for r in ctx.runs
                             if r.rc in (0, 1) and r.err]
                report(name, problems, runs)
            report("dns_isolation", check_isolation(ctx, watch))
            if args.verbose:
                print(unbound.log_tail(40))
    return suite.finish()


if __name__ == "__main__":
    sys.exit(main())
