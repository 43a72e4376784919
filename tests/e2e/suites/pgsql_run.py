#!/usr/bin/python3
"""End-to-end test of the senders from PostgreSQL: one database, three hosts.

Usage (as root; builds nothing):
    /usr/bin/python3 tests/e2e/suites/pgsql_run.py [--tlsguardd build/tlsguardd]
        [--tlsguardctl build/tlsguardctl] [--keep]

Setup: a PostgreSQL 15 cluster of the test's own (initdb, pg_ctl, as user
postgres, in the temp dir; TCP on 127.0.0.1 with ssl = on and a certificate
for 127.0.0.1 made here; dist/pgsql/schema.sql loaded), a recording MX
without STARTTLS on 127.0.0.240:25, and three "hosts": each a Postfix
instance in a cgroup of its own, guarded by its own tlsguardd (its own control
socket, snapshot and senders_file = pgsql:FILE, FILE mode 0600, connecting
with sslmode=verify-full as the role tlsguard, which may only SELECT).

Cases:
  * refused_file: a connection file that group or others can read makes
    tlsguardd exit 1 naming the file.
  * wrong_ca: with a CA that did not sign the server's certificate
    (verify-full), tlsguardd starts failing closed: status says so and names
    the certificate failure.
  * start_synced: the three hosts enforce the database's entries: the same
    count, sequence number and digest in ``status --json`` and on the
    metrics page.
  * switch_on: an INSERT of a sender, committed, reaches each host's kernel
    map (tlsguardctl sender check reads the map) within 1 s of COMMIT
    (measured); then that sender's mail bounces on each host with "TLS is
    required, but was not offered by host", and nothing of it reaches the MX.
  * switch_off: its DELETE is removed from each kernel map within 1 s; its
    mail is delivered by each host.
  * sender_add_refused: tlsguardctl sender add fails, saying the senders come
    from PostgreSQL.
  * db_down_stale: PostgreSQL stopped: every host keeps its entries and says
    stale (status, metric); a guaranteed sender still bounces.
  * restart_on_snapshot: host 2's tlsguardd restarted while the database is
    unreachable enforces its snapshot (status "enforcing the snapshot";
    a guaranteed sender bounces).
  * no_snapshot_fails_closed: host 3's tlsguardd restarted without its
    snapshot and without the database: status "failing closed", and a sender
    who is not guaranteed is deferred (the MTA keeps the mail).
  * db_back: changes made while the hosts could not reach the database (one
    sender added, one removed: a tombstone) arrive on every host once it is
    reachable again; the digests agree; host 3's deferred mail is delivered.
  * db_hangs: host 1's database backend stopped (SIGSTOP): its next resync
    gets no answer within query_timeout (2 s here), it reconnects and
    applies a change made meanwhile; its control socket keeps answering.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "fixtures"))
sys.dont_write_bytecode = True

import harness  # noqa: E402
from daemon import TLS_TEXT, Daemon, scrape_metrics  # noqa: E402
from mx import TestMX  # noqa: E402
from pgsql_env import PostgresCluster, PostgresMissing, free_port  # noqa: E402
from postfix_env import PostfixError, PostfixInstance, PostfixMissing, check_postfix_installed  # noqa: E402

MX_ADDR = "127.0.0.240"
TRANSPORTS = {"plain.test": "smtp:[%s]:25" % MX_ADDR}
DOMAINS = ["users.test"]
SCHEMA = os.path.join(harness.REPO, "dist", "pgsql", "schema.sql")
PASSWORD = "tg-test-pw"
LIVE_SECONDS = 1.0  # COMMIT -> every kernel map
TIMEOUT = 60.0


class Host:
    def __init__(self, suite, args, tmp, n, conninfo):
        self.n = n
        self.dir = os.path.join(tmp, "host%d" % n)
        os.makedirs(self.dir)
        self.cgroup = suite.cgroup("tlsguard-e2e-pg%d" % n)
        self.pf = suite.postfix(PostfixInstance(os.path.join(self.dir, "postfix"), self.cgroup, TRANSPORTS,
                                                DOMAINS, hostname="host%d.test" % n))
        self.snapshot = os.path.join(self.dir, "senders.snapshot")
        self.cf = write_cf(os.path.join(self.dir, "pgsql.cf"), conninfo + " application_name=tg-host%d" % n,
                           self.snapshot)
        self.metrics = "127.0.0.1:%d" % free_port()
        self.suite, self.args = suite, args
        self.daemon = None

    def start(self):
        d = Daemon(self.args.tlsguardd, self.args.tlsguardctl, self.cgroup.path, "pgsql:" + self.cf,
                   os.path.join(self.dir, "ctl.sock"), os.path.join(self.dir, "tlsguardd.log"),
                   postfix_config=self.pf.conf)
        d.argv += ["--metrics", self.metrics]
        if self.daemon is None:
            self.suite.push_daemon(self)  # stops whichever daemon runs at the end
        self.daemon = d
        d.start()

    def stop(self):
        return self.daemon.stop() if self.daemon else None

    @property
    def died_early(self):
        return self.daemon is not None and self.daemon.died_early

    def ctl(self, *argv):
        return subprocess.run(self.daemon.ctl + list(argv), capture_output=True, text=True, timeout=30)

    def status(self):
        r = self.ctl("status", "--json")
        return json.loads(r.stdout)["policy"] if r.returncode == 0 else {}

    def guaranteed(self, addr):
        """What the kernel map says of addr: the request tlsguardctl sender
        check sends, on the control socket (no process started per poll)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(self.daemon.socket_path)
            s.sendall(b"sender check %s\n" % addr.encode())
            reply = b""
            while True:
                b = s.recv(4096)
                if not b:
                    break
                reply += b
        return b": guaranteed" in reply

    def deliver(self, sender, rcpt):
        mail = self.pf.send(sender, [rcpt], subject="pgsql")
        st = self.pf.wait_final([mail], TIMEOUT)[mail.marker].statuses.get(rcpt.lower())
        return (st.status if st else "none", st.text if st else "")

    def bounces(self, sender, rcpt, when, p):
        """Problems in p unless sender's mail bounces with TLS_TEXT."""
        st, text = self.deliver(sender, rcpt)
        if st != "bounced" or TLS_TEXT not in text:
            p.append("host %d: %s's mail %s (%s) %s, want bounced with %r" % (self.n, sender, st, text, when,
                                                                            TLS_TEXT))

    def restart(self, p, before=None):
        """tlsguardd stopped (and detached), ``before()`` run, started again."""
        why = self.stop()
        if why:
            p.append(why)
        if before:
            before()
        self.start()
        return self.status()


