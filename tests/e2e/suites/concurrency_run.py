#!/usr/bin/python3
"""Concurrency: 1,000 flows held at once, each gets exactly its own replies.

Usage (as root; builds nothing):
    /usr/bin/python3 tests/e2e/suites/concurrency_run.py [--tlsguardd build/tlsguardd]
        [--tlsguardctl build/tlsguardctl] [--flows N] [--keep] [-v]

Setup: a temp dir, a cgroup v2 directory, fastmx.py (outside the cgroup) as
an MX without STARTTLS on 127.0.0.172:25, recording every MAIL, RCPT and
message it receives; ``tlsguardd --slots 1024 --metrics 127.0.0.170:19025``
with one guaranteed entry, ``@conc.test``.

One client process runs inside the cgroup (a shell writes its pid into
CGROUP/cgroup.procs and execs this file with ``--client N``), asyncio, N
connections (default 1,000) to the MX at once:
  1. each reads the greeting, sends EHLO and reads the MX's reply;
  2. flow k writes, in one write, ``MAIL FROM:<s<k>-<nonce>@conc.test>``,
     1 + k % 4 ``RCPT TO:<r<k>-<j>@d<k>.example>``, ``DATA`` and k % 3
     ``NOOP``: a guaranteed sender, so tlsguard holds the flow and answers;
     its replies must be exactly ``550 5.7.10 TLS is required, but was not
     offered by host``, one ``503 5.5.1`` per RCPT, ``503 5.5.1`` for DATA,
     one ``250`` per NOOP, in that order, and nothing else: the sequence
     differs from flow to flow, so a reply meant for another flow would
     show up as a wrong code, a wrong count or an extra line;
  3. when every flow has its replies (all N held at once) the client
     stops and the runner checks the metrics: flows_in_state{state="held"}
     and slots{use="held"} are N, and ``tlsguardctl flows`` and ``flows
     --json`` list all N held flows;
  4. even flows send ``RSET`` alone (the agent hands the flow back: 250),
     then deliver one message of ``o<k>@free.test`` (not guaranteed) to
     the MX, with a marker, and QUIT; odd flows send ``RSET`` and ``QUIT``
     pipelined (250, 221).  Nothing more may arrive on any connection (an
     even one must reach EOF: the MX closes; an odd one is read for 2 more
     seconds: tlsguard answered its QUIT and leaves the closing to the
     client, as the held MTA closes after 221 anyway).
The MX must have seen no MAIL of a ``@conc.test`` sender, no RCPT of an
``@d<k>.example`` recipient, and exactly one message per even flow, with
its marker, from its sender.  The metrics afterwards: held verdicts and 550
replies up by N, no flow failed closed, every slot free again.

Output: ``PASS name`` / ``FAIL name: why`` per check, figures (time per
phase, agent VmRSS before/after), then exactly ``N passed, M failed`` alone
on a line; exit status 0 only if none failed.  Everything is removed in a
``finally``: the client, fastmx and tlsguardd by pid, the cgroup, the temp
dir unless --keep.
"""

import asyncio
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(os.path.dirname(HERE), "fixtures")
sys.path.insert(0, FIXTURES)
sys.dont_write_bytecode = True

from daemon import rss, scrape_metrics  # noqa: E402

METRICS = "127.0.0.170:19025"
MX_ADDR = "127.0.0.172"
TLS_REPLY = "550 5.7.10 TLS is required, but was not offered by host"
PHASE_TIMEOUT = 180.0


# ====================================================================== client

