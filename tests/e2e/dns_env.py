#!/usr/bin/python3
"""A DNS server from Debian on loopback for the end-to-end tests, and a watch for queries that leave.

Shared by mx_run.py and probe_run.py (python3 stdlib only; import it, it runs nothing).

* ``ensure_unbound(say, extra=())`` installs Debian's unbound (and the packages in
  ``extra``, e.g. ``ldnsutils`` for ``sign_zone``) if missing.  While apt-get runs,
  /usr/sbin/policy-rc.d answers 101 so that the package does not start the system's
  unbound service: an existing policy-rc.d that already answers 101 is left as it is,
  another one is moved aside and put back; if a system unbound was started anyway, it
  is stopped with its own init script.
* ``Unbound(tmp, addr, static_zones={ZONE: [RR, ...]}, signed=None, ready=(NAME,
  TYPE, N))``: our own unbound in the foreground (``unbound -d -c CONF``, SIGTERM by
  pid in ``stop()``) on ADDR:53 from a config in ``tmp/unbound``: no chroot, no user
  change, no remote control, ``local-zone: "." refuse``, ``do-not-query-address``
  for every IPv4 and IPv6 address and no forward-zone, so it answers only from its
  own zones and asks nobody.  ``static_zones`` are served as ``local-zone: static``
  with ``local-data`` (answers without the AD bit); ``signed`` (from ``sign_zone``)
  is served as an ``auth-zone`` for upstream only, validated by the ``validator``
  module against the zone's own key-signing key as trust anchor, so answers from it
  carry the AD bit.  ``start()`` waits until NAME/TYPE has N answers.
* ``sign_zone(dir, apex, records, ns_addr)``: a zone file with SOA and NS, signed with
  ``ldns-signzone`` (NSEC) with fresh ECDSA P-256 keys from ``ldns-keygen``.
* ``dns_ask(server, name, qtype)``: (rcode, answer count) over UDP, loopback only.
* ``LeakWatch``: an AF_PACKET capture of outbound DNS queries on every interface.
"""

import ctypes
import errno
import os
import random
import re
import select
import signal
import socket
import struct
import subprocess
import threading
import time

UNBOUND = "/usr/sbin/unbound"
UNBOUND_CHECKCONF = "/usr/sbin/unbound-checkconf"
POLICY_RC_D = "/usr/sbin/policy-rc.d"
LDNS_KEYGEN = "/usr/bin/ldns-keygen"
LDNS_SIGNZONE = "/usr/bin/ldns-signzone"
TIMEOUT_DNS_READY = 10.0


# ------------------------------------------------------------------ DNS wire helpers

def dns_query_packet(name, qtype, qid=None):
    qid = random.getrandbits(16) if qid is None else qid
    q = b"".join(bytes([len(label)]) + label.encode("ascii") for label in name.rstrip(".").split("."))
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + b"\0" + struct.pack(">HH", qtype, 1)


def dns_question(payload):
    """(qname, qtype) of a DNS message, or (None, None)."""
    labels, i = [], 12
    try:
        while True:
            n = payload[i]
            if n == 0:
                qtype = struct.unpack(">H", payload[i + 1:i + 3])[0]
                return ".".join(labels).lower(), qtype
            if n & 0xC0:
                return None, None
            labels.append(payload[i + 1:i + 1 + n].decode("ascii", "replace"))
            i += 1 + n
    except (IndexError, struct.error):
        return None, None


def dns_ask(server, name, qtype, timeout=2.0, port=53):
    """(rcode, answer count) from a loopback DNS server over UDP."""
    if not server.startswith("127."):
        raise ValueError("refusing to query a non-loopback DNS server %s" % server)
    pkt = dns_query_packet(name, qtype)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(pkt, (server, port))
        data = s.recv(4096)
    if len(data) < 12 or data[:2] != pkt[:2]:
        raise OSError("malformed DNS reply from %s" % server)
    flags, _, ancount = struct.unpack(">HHH", data[2:8])
    return flags & 0xF, ancount


T_A, T_MX, T_TLSA = 1, 15, 52
RCODES = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}
TYPES = {T_A: "A", T_MX: "MX", T_TLSA: "TLSA"}


# ------------------------------------------------------------------ unbound

def _unbound_pids():
    pids = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.readlink("/proc/%s/exe" % d) == UNBOUND:
                    pids.add(int(d))
            except OSError:
                pass
    return pids


