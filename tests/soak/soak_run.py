#!/usr/bin/python3
"""The soak run: N messages (default 100,000) through a real Postfix.

Usage (as root; ``make soak [SOAK_MESSAGES=N]`` builds first):
    /usr/bin/python3 tests/soak/soak_run.py [--messages N] [--sessions S]
        [--tlsguardd build/tlsguardd] [--tlsguardctl build/tlsguardctl]
        [--timeout SECONDS] [--keep]

Setup: a private Postfix (tests/e2e/fixtures/postfix_env.py) whose queue lives on
/dev/shm, in a cgroup this run creates, with an smtpd on 127.0.0.190:2525
to inject through (from outside the cgroup) and throughput settings (see
SOAK_MAIN); tlsguardd on that cgroup; one fastmx process (outside the
cgroup) serving three MX hosts: 127.0.0.191 plain (no STARTTLS),
127.0.0.192 STARTTLS pinned to TLS 1.3, 127.0.0.193 STARTTLS pinned to TLS
1.0.  Twenty senders: g0..g9@mta.test guaranteed, n0..n9@mta.test not.

Message i (one recipient, ``r<i>@<host>.soak``, a unique marker
``soak-<run>-<i>`` in its Message-ID and X-Soak-Marker header) goes from a
guaranteed sender when i is even; its host cycles plain 9, TLS 1.3 9, TLS
1.0 2 in 20.  What the policy says:
  * a sender who is not guaranteed: delivered, to any host;
  * a guaranteed sender to the TLS 1.3 host: delivered, over TLS 1.3;
  * a guaranteed sender to the plain host: bounced (550 5.7.10 "TLS is
    required, but was not offered by host");
  * a guaranteed sender to the TLS 1.0 host: bounced after Postfix's
    plaintext retry ("TLS 1.2 or higher is required").

Asserted at the end: every message has its final status in Postfix's log as
the policy says; each delivered marker arrived exactly once, at its own
host, and nothing else arrived; each bounced marker is in exactly one DSN
in its sender's mailbox and none other is; no MAIL command of a guaranteed
sender reached a host outside TLS 1.2 or higher; the queue is empty.
Also: tlsguardd (``--metrics 127.0.0.194:19025``, scraped at the end)
answered 550 exactly once per bounced message.  Reported: wall time
(injection, and until the last outcome), messages/s, counts per outcome,
tlsguardd's VmRSS/VmHWM before and after, its counters (tlsguardctl status)
and metrics.  Output ends with ``PASS soak`` or ``FAIL
soak: ...``; exit status 0 only on PASS.  Everything is removed at the end
(also on Ctrl-C or SIGTERM): tlsguardd, Postfix and the sink by pid,
tlsguard's pinned state (``tlsguardctl --pin-dir DIR detach``, DIR the
run's own), the cgroup, the temp dirs unless --keep.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
E2E = os.path.join(os.path.dirname(HERE), "e2e", "fixtures")
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, E2E)
sys.dont_write_bytecode = True

from postfix_env import (BOUNCE_SUBJECT, Cgroup, PostfixError, PostfixInstance,  # noqa: E402
                         PostfixMissing, check_postfix_installed)
from daemon import Daemon  # noqa: E402

SMTPD = ("127.0.0.190", 2525)
METRICS = "127.0.0.194:19025"
HOSTS = {"plain": "127.0.0.191", "tls13": "127.0.0.192", "tls10": "127.0.0.193"}
CYCLE = ["plain"] * 9 + ["tls13"] * 9 + ["tls10"] * 2
GUARANTEED = ["g%d@mta.test" % i for i in range(10)]
OTHERS = ["n%d@mta.test" % i for i in range(10)]
SOAK_MAIN = {
    # Throughput: many parallel deliveries per host, no delays.
    "default_process_limit": "150",
    "default_destination_concurrency_limit": "60",
    "smtp_destination_concurrency_limit": "60",
    "initial_destination_concurrency": "20",
    # tlsguard destroys weak-TLS connections of guaranteed senders: Postfix
    # must not take that host for dead and stall everyone else's mail.
    "default_destination_concurrency_failed_cohort_limit": "1000",
    "smtp_tls_loglevel": "0",
    "smtpd_peername_lookup": "no",
    "smtpd_client_connection_count_limit": "0",
    "qmgr_message_active_limit": "40000",
    "qmgr_message_recipient_limit": "40000",
    "maximal_queue_lifetime": "1d",
    "bounce_queue_lifetime": "1d",
}


def plan(i):
    """(sender, host key, expected: 'sent' | 'bounced')."""
    g = i % 2 == 0
    host = CYCLE[(i // 2) % len(CYCLE)]
    sender = (GUARANTEED if g else OTHERS)[(i // 40) % 10]
    bounced = g and host != "tls13"
    return sender, host, "bounced" if bounced else "sent"


class SoakPostfix(PostfixInstance):
    def write_config(self):
        super().write_config()
        with open(os.path.join(self.conf, "master.cf"), "a") as f:
            f.write("%s:%d inet  n       -       n       -       -       smtpd\n" % SMTPD)

    def queue_count(self):
        n = 0
        for q in ("maildrop", "incoming", "active", "deferred", "hold"):
            for _, _, files in os.walk(os.path.join(self.queue, q)):
                n += len(files)
        return n


def log(msg):
    print("%s %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def rss(pid):
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM"):
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


# ------------------------------------------------------------ injection

class Injector:
    """S threads, each one SMTP session to Postfix's smtpd at a time, pipelined."""

    def __init__(self, run_id, n, sessions):
        self.run_id, self.n, self.sessions = run_id, n, sessions
        self.next = 0
        self.lock = threading.Lock()
        self.done = 0
        self.errors = []

    def take(self):
        with self.lock:
            if self.next >= self.n or self.errors:
                return None
            i = self.next
            self.next += 1
            return i

    def marker(self, i):
        return "soak-%s-%d" % (self.run_id, i)

    def message(self, i):
        sender, host, _ = plan(i)
        m = self.marker(i)
        rcpt = "r%d@%s.soak" % (i, host)
        body = ("From: %s\r\nTo: %s\r\nSubject: soak %s\r\nMessage-ID: <%s@soak.test>\r\n"
                "X-Soak-Marker: %s\r\n\r\nsoak message %d\r\nmarker: %s\r\n.\r\n" % (
                    sender, rcpt, m, m, m, i, m))
        return ("MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n" % (sender, rcpt)).encode(), body.encode()

    def worker(self):
        try:
            i = self.take()
            while i is not None:  # one session per 200 messages
                s = socket.create_connection(SMTPD, timeout=120)
                f = s.makefile("rb")
                try:
                    self.expect(f, "220")
                    s.sendall(b"EHLO injector.soak\r\n")
                    self.expect(f, "250")
                    for _ in range(200):
                        env, body = self.message(i)
                        s.sendall(env)
                        for code in ("250", "250", "354"):
                            self.expect(f, code, i)
                        s.sendall(body)
                        self.expect(f, "250", i)
                        with self.lock:
                            self.done += 1
                        i = self.take()
                        if i is None:
                            break
                    s.sendall(b"QUIT\r\n")
                finally:
                    f.close()
                    s.close()
        except (OSError, RuntimeError) as e:
            with self.lock:
                self.errors.append("injector: %s" % e)

    def expect(self, f, code, i=None):
        while True:
            line = f.readline()
            if not line:
                raise RuntimeError("smtpd closed the connection (message %s)" % i)
            if line[3:4] != b"-":
                break
        if not line.startswith(code.encode()):
            raise RuntimeError("message %s: expected %s, got %r" % (i, code, line))

    def run(self):
        threads = [threading.Thread(target=self.worker, daemon=True) for _ in range(self.sessions)]
        for t in threads:
            t.start()
        return threads