def write_cf(path, conninfo, snapshot, mode=0o600):
    with open(path, "w") as f:
        f.write("# tlsguard e2e: the senders from PostgreSQL\nconninfo = %s\nsnapshot = %s\n"
                "resync_interval = 5\nquery_timeout = 2\n" % (conninfo, snapshot))
    os.chmod(path, mode)
    return path


def wait_for(pred, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def commit_to_map(pg, hosts, sql, addr, want):
    """Run ``sql``; the seconds from its COMMIT until each host's kernel map says
    ``addr`` is guaranteed (want) or not: {host: seconds or None}."""
    seen = {}
    start = threading.Event()

    def poll(h):
        start.wait()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5:
            if h.guaranteed(addr) == want:
                seen[h.n] = time.monotonic()
                return
            time.sleep(0.005)
    threads = [threading.Thread(target=poll, args=(h,)) for h in hosts]
    for t in threads:
        t.start()
    try:
        pg.sql(sql)  # psql returns once the COMMIT is done
    finally:
        committed = time.monotonic()
        start.set()
        for t in threads:
            t.join()
    return {h.n: (seen[h.n] - committed if h.n in seen else None) for h in hosts}


def timing_problems(times, what):
    p = []
    for n, t in sorted(times.items()):
        if t is None:
            p.append("host %d: %s not in its kernel map within 5 s of COMMIT" % (n, what))
        elif t > LIVE_SECONDS:
            p.append("host %d: %s took %.3f s from COMMIT to the kernel map (limit %.1f s)" % (n, what, t,
                                                                                               LIVE_SECONDS))
    return p


def refused_file(args, tmp, conninfo, r):
    cf = write_cf(os.path.join(tmp, "readable.cf"), conninfo, os.path.join(tmp, "x.snapshot"), 0o644)
    res = subprocess.run([args.tlsguardd, "--cgroup", "/nonexistent", "--senders", "pgsql:" + cf],
                         capture_output=True, text=True, timeout=60)
    p = []
    if res.returncode != 1 or cf not in res.stderr or "600" not in res.stderr:
        p.append("exit %d, stderr %r: want 1 naming %s and mode 600" % (res.returncode, res.stderr[-300:], cf))
    r.report("refused_file", p)


def wrong_ca(suite, args, tmp, pg, r):
    """verify-full against a CA that did not sign the server: no connection."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=another CA", "-keyout", os.path.join(tmp, "other.key"), "-out",
                    os.path.join(tmp, "other.pem")], check=True, capture_output=True, timeout=60)
    conninfo = pg.conninfo(PASSWORD, verify=True).replace(os.path.join(pg.root, "ca.pem"),
                                                          os.path.join(tmp, "other.pem"))
    cf = write_cf(os.path.join(tmp, "wrongca.cf"), conninfo, os.path.join(tmp, "wrongca.snapshot"))
    cgroup = suite.cgroup("tlsguard-e2e-pgca")
    d = Daemon(args.tlsguardd, args.tlsguardctl, cgroup.path, "pgsql:" + cf, os.path.join(tmp, "wrongca.sock"),
               os.path.join(tmp, "wrongca.log"))
    p = []
    try:
        d.start()
        r2 = subprocess.run(d.ctl + ["status"], capture_output=True, text=True, timeout=30)
        if "failing closed" not in r2.stdout or "certificate verify failed" not in r2.stdout:
            p.append("status does not say failing closed with the certificate failure: %r" % r2.stdout[-600:])
    finally:
        why = d.stop()
        if why:
            p.append(why)
    r.report("wrong_ca", p)


def start_synced(hosts, pg, r):
    p = []
    want = int(pg.sql("SELECT count(*) FROM tlsguard.senders WHERE kind = 'guaranteed'").strip())
    seq = int(pg.sql("SELECT max(seq) FROM tlsguard.sender_changes").strip())
    sts = [h.status() for h in hosts]
    for h, s in zip(hosts, sts):
        if s.get("source") != "pgsql" or s.get("state") != "live" or s.get("entries") != want or \
                s.get("sequence") != seq:
            p.append("host %d: status %r, want live, %d entries, sequence %d" % (h.n, s, want, seq))
    if len({s.get("digest") for s in sts}) != 1:
        p.append("the digests differ: %s" % [s.get("digest") for s in sts])
    m = scrape_metrics(hosts[0].metrics)
    info = [k for k in m if k.startswith("tlsguard_policy_info{")]
    if not info or sts[0].get("digest", "?") not in info[0] or m.get("tlsguard_policy_stale") != 0:
        p.append("metrics: %r, stale %r" % (info, m.get("tlsguard_policy_stale")))
    r.report("start_synced", p)


def switch_on(hosts, pg, mx, r, info):
    addr = "bob@users.test"
    times = commit_to_map(pg, hosts, "INSERT INTO tlsguard.senders (sender) VALUES ('Bob@users.test')", addr, True)
    info.append("COMMIT -> kernel map, add: " + ", ".join("host %d %.3f s" % (n, t or -1)
                                                          for n, t in sorted(times.items())))
    p = timing_problems(times, "the new sender")
    seen = len(mx.transactions())
    for h in hosts:
        h.bounces(addr, "u%d@plain.test" % h.n, "once switched on", p)
    if any(t.sender.lower() == addr for t in mx.transactions()[seen:]):
        p.append("bob's MAIL FROM reached the MX")
    r.report("switch_on", p)


def switch_off(hosts, pg, r, info):
    addr = "bob@users.test"
    times = commit_to_map(pg, hosts, "DELETE FROM tlsguard.senders WHERE sender = 'Bob@users.test'", addr, False)
    info.append("COMMIT -> kernel map, remove: " + ", ".join("host %d %.3f s" % (n, t or -1)
                                                             for n, t in sorted(times.items())))
    p = timing_problems(times, "the removal")
    for h in hosts:
        st, text = h.deliver(addr, "v%d@plain.test" % h.n)
        if st != "sent":
            p.append("host %d: bob's mail %s (%s) after the DELETE, want sent" % (h.n, st, text))
    r.report("switch_off", p)


def sender_add_refused(hosts, r):
    res = hosts[0].ctl("sender", "add", "zed@users.test")
    p = []
    if res.returncode == 0 or "PostgreSQL" not in res.stderr:
        p.append("sender add: exit %d, %r %r" % (res.returncode, res.stdout, res.stderr))
    r.report("sender_add_refused", p)


def db_down_stale(hosts, pg, r):
    before = [h.status() for h in hosts]
    pg.restart(tcp=False)  # stopped; back on its socket directory only: the hosts cannot reach it
    p = []
    for h, b in zip(hosts, before):
        if not wait_for(lambda: h.status().get("stale") is True, 15):
            p.append("host %d: status never said stale: %r" % (h.n, h.status()))
        s = h.status()
        if s.get("entries") != b.get("entries") or s.get("digest") != b.get("digest"):
            p.append("host %d: the policy changed while the database was away: %r -> %r" % (h.n, b, s))
    m = scrape_metrics(hosts[0].metrics)
    if m.get("tlsguard_policy_stale") != 1:
        p.append("tlsguard_policy_stale %r, want 1" % m.get("tlsguard_policy_stale"))
    hosts[0].bounces("alice@users.test", "w1@plain.test", "while the database is away", p)
    r.report("db_down_stale", p)


def restart_on_snapshot(hosts, r):
    h = hosts[1]
    p = []
    s = h.restart(p)
    if s.get("from") != "snapshot" or not s.get("stale") or s.get("digest") != hosts[0].status().get("digest"):
        p.append("host 2 after restart: %r, want the snapshot, stale, host 1's digest" % s)
    out = h.ctl("status").stdout
    if "enforcing the snapshot" not in out:
        p.append("status does not say it enforces the snapshot: %r" % out[-400:])
    if "enforcing the snapshot" not in h.daemon.log_text():
        p.append("the log does not say it enforces the snapshot")
    h.bounces("alice@users.test", "w2@plain.test", "on the snapshot", p)
    r.report("restart_on_snapshot", p)


def no_snapshot_fails_closed(hosts, r):
    """Returns the mail it left deferred."""
    h = hosts[2]
    p = []
    s = h.restart(p, lambda: os.rename(h.snapshot, h.snapshot + ".away"))
    if s.get("state") != "failing closed" or s.get("from") != "none":
        p.append("host 3 without snapshot nor database: %r, want failing closed" % s)
    mail = h.pf.send("carol@users.test", ["w3@plain.test"], subject="pgsql-closed")
    deadline = time.monotonic() + TIMEOUT
    st = None
    while time.monotonic() < deadline:
        st = h.pf.outcomes([mail])[mail.marker].statuses.get("w3@plain.test")
        if st is not None:
            break
        time.sleep(0.2)
    if st is None or st.status != "deferred":
        p.append("host 3: carol's mail %r, want deferred while failing closed" % ((st and (st.status, st.text)),))
    r.report("no_snapshot_fails_closed", p)
    return mail


def db_back(hosts, pg, mx, r, deferred):
    # Made while no host can reach the database: dave added, alice removed.
    pg.sql("INSERT INTO tlsguard.senders (sender) VALUES ('dave@users.test');"
           "DELETE FROM tlsguard.senders WHERE sender = 'alice@users.test'")
    pg.restart(tcp=True)
    p = []
    seq = int(pg.sql("SELECT max(seq) FROM tlsguard.sender_changes").strip())
    for h in hosts:
        if not wait_for(lambda: h.status().get("state") == "live" and h.status().get("sequence") == seq, 40):
            p.append("host %d: not live at sequence %d: %r" % (h.n, seq, h.status()))
        if not h.guaranteed("dave@users.test"):
            p.append("host %d: dave, added meanwhile, is not guaranteed" % h.n)
        if h.guaranteed("alice@users.test"):
            p.append("host %d: alice, removed meanwhile, is still guaranteed" % h.n)
    digests = {h.status().get("digest") for h in hosts}
    if len(digests) != 1:
        p.append("the digests differ: %s" % digests)
    hosts[1].bounces("dave@users.test", "x2@plain.test", "once the database is back", p)
    if deferred is not None:
        out = hosts[2].pf.wait_final([deferred], TIMEOUT)[deferred.marker].statuses.get("w3@plain.test")
        if out is None or out.status != "sent":
            p.append("host 3: carol's deferred mail %r once the database is back, want sent" %
                     ((out and (out.status, out.text)),))
    r.report("db_back", p)


def db_hangs(hosts, pg, r):
    """Host 1's database backend stopped (SIGSTOP: the server still accepts
    TCP, but does not answer): host 1's next resync gets no answer within
    query_timeout; it drops the connection, reconnects and applies a change
    made meanwhile, and its control socket never stops answering."""
    h = hosts[0]
    p = []
    pid = int(pg.sql("SELECT pid FROM pg_stat_activity WHERE application_name = 'tg-host1'").split()[0])
    os.kill(pid, signal.SIGSTOP)
    try:
        pg.sql("INSERT INTO tlsguard.senders (sender) VALUES ('erin@users.test')")
        slowest = 0.0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            try:
                got = h.guaranteed("erin@users.test")
            except OSError:  # socket.timeout included
                got = False
            slowest = max(slowest, time.monotonic() - t0)
            if got:
                break
            time.sleep(0.1)
        else:
            p.append("host 1: erin not guaranteed within 30 s of a stopped backend: %r" % h.status())
        if slowest > 4:
            p.append("host 1's control socket took %.1f s to answer (query_timeout 2 s)" % slowest)
        if "no answer from the database within 2 s" not in h.daemon.log_text():
            p.append("the log does not say the database did not answer")
    finally:
        os.kill(pid, signal.SIGCONT)
        pg.sql("SELECT pg_terminate_backend(%d)" % pid)
    r.report("db_hangs", p)


def main(argv=None):
    args = harness.arg_parser(__doc__, verbose=False).parse_args(argv)
    r = harness.Results(shown=6, more=False)
    with harness.Run(r, keep=args.keep, root="pgsql_run.py must run as root (cgroups, port 25, Postfix)") as suite:
        try:
            harness.require_tools(args.tlsguardd, args.tlsguardctl)
            check_postfix_installed()
            tmp = suite.tempdir("tlsguard-pgsql-", 0o755)
            pg = PostgresCluster(os.path.join(tmp, "pg"), ssl=True)
            suite.push(pg.stop)
            os.makedirs(pg.root)
            pg.start()
            pg.create_db(SCHEMA, PASSWORD)
            pg.sql("INSERT INTO tlsguard.senders (sender) VALUES ('alice@users.test'), ('@guarded.test');"
                   "INSERT INTO tlsguard.senders (sender, kind) VALUES ('SRS0=', 'exempt')")
            conninfo = pg.conninfo(PASSWORD, verify=True)
            mx = suite.started(TestMX(MX_ADDR, 25, name="plain"))
            hosts = [Host(suite, args, tmp, n, conninfo) for n in (1, 2, 3)]
            for h in hosts:
                h.start()
        except (PostgresMissing, PostfixMissing, PostfixError, RuntimeError, OSError,
                subprocess.SubprocessError) as e:
            r.report("setup", ["%s: %s" % (type(e).__name__, e)])
        else:
            with suite.guard():
                info = []
                refused_file(args, tmp, conninfo, r)
                wrong_ca(suite, args, tmp, pg, r)
                start_synced(hosts, pg, r)
                switch_on(hosts, pg, mx, r, info)
                switch_off(hosts, pg, r, info)
                r.say(info)
                sender_add_refused(hosts, r)
                db_down_stale(hosts, pg, r)
                restart_on_snapshot(hosts, r)
                deferred = no_snapshot_fails_closed(hosts, r)
                db_back(hosts, pg, mx, r, deferred)
                db_hangs(hosts, pg, r)
    return suite.finish()


if __name__ == "__main__":
    sys.exit(main())