def _installed(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return r.returncode == 0 and r.stdout.strip() == "install ok installed"


def ensure_unbound(say, extra=()):
    """Install Debian's unbound (and the packages in extra) if missing, without letting the
    package start its service."""
    missing = [p for p in ("unbound",) + tuple(extra) if not _installed(p)]
    if not missing and os.access(UNBOUND, os.X_OK):
        return
    missing = missing or ["unbound"]
    say("installing %s (apt-get install -y) with policy-rc.d denying service starts" % " ".join(missing))
    created, saved = False, None
    if os.path.exists(POLICY_RC_D):
        r = subprocess.run([POLICY_RC_D, "unbound", "start"], capture_output=True)
        if r.returncode != 101:
            saved = POLICY_RC_D + ".tlsguard-e2e-saved"
            os.rename(POLICY_RC_D, saved)
    if not os.path.exists(POLICY_RC_D):
        with open(POLICY_RC_D, "w") as f:
            f.write("#!/bin/sh\n# tlsguard tests/e2e/dns_env.py: no service starts while unbound installs\n"
                    "exit 101\n")
        os.chmod(POLICY_RC_D, 0o755)
        created = True
    before = _unbound_pids()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        cmd = ["apt-get", "install", "-y"] + missing
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        if r.returncode != 0:
            subprocess.run(["apt-get", "update"], capture_output=True, env=env, timeout=600)
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        if r.returncode != 0:
            raise RuntimeError("apt-get install -y %s failed (exit %d): %s" % (
                " ".join(missing), r.returncode, (r.stderr or r.stdout).strip()[-500:]))
    finally:
        if created:
            os.unlink(POLICY_RC_D)
        if saved:
            os.rename(saved, POLICY_RC_D)
    started = _unbound_pids() - before
    if started:  # the package started the system's service after all: stop that service only
        say("the unbound package started the system service (pids %s); stopping it" % sorted(started))
        subprocess.run(["/etc/init.d/unbound", "stop"], capture_output=True, timeout=60)
        if _unbound_pids() & started:
            raise RuntimeError("the system's unbound (pids %s) is still running after "
                               "/etc/init.d/unbound stop" % sorted(_unbound_pids() & started))
    if not os.access(UNBOUND, os.X_OK):
        raise RuntimeError("%s is missing after apt-get install unbound" % UNBOUND)
    for p in extra:
        if not _installed(p):
            raise RuntimeError("package %s is not installed after apt-get install" % p)


class Unbound:
    """Our own unbound in the foreground, serving only its own zones on addr:53."""

    def __init__(self, tmp, addr, static_zones=None, signed=None, ready=None, verbosity=1):
        self.dir = os.path.join(tmp, "unbound")
        os.makedirs(self.dir)
        self.addr = addr
        self.static_zones = static_zones or {}
        self.signed = signed
        self.ready = ready
        self.conf = os.path.join(self.dir, "unbound.conf")
        self.log_path = os.path.join(self.dir, "unbound.log")
        self.verbosity = verbosity
        self.proc = None
        self.mark = 0  # log lines before this one are the harness's own queries

    def config(self):
        lines = [
            "# Written by tlsguard tests/e2e/dns_env.py: answers only from its own zones, asks nobody.",
            "server:",
            "    interface: %s" % self.addr,
            "    port: 53",
            "    interface-automatic: no",
            "    do-ip4: yes",
            "    do-ip6: no",
            "    do-udp: yes",
            "    do-tcp: yes",
            "    so-reuseport: no",
            "    num-threads: 1",
            "    access-control: 0.0.0.0/0 refuse",
            "    access-control: 127.0.0.0/8 allow",
            '    chroot: ""',
            '    username: ""',
            '    directory: "%s"' % self.dir,
            '    pidfile: "%s"' % os.path.join(self.dir, "unbound.pid"),
            "    do-daemonize: no",
            "    use-syslog: no",
            '    logfile: ""',
            "    log-time-ascii: yes",
            "    verbosity: %d" % self.verbosity,
            "    log-queries: yes",
            "    log-replies: yes",
            "    log-local-actions: yes",
            '    module-config: "%s"' % ("validator iterator" if self.signed else "iterator"),
            "    prefetch: no",
            # Nothing may be asked upstream: no forward-zone, every address off limits,
            # and everything outside the zones refused.
            "    do-not-query-localhost: yes",
            "    do-not-query-address: 0.0.0.0/0",
            "    do-not-query-address: ::/0",
            '    local-zone: "." refuse',
        ]
        for zone, rrs in self.static_zones.items():
            lines.append('    local-zone: "%s" static' % zone)
            lines += ['    local-data: "%s"' % rr for rr in rrs]
        if self.signed:
            # The signed zone goes through iterator and validator as if it came from
            # upstream: "transparent" lets its names past the "." refuse.
            lines += ['    local-zone: "%s" transparent' % self.signed.apex,
                      '    trust-anchor-file: "%s"' % self.signed.anchor,
                      "auth-zone:",
                      '    name: "%s"' % self.signed.apex,
                      '    zonefile: "%s"' % self.signed.zonefile,
                      "    for-upstream: yes",
                      "    for-downstream: no",
                      "    fallback-enabled: no"]
        lines += ["remote-control:", "    control-enable: no"]
        return "\n".join(lines) + "\n"

    def start(self):
        with open(self.conf, "w") as f:
            f.write(self.config())
        r = subprocess.run([UNBOUND_CHECKCONF, self.conf], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError("unbound-checkconf %s: %s" % (self.conf, (r.stderr or r.stdout).strip()))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([UNBOUND, "-d", "-c", self.conf], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, start_new_session=True)
        if self.ready is None:
            return self
        name, qtype, want = self.ready
        deadline = time.monotonic() + TIMEOUT_DNS_READY
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("unbound exited with %d at start%s" % (self.proc.returncode, self.log_tail()))
            try:
                rcode, n = dns_ask(self.addr, name, qtype, timeout=0.5)
                if rcode == 0 and n == want:
                    return self
                last = "rcode %s, %d answers" % (RCODES.get(rcode, rcode), n)
            except OSError as e:
                last = str(e)
            time.sleep(0.1)
        raise RuntimeError("unbound on %s:53 not answering within %.0fs (last: %s)%s" % (
            self.addr, TIMEOUT_DNS_READY, last, self.log_tail()))

    def stop(self):
        """SIGTERM by pid; None if it exited, else a reason."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
            return None
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return "unbound did not exit within 10s of SIGTERM (killed)"

    def log_lines(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read().splitlines()
        except OSError:
            return []

    def log_tail(self, n=15):
        lines = self.log_lines()[-n:]
        return ("\n  --- unbound log ---\n" + "\n".join("  " + x for x in lines)) if lines else ""

    def set_mark(self):
        """From here on, queries in the log are the test's subjects' (Postfix, tlsguardd)."""
        self.mark = len(self.log_lines())

    def queried(self, name, qtype):
        """Did unbound log a query for name/qtype (log-queries: "info: 127.0.0.1 NAME. MX IN")
        since set_mark()?"""
        pat = re.compile(r"info: 127\.\d+\.\d+\.\d+ %s\. %s IN$" % (re.escape(name), qtype), re.I)
        return any(pat.search(line) for line in self.log_lines()[self.mark:])


class SignedZone:
    def __init__(self, apex, zonefile, anchor):
        self.apex, self.zonefile, self.anchor = apex, zonefile, anchor


def sign_zone(directory, apex, records, ns_addr):
    """Write apex's zone (SOA, NS, records) in directory and sign it with fresh keys."""
    apex = apex.rstrip(".") + "."
    os.makedirs(directory, exist_ok=True)
    zonefile = os.path.join(directory, apex + "zone")
    with open(zonefile, "w") as f:
        f.write("; written by tlsguard tests/e2e/dns_env.py\n$ORIGIN %s\n$TTL 60\n" % apex)
        f.write("@ IN SOA ns.%s hostmaster.%s 1 3600 600 86400 60\n" % (apex, apex))
        f.write("@ IN NS ns.%s\nns.%s IN A %s\n" % (apex, apex, ns_addr))
        for rr in records:
            f.write(rr + "\n")

    def run(cmd):
        r = subprocess.run(cmd, cwd=directory, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError("%s: exit %d: %s" % (" ".join(cmd), r.returncode, (r.stderr or r.stdout).strip()))
        return r.stdout.strip()

    ksk = run([LDNS_KEYGEN, "-a", "ECDSAP256SHA256", "-k", apex])
    zsk = run([LDNS_KEYGEN, "-a", "ECDSAP256SHA256", apex])
    run([LDNS_SIGNZONE, "-f", zonefile + ".signed", zonefile, ksk, zsk])
    return SignedZone(apex, zonefile + ".signed", os.path.join(directory, ksk + ".ds"))


# ------------------------------------------------------------------ DNS leak watch

class LeakWatch:
    """Passive AF_PACKET capture of outbound DNS queries (UDP or TCP to port 53), IPv4 and IPv6.

    One socket per interface, each with a classic BPF filter that passes only packets to port 53,
    so the capture costs next to nothing however busy loopback is.  Queries seen on ``lo`` are
    counted too (``lo_seen``): they are the test's own queries to our unbound and prove that the
    watch works; queries on any other interface have left the machine (``seen``)."""

    ETH_P_ALL = 0x0003
    PACKET_OUTGOING = 4
    SO_ATTACH_FILTER = 26
    # Network header at offset 0 (SOCK_DGRAM): accept IPv4/IPv6 UDP or TCP to port 53.
    FILTER = [
        (0x30, 0, 0, 0),  # 0  ldb [0]
        (0x74, 0, 0, 4),  # 1  rsh #4
        (0x15, 0, 6, 4),  # 2  jeq #4 -> 3 (IPv4) : 9
        (0x30, 0, 0, 9),  # 3  ldb [9] (protocol)
        (0x15, 1, 0, 17),  # 4  jeq #17 -> 6 : 5
        (0x15, 0, 10, 6),  # 5  jeq #6 -> 6 : 16
        (0xb1, 0, 0, 0),  # 6  ldxb 4*([0]&0xf)
        (0x48, 0, 0, 2),  # 7  ldh [x+2] (destination port)
        (0x15, 6, 7, 53),  # 8  jeq #53 -> 15 : 16
        (0x15, 0, 6, 6),  # 9  jeq #6 -> 10 (IPv6) : 16
        (0x30, 0, 0, 6),  # 10 ldb [6] (next header)
        (0x15, 1, 0, 17),  # 11 jeq #17 -> 13 : 12
        (0x15, 0, 3, 6),  # 12 jeq #6 -> 13 : 16
        (0x28, 0, 0, 42),  # 13 ldh [42] (destination port)
        (0x15, 0, 1, 53),  # 14 jeq #53 -> 15 : 16
        (0x06, 0, 0, 0xFFFF),  # 15 accept
        (0x06, 0, 0, 0),  # 16 drop
    ]

    def __init__(self):
        self.socks = []
        self.seen = []  # (ifname, dst, proto, qname) on interfaces other than lo
        self.lo_seen = 0
        self.error = None
        self.thread = None
        self.stopping = threading.Event()
        code = b"".join(struct.pack("HBBI", *ins) for ins in self.FILTER)
        self._filter = ctypes.create_string_buffer(code, len(code))
        self._fprog = struct.pack("HL", len(self.FILTER), ctypes.addressof(self._filter))

    def start(self):
        try:
            for _, name in socket.if_nameindex():
                s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(self.ETH_P_ALL))
                self.socks.append(s)
                s.setsockopt(socket.SOL_SOCKET, self.SO_ATTACH_FILTER, self._fprog)
                s.bind((name, self.ETH_P_ALL))
                s.setblocking(False)
        except OSError as e:
            self.error = "cannot watch the interfaces: %s" % e
            for s in self.socks:
                s.close()
            self.socks = []
            return self
        self.thread = threading.Thread(target=self._loop, name="leakwatch", daemon=True)
        self.thread.start()
        return self

    def _loop(self):
        socks = list(self.socks)
        while socks and not self.stopping.is_set():
            try:
                ready, _, _ = select.select(socks, [], [], 0.2)
            except (OSError, ValueError):
                return
            for s in ready:
                while True:
                    try:
                        data, addr = s.recvfrom(65535)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as e:
                        if e.errno == errno.ENETDOWN:  # reported once for an interface that is down
                            continue
                        socks.remove(s)
                        self.error = "watching %s: %s" % (s.getsockname()[0], e)
                        break
                    if addr[2] != self.PACKET_OUTGOING:
                        continue
                    hit = self._dns(addr[1], data)
                    if hit and addr[0] == "lo":
                        self.lo_seen += 1
                    elif hit:
                        self.seen.append((addr[0],) + hit)

    @staticmethod
    def _dns(ethertype, pkt):
        """(dst, 'udp'|'tcp', qname) if pkt is IPv4/IPv6 to port 53, else None."""
        try:
            if ethertype == 0x0800 and pkt[0] >> 4 == 4:
                off, proto, dst = (pkt[0] & 15) * 4, pkt[9], socket.inet_ntop(socket.AF_INET, pkt[16:20])
            elif ethertype == 0x86DD and pkt[0] >> 4 == 6:
                off, proto, dst = 40, pkt[6], socket.inet_ntop(socket.AF_INET6, pkt[24:40])
            else:
                return None
            if proto not in (6, 17) or struct.unpack(">H", pkt[off + 2:off + 4])[0] != 53:
                return None
            if proto == 17:
                return dst, "udp", dns_question(pkt[off + 8:])[0]
            payload = pkt[off + (pkt[off + 12] >> 4) * 4:]
            return dst, "tcp", dns_question(payload[2:])[0] if len(payload) > 14 else None
        except (IndexError, struct.error, ValueError):
            return None

    def stop(self):
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(5)
        for s in self.socks:
            s.close()


def is_test_name(qname):
    """A name only this test would ask for."""
    if not qname:
        return False
    q = qname.lower().rstrip(".")
    return q == "test" or q.endswith(".test") or q.endswith(".invalid") or q.endswith(".127.in-addr.arpa")