# ------------------------------------------------------------ outcomes

_LOG = re.compile(r"postfix[^\s/]*/([\w-]+)\[\d+\]: ([0-9A-F]{6,}): (.*)$")
_STATUS = re.compile(r"to=<([^>]*)>,.* relay=([^,]*),.* dsn=([\d.]+), status=(\w+) \((.*)\)$")


class LogFollower:
    """Reads Postfix's log incrementally: marker -> (status, dsn, text), for final statuses."""

    def __init__(self, path, run_id):
        self.path, self.run_id = path, run_id
        self.pos = 0
        self.partial = b""
        self.qid = {}
        self.final = {}
        self.deferred = 0
        self.mid = re.compile(r"message-id=<soak-%s-(\d+)@soak\.test>" % re.escape(run_id))

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return
        self.pos += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            m = _LOG.search(line)
            if not m:
                continue
            prog, qid, rest = m.groups()
            if prog == "cleanup":
                mm = self.mid.search(rest)
                if mm:
                    self.qid[qid] = int(mm.group(1))
                continue
            i = self.qid.get(qid)
            if i is None:
                continue
            s = _STATUS.search(rest)
            if not s:
                continue
            if s.group(4) == "deferred":
                self.deferred += 1
                continue
            if i in self.final:
                self.final[i] = ("duplicate status", s.group(3), line)
            else:
                self.final[i] = (s.group(4), s.group(3), s.group(5))