class Flow:
    def __init__(self, k, nonce):
        self.k = k
        self.sender = "s%d-%s@conc.test" % (k, nonce)
        self.rcpts = ["r%d-%d@d%d.example" % (k, j, k) for j in range(1 + k % 4)]
        self.noops = k % 3
        self.marker = "conc-%s-%d" % (nonce, k)
        self.problems = []
        self.r = self.w = None

    async def reply(self):
        lines = []
        while True:
            line = await self.r.readline()
            if not line:
                raise EOFError("connection closed")
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(text)
            if len(text) < 4 or text[3] != "-":
                return lines

    async def expect(self, what, prefix):
        lines = await self.reply()
        if not lines[-1].startswith(prefix):
            self.problems.append("flow %d: %s: got %r, want %r" % (self.k, what, " | ".join(lines)[:120], prefix))
        return lines

    async def connect(self):
        self.r, self.w = await asyncio.open_connection(MX_ADDR, 25, limit=1 << 16)
        await self.expect("greeting", "220")
        self.w.write(b"EHLO conc.test\r\n")
        await self.expect("EHLO", "250")

    async def hold(self):
        cmds = ["MAIL FROM:<%s>" % self.sender] + ["RCPT TO:<%s>" % r for r in self.rcpts] + ["DATA"] \
            + ["NOOP"] * self.noops
        self.w.write("".join(c + "\r\n" for c in cmds).encode())
        await self.expect("MAIL", TLS_REPLY)
        for r in self.rcpts:
            await self.expect("RCPT %s" % r, "503 5.5.1")
        await self.expect("DATA", "503 5.5.1")
        for _ in range(self.noops):
            await self.expect("NOOP", "250")

    async def finish(self):
        if self.k % 2 == 0:
            self.w.write(b"RSET\r\n")
            await self.expect("RSET", "250")
            sender = "o%d@free.test" % self.k
            self.w.write(("MAIL FROM:<%s>\r\nRCPT TO:<x%d@free.example>\r\nDATA\r\n" % (sender, self.k)).encode())
            await self.expect("MAIL (free)", "250")
            await self.expect("RCPT (free)", "250")
            await self.expect("DATA (free)", "354")
            self.w.write(("From: %s\r\nX-Soak-Marker: %s\r\n\r\nbody\r\n.\r\n" % (sender, self.marker)).encode())
            await self.expect("end of data (free)", "250")
            self.w.write(b"QUIT\r\n")
            await self.expect("QUIT", "221")
        else:
            self.w.write(b"RSET\r\nQUIT\r\n")
            await self.expect("RSET", "250")
            await self.expect("QUIT", "221")
        # The MX closes after 221; tlsguard answered QUIT for a held flow
        # and leaves the connection to the client. Either way: no more bytes.
        try:
            rest = await asyncio.wait_for(self.r.read(), 30 if self.k % 2 == 0 else 2)
        except asyncio.TimeoutError:
            rest = b""
        if rest:
            self.problems.append("flow %d: %d bytes after the reply to QUIT: %r" % (self.k, len(rest), rest[:80]))
        self.w.close()


