#!/usr/bin/python3
"""Two builds of tlsguard's kernel path, or one and the floor, measured at the same time.

Usage (as root, after make and make bench-bins):
    /usr/bin/python3 bench/side_by_side.py [--a DIR|floor] [--b DIR|floor]
        [-s SESSIONS] [-m MESSAGES] [-l BYTES] [--rounds N] [--audit]

On this shared machine the rates of bench/run.py, and the BPF run times
too, swing by 10% from one run to the next: a change that saves 3% of a
program does not show in runs taken one after the other.  This runs both
sides at once instead, so that both see the same machine: each side has a
cgroup of its own with tlsguardd (DIR/tlsguardd, DIR/tlsguardctl; DIR is a
build directory, e.g. build, or another worktree's) or bench/null_hooks
("floor") attached to it, an smtp-sink of its own (A on 127.0.0.63:25, B on
127.0.0.64:25) and, each round, an smtp-source of its own in its cgroup
(-s sessions, -m messages, -l bytes a message; one message a connection, a
sender nobody guarantees).  The kernel's BPF run-time statistics are on for
the run (BPF_ENABLE_STATS).

Per round and side: each program's runs per message and ns a run, the
programs' BPF time per message, and the CPU time per message of the load
generator and of the sink (the kernel's work on loopback is charged to
them; tg_reply_skb runs in the sink's context); then B / A of the BPF time
and of the CPU.  --audit runs both tlsguardd sides with an audit file.

It reports and never judges; bench/run.py keeps the targets.  Traffic stays
on loopback; programs are attached only to the two cgroups it creates;
everything it starts is stopped by pid, and its cgroups, pins and temp dirs
are removed, also on Ctrl-C or SIGTERM.  Exit status 0 when it ran to the
end, 1 when it could not set up, 130 when interrupted.
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree

import run as bench  # noqa: E402  (bench/run.py: BpfStats, Cgroup, in_cgroup, daemon_progs, ...)

ADDRS = {"A": "127.0.0.63", "B": "127.0.0.64"}
SENDER = "bob@plain.bench"


class Interrupted(Exception):
    pass


def on_signal(signum, frame):
    raise Interrupted()


def wait_listening(addr, timeout=10.0):
    import socket
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((addr, 25), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


class Side:
    """One side: its cgroup, sink, and tlsguardd or the floor."""

    def __init__(self, name, what, args):
        self.name, self.what, self.args = name, what, args
        self.addr = ADDRS[name]
        self.cg = None
        self.sink = None
        self.daemon = None
        self.tmp = tempfile.mkdtemp(prefix="tlsguard-sbs-%s-" % name)
        self.pin = "/sys/fs/bpf/tlsguard-sbs-%s-%d" % (name, os.getpid())

    @property
    def floor(self):
        return self.what == "floor"

    def start(self):
        self.cg = bench.Cgroup.create("tlsguard-sbs-%s" % self.name)
        self.sink = subprocess.Popen(["smtp-sink", "-u", "nobody", self.addr + ":25", "4096"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_listening(self.addr):
            raise RuntimeError("%s: smtp-sink does not listen on %s:25" % (self.name, self.addr))
        if self.floor:
            null = os.path.join(self.args.bin, "null_hooks")
            self.daemon = subprocess.Popen([null, "--cgroup", self.cg.path], stdout=subprocess.PIPE, text=True)
            if self.daemon.stdout.readline().strip() != "ready":
                raise RuntimeError("%s: %s did not get ready" % (self.name, null))
        else:
            senders = os.path.join(self.tmp, "senders")
            with open(senders, "w") as f:
                f.write("alice@guaranteed.bench\n")
            sock = os.path.join(self.tmp, "ctl")
            argv = [os.path.join(self.what, "tlsguardd"), "--cgroup", self.cg.path, "--senders", senders,
                    "--port", "25", "--socket", sock, "--pin-dir", self.pin]
            if self.args.audit:
                argv += ["--audit", os.path.join(self.tmp, "audit.jsonl")]
            self.daemon = subprocess.Popen(argv, stdout=open(os.path.join(self.tmp, "log"), "w"),
                                           stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.daemon.poll() is None:
                r = subprocess.run([os.path.join(self.what, "tlsguardctl"), "--socket", sock, "status"],
                                   capture_output=True)
                if r.returncode == 0:
                    break
                time.sleep(0.2)
            else:
                raise RuntimeError("%s: tlsguardd did not answer status (log: %s)" % (
                    self.name, os.path.join(self.tmp, "log")))

    def progs(self):
        """{name: run_cnt, run_time_ns} of the programs its tlsguardd or null_hooks holds."""
        return bench.daemon_progs(self.daemon.pid)

    def load(self):
        argv = ["smtp-source", "-s", str(self.args.sessions), "-m", str(self.args.messages),
                "-l", str(self.args.length), "-f", SENDER, "-t", "x@sink.bench", self.addr + ":25"]
        return subprocess.Popen(bench.in_cgroup(self.cg, argv), stdout=subprocess.DEVNULL)

    def stop(self):
        for p in (self.daemon, self.sink):
            if p is not None and p.poll() is None:
                p.terminate()  # by pid: our own children
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if not self.floor and os.path.isdir(self.pin):
            subprocess.run([os.path.join(self.what, "tlsguardctl"), "--pin-dir", self.pin, "detach"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if self.cg is not None:
            try:
                self.cg.remove()
            except OSError as e:
                print("side_by_side: %s: %s" % (self.cg.path, e), file=sys.stderr)
        shutil.rmtree(self.tmp, ignore_errors=True)


def sink_cpu_us(side):
    return bench.proc_cpu_ticks(side.sink.pid) * 1e6 / os.sysconf("SC_CLK_TCK")


def one_round(sides, n):
    p0 = [s.progs() for s in sides]
    s0 = [sink_cpu_us(s) for s in sides]
    loads = [s.load() for s in sides]
    gen = []
    for p in loads:
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        gen.append((ru.ru_utime + ru.ru_stime) * 1e6)
    s1 = [sink_cpu_us(s) for s in sides]
    out = {}
    for k, s in enumerate(sides):
        rows, bpf = [], 0
        for name, d in sorted(bench.prog_delta(p0[k], s.progs()).items()):
            if d["run_cnt"] > 0:
                bpf += d["run_time_ns"]
                rows.append("%s %.2f x %d ns" % (name, d["run_cnt"] / n, d["avg_ns"]))
        out[s.name] = {"bpf": bpf / n / 1000, "gen": gen[k] / n, "sink": (s1[k] - s0[k]) / n,
                       "rows": rows, "exit": loads[k].returncode}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--a", default="floor", help="build directory or 'floor' (default floor)")
    ap.add_argument("--b", default=os.path.join(REPO, "build"), help="build directory or 'floor' (default build)")
    ap.add_argument("--bin", default=os.path.join(HERE, "build"), help="bench/'s programs (null_hooks)")
    ap.add_argument("-s", "--sessions", type=int, default=10)
    ap.add_argument("-m", "--messages", type=int, default=6000)
    ap.add_argument("-l", "--length", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--audit", action="store_true", help="tlsguardd sides with --audit FILE")
    args = ap.parse_args(argv)
    for what in (args.a, args.b):
        if what != "floor" and not os.access(os.path.join(what, "tlsguardd"), os.X_OK):
            print("side_by_side: %s: no tlsguardd there (a build directory, or 'floor')" % what, file=sys.stderr)
            return 1
    if "floor" in (args.a, args.b) and not os.access(os.path.join(args.bin, "null_hooks"), os.X_OK):
        print("side_by_side: %s/null_hooks missing: make bench-bins" % args.bin, file=sys.stderr)
        return 1
    for tool in ("bpftool", "smtp-sink", "smtp-source"):
        if shutil.which(tool) is None:
            print("side_by_side: %s not found (make bench-deps)" % tool, file=sys.stderr)
            return 1
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sides = [Side("A", args.a, args), Side("B", args.b, args)]
    try:
        with bench.BpfStats():
            for s in sides:
                s.start()
            print("A = %s, B = %s; smtp-source -s %d -m %d -l %d each, at once%s" % (
                args.a, args.b, args.sessions, args.messages, args.length, ", audit on" if args.audit else ""))
            for r in range(args.rounds):
                res = one_round(sides, args.messages)
                for name in ("A", "B"):
                    x = res[name]
                    print("round %d %s: BPF %6.2f us/msg, CPU load %4.0f + sink %4.0f us/msg%s | %s" % (
                        r + 1, name, x["bpf"], x["gen"], x["sink"],
                        "" if x["exit"] == 0 else " (smtp-source exit %d)" % x["exit"], "; ".join(x["rows"])))
                a, b = res["A"], res["B"]
                print("round %d B / A: BPF %.3f, CPU %.3f" % (
                    r + 1, b["bpf"] / a["bpf"] if a["bpf"] else float("nan"),
                    (b["gen"] + b["sink"]) / (a["gen"] + a["sink"]) if a["gen"] + a["sink"] else float("nan")))
    except Interrupted:
        print("side_by_side: interrupted: cleaning up", file=sys.stderr)
        return 130
    except (RuntimeError, OSError) as e:
        print("side_by_side: %s" % e, file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for s in sides:
            s.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