def read_sink(path):
    delivered = {}  # marker index -> [(host, tls)]
    leaks = []
    other = 0
    conns = tls = 0
    with open(path, errors="replace") as f:
        for line in f:
            p = line.split()
            if not p:
                continue
            if p[0] == "O":
                conns += 1
            elif p[0] == "T":
                tls += 1
            elif p[0] == "M" and len(p) >= 5:
                if p[4] in GUARANTEED and p[3] not in ("TLSv1.2", "TLSv1.3"):
                    leaks.append(line.strip())
            elif p[0] == "D" and len(p) >= 5:
                m = re.match(r"soak-[0-9a-f]+-(\d+)$", p[4])
                if m:
                    delivered.setdefault(int(m.group(1)), []).append((p[1], p[3]))
                else:
                    other += 1
    return delivered, leaks, other, conns, tls


def read_bounces(pf, run_id):
    """marker index -> DSN count, over every sender's mailbox (mbox, read raw)."""
    counts = {}
    texts = {}
    mre = re.compile(rb"X-Soak-Marker: soak-" + re.escape(run_id.encode()) + rb"-(\d+)")
    for name in os.listdir(pf.maildir):
        with open(os.path.join(pf.maildir, name), "rb") as f:
            data = f.read()
        for msg in re.split(rb"\n(?=From )", data):
            if BOUNCE_SUBJECT.encode() not in msg[:4000]:
                continue
            m = mre.search(msg)
            if not m:
                continue
            i = int(m.group(1))
            counts[i] = counts.get(i, 0) + 1
            texts[i] = msg
    return counts, texts


def make_cert(tmp):
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-subj", "/CN=mx.soak", "-days", "2", "-keyout", key, "-out", cert],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def scrape():
    from daemon import scrape_metrics
    return scrape_metrics(METRICS)


def ctl_status(daemon):
    r = subprocess.run(daemon.ctl + ["status"], capture_output=True, text=True, timeout=10)
    return r.stdout.strip()