async def phase(flows, what, timeout):
    async def one(f):
        if f.problems:
            return
        try:
            await asyncio.wait_for(getattr(f, what)(), timeout)
        except (OSError, EOFError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
            f.problems.append("flow %d: %s: %s" % (f.k, what, type(e).__name__ + (": %s" % e if str(e) else "")))
    t0 = time.monotonic()
    if what == "connect":  # in batches: a burst of SYNs is not what this tests
        for i in range(0, len(flows), 100):
            await asyncio.gather(*(one(f) for f in flows[i:i + 100]))
    else:
        await asyncio.gather(*(one(f) for f in flows))
    return time.monotonic() - t0


async def client_async(n, nonce):
    flows = [Flow(k, nonce) for k in range(n)]
    times = {}
    for what in ("connect", "hold"):
        times[what] = await phase(flows, what, PHASE_TIMEOUT)
    print("BARRIER %d" % sum(1 for f in flows if not f.problems), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    times["finish"] = await phase(flows, "finish", PHASE_TIMEOUT)
    problems = [p for f in flows for p in f.problems]
    print("RESULT " + json.dumps({"problems": problems, "times": times,
                                  "failed_flows": sum(1 for f in flows if f.problems)}), flush=True)


def client_main(argv):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(client_async(int(argv[0]), argv[1]))
    return 0


# ====================================================================== runner

def scrape():
    return scrape_metrics(METRICS)


def flows_listed(daemon, n):
    """tlsguardctl flows and flows --json list every one of the n held flows
    (an answer of the control channel once stopped at 64 KiB, about 700 rows)."""
    p = []
    text = subprocess.run(daemon.ctl + ["flows"], capture_output=True, text=True, timeout=60)
    rows = text.stdout.splitlines()
    held = [r for r in rows[1:] if r.split()[1:2] == ["held"]]
    if text.returncode != 0 or not rows or rows[0].split()[:2] != ["REMOTE", "STATE"] or len(held) != n:
        p.append("flows: exit %d, %d rows, %d held, want %d held" % (text.returncode, len(rows) - 1, len(held), n))
    js = subprocess.run(daemon.ctl + ["flows", "--json"], capture_output=True, text=True, timeout=60)
    try:
        objs = [json.loads(line) for line in js.stdout.splitlines()]
    except ValueError as e:
        objs = []
        p.append("flows --json: a line is not JSON: %s" % e)
    held_j = [o for o in objs if o.get("state") == "held" and o.get("sender", "").endswith("@conc.test")]
    if js.returncode != 0 or len(held_j) != n or len({o["cookie"] for o in objs}) != len(objs):
        p.append("flows --json: exit %d, %d objects, %d held with a @conc.test sender, want %d" % (
            js.returncode, len(objs), len(held_j), n))
    return p


def parse_args(argv):
    import harness
    ap = harness.arg_parser(__doc__)
    ap.add_argument("--flows", type=int, default=1000)
    return ap.parse_args(argv)


def read_sink(path):
    mails, rcpts, msgs = [], [], []
    with open(path, errors="replace") as f:
        for line in f:
            p = line.split()
            if len(p) >= 5 and p[0] == "M":
                mails.append(p[4])
            elif len(p) >= 5 and p[0] == "R":
                rcpts.append(p[4])
            elif len(p) >= 5 and p[0] == "D":
                msgs.append(p[4])
    return mails, rcpts, msgs


def main(argv=None):
    import select
    import harness

    args = parse_args(argv)
    n = args.flows
    results = harness.Results(shown=6)
    report = results.report
    with harness.Run(results, keep=args.keep, root="concurrency_run.py must run as root") as suite:
        client = None

        def stop_client():
            if client is not None and client.poll() is None:
                client.kill()  # our own child, by pid
                client.wait(10)
        try:
            harness.require_tools(args.tlsguardd, args.tlsguardctl)
            tmp = suite.tempdir("tlsguard-conc-")
            cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=mx.conc", "-days", "2",
                            "-keyout", key, "-out", cert], check=True, capture_output=True, timeout=60)
            sink_out = os.path.join(tmp, "sink.log")

            def raise_nofile():
                resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
            sink = subprocess.Popen([sys.executable, os.path.join(FIXTURES, "fastmx.py"), "--out", sink_out,
                                     "--cert", cert, "--key", key, "%s:25:plain" % MX_ADDR], stdout=subprocess.PIPE,
                                    stderr=open(os.path.join(tmp, "sink.err"), "w"), start_new_session=True,
                                    preexec_fn=raise_nofile)

            def stop_sink():
                if sink.poll() is None:
                    sink.terminate()
                    sink.wait(10)
            suite.push(stop_sink)
            if sink.stdout.readline().strip() != b"ready":
                raise RuntimeError("fastmx did not start: %s" % open(os.path.join(tmp, "sink.err")).read()[-400:])
            cgroup = suite.cgroup("tlsguard-conc")
            suite.push(stop_client)
            daemon = suite.daemon(args, cgroup, "@conc.test\n", "--slots", str(max(1024, n)), "--metrics", METRICS)
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            report("setup", [str(e)])
        else:
            rss0 = rss(daemon.proc.pid)
            m0 = scrape()
            nonce = os.urandom(3).hex()
            script = 'echo $$ > "$1" && shift && exec /usr/bin/python3 "$@"'
            client = subprocess.Popen(["/bin/sh", "-c", script, "sh", cgroup.procs_file, os.path.abspath(__file__),
                                       "--client", str(n), nonce], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, start_new_session=True)
            res = None
            barrier_problems, info = [], []
            deadline = time.monotonic() + 3 * PHASE_TIMEOUT + 60
            while time.monotonic() < deadline:
                r, _, _ = select.select([client.stdout], [], [], 1.0)
                if not r:
                    if client.poll() is not None:
                        break
                    continue
                line = client.stdout.readline().decode()
                if not line:
                    break
                if line.startswith("BARRIER "):
                    ready = int(line.split()[1])
                    m1 = scrape()
                    held_flows = m1.get('tlsguard_flows_in_state{state="held"}', -1)
                    held_slots = m1.get('tlsguard_slots{use="held"}', -1)
                    info.append("at the barrier: %d of %d flows answered; metrics: flows held %d, slots held %d, "
                                "flows tracked %d" % (ready, n, held_flows, held_slots,
                                                      m1["tlsguard_flows_tracked"]))
                    if ready != n or held_flows != n or held_slots != n:
                        barrier_problems.append("not all %d flows held at once: %d answered, flows{held} %d, "
                                                "slots{held} %d" % (n, ready, held_flows, held_slots))
                    report("flows_listed", flows_listed(daemon, n))
                    client.stdin.write(b"go\n")
                    client.stdin.flush()
                elif line.startswith("RESULT "):
                    res = json.loads(line[7:])
                    break
            report("all_held_at_once", barrier_problems, info)
            if res is None:
                report("replies", ["client gave no result: %s" % client.stderr.read(600).decode(errors="replace")
                                   if client.poll() is not None else "client timed out"])
            else:
                t = res["times"]
                report("replies", res["problems"], [
                    "%d flows: connect+EHLO %.1f s, held (MAIL..NOOP answered) %.1f s, finish %.1f s; "
                    "%d flows with a problem" % (n, t["connect"], t["hold"], t["finish"], res["failed_flows"])])
            time.sleep(2)  # the sink's flush
            sink.send_signal(signal.SIGTERM)
            sink.wait(30)
            mails, rcpts, msgs = read_sink(sink_out)
            p = []
            leaked = [m for m in mails if m.lower().endswith("@conc.test")]
            if leaked:
                p.append("%d MAIL FROM of guaranteed senders reached the MX: %s" % (len(leaked), leaked[:3]))
            leaked_r = [r for r in rcpts if r.lower().endswith(".example") and not r.startswith("x")]
            if leaked_r:
                p.append("%d RCPT of held flows reached the MX: %s" % (len(leaked_r), leaked_r[:3]))
            want = {"conc-%s-%d" % (nonce, k) for k in range(0, n, 2)}
            got = [m for m in msgs]
            dup = len(got) - len(set(got))
            if set(got) != want or dup:
                p.append("messages at the MX: %d (%d distinct), want %d; missing %d, unexpected %d, duplicated %d" % (
                    len(got), len(set(got)), len(want), len(want - set(got)), len(set(got) - want), dup))
            free_mails = [m for m in mails if m.endswith("@free.test")]
            if len(free_mails) != len(want):
                p.append("%d MAIL of free.test senders at the MX, want %d" % (len(free_mails), len(want)))
            report("mx_saw_only_free_senders", p, ["MX: %d MAIL, %d RCPT, %d messages" % (
                len(mails), len(rcpts), len(msgs))])
            time.sleep(1)
            m2 = scrape()
            p = []

            def d(name):
                return m2.get(name, 0) - m0.get(name, 0)
            if d('tlsguard_flows_diverted_total') != n or d('tlsguard_replies_total{kind="bounced_550"}') != n:
                p.append("held +%d, bounced_550 +%d, want %d each" % (d('tlsguard_flows_diverted_total'),
                                                                      d('tlsguard_replies_total{kind="bounced_550"}'),
                                                                      n))
            failed = sum(d(k) for k in set(m2) | set(m0) if k.startswith("tlsguard_failed_closed_total{"))
            if failed:
                p.append("%d flows failed closed" % failed)
            if m2['tlsguard_slots{use="held"}'] != 0 or m2['tlsguard_slots{use="free"}'] != max(1024, n):
                p.append("slots after: held %d, free %d" % (m2['tlsguard_slots{use="held"}'],
                                                            m2['tlsguard_slots{use="free"}']))
            if d('tlsguard_mail_commands_total{verdict="passed"}') != len(want):
                p.append("passed +%d, want %d" % (d('tlsguard_mail_commands_total{verdict="passed"}'), len(want)))
            rss1 = rss(daemon.proc.pid)
            report("metrics", p, ["held +%d, bounced_550 +%d, passed +%d; tlsguardd VmRSS %d kB -> %d kB, "
                                  "VmHWM %d kB -> %d kB" % (d('tlsguard_flows_diverted_total'),
                                                            d('tlsguard_replies_total{kind="bounced_550"}'),
                                                            d('tlsguard_mail_commands_total{verdict="passed"}'),
                                                            rss0["VmRSS"], rss1["VmRSS"], rss0["VmHWM"],
                                                            rss1["VmHWM"])])
    return suite.finish()


if __name__ == "__main__":
    sys.exit(client_main(sys.argv[2:]) if sys.argv[1:2] == ["--client"] else main())