def run(args, tmp, pf, cg, daemon, sink_out, problems):
    run_id = os.urandom(3).hex()
    n = args.messages
    expect = {"sent": 0, "bounced": 0}
    for i in range(n):
        expect[plan(i)[2]] += 1
    rss0 = rss(daemon.proc.pid)
    log("tlsguardd pid %d: VmRSS %s kB, VmHWM %s kB before" % (daemon.proc.pid, rss0.get("VmRSS"),
                                                               rss0.get("VmHWM")))
    follower = LogFollower(pf.maillog, run_id)
    inj = Injector(run_id, n, args.sessions)
    t0 = time.monotonic()
    threads = inj.run()
    t_inj = None
    deadline = t0 + args.timeout
    last = 0
    peak_rss = 0
    while time.monotonic() < deadline:
        time.sleep(1)
        follower.poll()
        peak_rss = max(peak_rss, rss(daemon.proc.pid).get("VmRSS", 0))
        if t_inj is None and not any(t.is_alive() for t in threads):
            t_inj = time.monotonic() - t0
            log("injected %d messages in %.0f s (%.0f/s)%s" % (inj.done, t_inj, inj.done / max(t_inj, 1e-3),
                                                               "; " + "; ".join(inj.errors) if inj.errors else ""))
            if inj.errors:
                problems.extend(inj.errors)
                return
        if time.monotonic() - last >= 30:
            last = time.monotonic()
            log("injected %d, final %d of %d, deferrals %d, queue %d, tlsguardd VmRSS %s kB" % (
                inj.done, len(follower.final), n, follower.deferred, pf.queue_count(),
                rss(daemon.proc.pid).get("VmRSS")))
        if daemon.proc.poll() is not None:
            problems.append("tlsguardd exited with %s%s" % (daemon.proc.returncode, daemon.log_tail()))
            return
        if t_inj is not None and len(follower.final) >= n and pf.queue_count() == 0:
            break
    t_all = time.monotonic() - t0
    time.sleep(3)  # the sink's last flush, the last DSN deliveries
    follower.poll()
    rss1 = rss(daemon.proc.pid)
    status = ctl_status(daemon)
    metrics = scrape()

    outcomes = {"sent": 0, "bounced": 0}
    wrong = []
    for i in range(n):
        want = plan(i)[2]
        got = follower.final.get(i)
        if got is None:
            wrong.append("message %d: no final status (want %s)" % (i, want))
            continue
        if got[0] != want:
            wrong.append("message %d (%s -> %s): %s dsn=%s (%s), want %s" % (
                i, plan(i)[0], plan(i)[1], got[0], got[1], got[2][:160], want))
            continue
        if want == "bounced":
            text = ("TLS 1.2 or higher is required" if plan(i)[1] == "tls10"
                    else "TLS is required, but was not offered by host")
            if text not in got[2]:
                wrong.append("message %d bounced for another reason: %s" % (i, got[2][:160]))
        outcomes[want] += 1
    if wrong:
        problems.append("%d messages with the wrong outcome: %s" % (len(wrong), "; ".join(wrong[:5])))

    delivered, leaks, other, conns, tls_conns = read_sink(sink_out)
    bounces, _ = read_bounces(pf, run_id)
    lost = dup = misrouted = extra = 0
    for i in range(n):
        sender, host, want = plan(i)
        got = delivered.get(i, [])
        if want == "sent":
            if not got:
                lost += 1
            elif len(got) > 1:
                dup += 1
            elif got[0][0] != HOSTS[host] or (host == "tls13" and got[0][1] != "TLSv1.3"):
                misrouted += 1
            if bounces.get(i):
                extra += 1
        else:
            if got:
                extra += 1
            c = bounces.get(i, 0)
            if c == 0:
                lost += 1
            elif c > 1:
                dup += 1
    extra += other + sum(1 for i in delivered if i >= n) + sum(1 for i in bounces if i >= n)
    for what, k in (("lost (neither at a sink nor bounced)", lost), ("duplicated", dup),
                    ("delivered to the wrong host or TLS version", misrouted),
                    ("that arrived where the policy says they must not", extra)):
        if k:
            problems.append("%d messages %s" % (k, what))
    if leaks:
        problems.append("%d MAIL commands of guaranteed senders reached a host outside TLS 1.2+: %s" % (
            len(leaks), "; ".join(leaks[:3])))
    # Each bounce is one 550 of tlsguard's (the TLS 1.0 ones on the plaintext retry).
    b550 = metrics.get('tlsguard_replies_total{kind="bounced_550"}', 0)
    if b550 != expect["bounced"]:
        problems.append("tlsguard answered 550 %d times, want %d (one per bounced message)" % (
            b550, expect["bounced"]))
    left = pf.queue_count()
    if left:
        problems.append("%d messages still queued" % left)

    by_cell = {}
    for i in range(n):
        s, h, _ = plan(i)
        k = ("guaranteed" if s in GUARANTEED else "other", h)
        by_cell[k] = by_cell.get(k, 0) + 1
    log("figures:")
    print("  messages:            %d (injected %d in %.0f s, %.0f/s)" % (n, inj.done, t_inj or 0,
                                                                        inj.done / max(t_inj or 1, 1e-3)))
    print("  wall time:           %.0f s from the first injection to the last outcome: %.0f messages/s" % (
        t_all, n / max(t_all, 1e-3)))
    print("  outcomes (Postfix):  %d sent, %d bounced (expected %d, %d); %d deferrals on the way" % (
        outcomes["sent"], outcomes["bounced"], expect["sent"], expect["bounced"], follower.deferred))
    print("  at the sinks:        %d distinct markers delivered, %d connections, %d TLS handshakes" % (
        len(delivered), conns, tls_conns))
    print("  in the mailboxes:    %d DSNs for %d distinct markers" % (sum(bounces.values()), len(bounces)))
    for k in sorted(by_cell):
        print("  %-10s -> %-6s %6d" % (k[0], k[1], by_cell[k]))
    print("  lost %d, duplicated %d, misrouted %d, leaked MAIL %d" % (lost, dup, misrouted, len(leaks)))
    print("  tlsguardd VmRSS %s kB -> %s kB (peak seen %d kB), VmHWM %s kB -> %s kB" % (
        rss0.get("VmRSS"), rss1.get("VmRSS"), peak_rss, rss0.get("VmHWM"), rss1.get("VmHWM")))
    print("  metrics:\n" + "\n".join("    %s %d" % (k, v) for k, v in sorted(metrics.items())
                                      if v and ("verdicts" in k or "failed_closed" in k or "drops" in k
                                                or "overruns" in k or k == "tlsguard_flows_total")))
    print("  tlsguardctl status:\n" + "\n".join("    " + x for x in status.splitlines()[1:]))


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=100000)
    ap.add_argument("--sessions", type=int, default=8, help="parallel injection sessions")
    ap.add_argument("--timeout", type=float, default=6 * 3600, help="seconds for the whole run")
    ap.add_argument("--tlsguardd", default=os.path.join(REPO, "build", "tlsguardd"))
    ap.add_argument("--tlsguardctl", default=os.path.join(REPO, "build", "tlsguardctl"))
    ap.add_argument("--keep", action="store_true")
    return ap.parse_args(argv)


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


def main(argv=None):
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("soak_run.py must run as root", file=sys.stderr)
        return 2
    if args.messages < 1:
        print("--messages must be at least 1", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    problems = []
    tmp = shm = cg = pf = daemon = sink = None
    try:
        try:
            check_postfix_installed()
            tmp = tempfile.mkdtemp(prefix="tlsguard-soak-")
            shm = tempfile.mkdtemp(prefix="tlsguard-soak-pf-",
                                   dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
            os.chmod(shm, 0o755)
            cert, key = make_cert(tmp)
            sink_out = os.path.join(tmp, "sink.log")
            sink = subprocess.Popen([sys.executable, os.path.join(E2E, "fastmx.py"), "--out", sink_out,
                                     "--cert", cert, "--key", key]
                                    + ["%s:25:%s" % (a, k) for k, a in HOSTS.items()],
                                    stdout=subprocess.PIPE, stderr=open(os.path.join(tmp, "sink.err"), "w"),
                                    start_new_session=True)
            if sink.stdout.readline().strip() != b"ready":
                raise RuntimeError("fastmx did not start: %s" % open(os.path.join(tmp, "sink.err")).read())
            cg = Cgroup.create(prefix="tlsguard-soak")
            transports = {"%s.soak" % k: "smtp:[%s]:25" % a for k, a in HOSTS.items()}
            pf = SoakPostfix(shm, cg, transports, ["mta.test"], mailboxes=GUARANTEED + OTHERS,
                             extra_main=SOAK_MAIN)
            pf.start()
            senders = os.path.join(tmp, "senders")
            with open(senders, "w") as f:
                f.write("# soak: guaranteed senders\n" + "".join(a + "\n" for a in GUARANTEED))
            daemon = Daemon(args.tlsguardd, args.tlsguardctl, cg.path, senders,
                            os.path.join(tmp, "tlsguardd.sock"), os.path.join(tmp, "tlsguardd.log"))
            daemon.argv += ["--metrics", METRICS]
            daemon.start()
            log("soak: %d messages, Postfix in %s, queue on %s, tlsguardd pid %d" % (
                args.messages, cg.path, shm, daemon.proc.pid))
        except (PostfixMissing, PostfixError, RuntimeError, OSError, subprocess.SubprocessError) as e:
            problems.append("setup: %s" % e)
        else:
            run(args, tmp, pf, cg, daemon, sink_out, problems)
    except KeyboardInterrupt:
        problems.append("interrupted")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if daemon is not None:
            why = daemon.stop()
            if why and not daemon.died_early:
                problems.append(why)
        if pf is not None:
            try:
                pf.stop(timeout=60)
            except (PostfixError, OSError, subprocess.SubprocessError) as e:
                problems.append(str(e))
        if sink is not None:
            sink.terminate()  # our own child, by pid
            try:
                sink.wait(10)
            except subprocess.TimeoutExpired:
                sink.kill()
                sink.wait()
        if cg is not None:
            try:
                cg.remove()
            except (RuntimeError, OSError) as e:
                problems.append(str(e))
        for d in (tmp, shm):
            if d is None:
                continue
            if args.keep:
                print("kept %s" % d, file=sys.stderr)
            else:
                shutil.rmtree(d, ignore_errors=True)
    if problems:
        print("FAIL soak: %s" % "; ".join(problems), flush=True)
        return 1
    print("PASS soak", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
