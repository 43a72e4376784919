// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tlsguardctl - ask a running tlsguardd what it is doing
 * SYNOPSIS
 *	tlsguardctl [--socket PATH] status [--json]
 *	tlsguardctl [--socket PATH] flows [--json]
 *	tlsguardctl [--socket PATH] [--pin-dir DIR] detach
 *	tlsguardctl [--socket PATH] [--pin-dir DIR] start-check daemon|pinned
 *	tlsguardctl [--socket PATH] audit [--file FILE] [--sender ADDR]
 *		[--since TIME]
 *	tlsguardctl [--socket PATH] sender add|remove ADDRESS
 *	tlsguardctl [--socket PATH] sender check ADDRESS [--json]
 *	tlsguardctl [--socket PATH] sender list
 *	tlsguardctl [--socket PATH] reload
 *	tlsguardctl [--socket PATH] config [-n]
 *	tlsguardctl probe DOMAIN|HOST:PORT|IP|[IP]:PORT
 *		[--resolver IP[:PORT]] [--timeout SECONDS] [--json]
 *	tlsguardctl --help | --version
 * DESCRIPTION
 *	status prints a short summary (cgroup, senders, flows tracked,
 *	flows diverted, messages held) of the tlsguardd listening on the
 *	control socket (default /run/tlsguard/tlsguardd.sock).
 *
 *	--json makes status one JSON object, flows one JSON object a line
 *	(no header), sender list an array of the entries, config one
 *	object of "name": "value", audit the matching records as they are
 *	in the file (one JSON object a line), and sender check one object (address, verdict:
 *	guaranteed, exempt or not-guaranteed, by: the entry that decided).
 *	--help prints the usage on stdout and exits 0; --version prints
 *	"tlsguardctl VERSION".
 *
 *	flows prints one line per tracked connection, every one however
 *	many: the remote host as
 *	host[addr]:port, its state (plain, handshake, tls, weak-tls,
 *	tls-failed, held, failed), the TLS version negotiated, whether the
 *	host's EHLO reply offered STARTTLS, its age in seconds and the last
 *	sender seen on it in plaintext.
 *
 *	detach removes tlsguard from the kernel: it asks the running
 *	tlsguardd to detach and unpin everything and exit; then (or with no
 *	tlsguardd running) it removes what is left pinned under --pin-dir
 *	(default /sys/fs/bpf/tlsguard, tlsguard.conf's pin_dir): the cgroup
 *	links, then every generation of pinned maps, a draining one too. It
 *	removes only tlsguard's pins (tg_*, in pin_dir and its L<digest>
 *	directories), and nothing from a directory that is not a directory
 *	of its own on a bpf filesystem.
 *
 *	start-check says whether the MTA may start (the Postfix drop-in's
 *	ExecStartPre; an empty mode is daemon): with daemon, only when
 *	tlsguardd answers on its socket; with pinned, also when it does not
 *	but the state a tlsguardd left pinned under --pin-dir (the cgroup's
 *	sock_ops link, which holds its programs and maps) enforces in the
 *	kernel. Exit status 0 when the MTA may start, 1 (with one line
 *	saying why) when it may not.
 *
 *	audit prints the audit trail (tlsguardd --audit FILE; the running
 *	daemon is asked for its file unless --file is given), one message
 *	attempt a paragraph: time, verdict, sender, host, TLS version and
 *	cipher, then each recipient with the host's reply and the reply to
 *	the message data. --sender keeps the records of one sender (case and
 *	"+extension" ignored); --since keeps those from TIME on (UTC, in the
 *	records' own form: 2026-11-28, 2026-11-28T08:00, ...).
 *
 *	sender add ADDRESS guarantees a sender ("user@domain" or "@domain")
 *	at once, in the kernel, and appends it to the senders file (written
 *	atomically); sender remove ADDRESS takes it out of both. sender
 *	check ADDRESS says what the kernel decides for a MAIL FROM of that
 *	address: guaranteed, exempt or not guaranteed (exit status 0 only
 *	when guaranteed, 3 otherwise). sender list prints the entries of
 *	the senders file.
 *
 *	reload reads the senders file again, as SIGHUP does. config prints
 *	the daemon's effective settings as "name = value" lines; -n only
 *	those that differ from the defaults (see tlsguard.conf(5)).
 *
 *	probe checks a destination as a guaranteed sender's mail would
 *	meet it: MX hosts, STARTTLS, TLS version and cipher, certificate,
 *	TLSA records, and the verdict per host and overall; it needs no
 *	tlsguardd. Exit status 0 when every host takes TLS 1.2 or higher,
 *	1 when some host would bounce or defer, 2 on a usage or lookup
 *	error (see tools/tg_probe.h).
 * DIAGNOSTICS
 *	A usage error prints the usage on stderr, exit status 2.
 *	Exit status 0 when tlsguardd answered; 1 with one line
 *	"tlsguardctl: fatal: ..." when it is not running, or refused. A line
 *	of the audit file that is not a record is a warning naming the file
 *	and line, and is skipped.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "tg_ctl.h"
#include "tg_json.h"
#include "tg_pindir.h"
#include "tg_probe.h"
#include "tg_smtp.h"

static void fatal(const char *fmt, const char *a, const char *b)
{
	fprintf(stderr, "tlsguardctl: fatal: ");
	fprintf(stderr, fmt, a, b);
	fputc('\n', stderr);
	exit(1);
}

static const char tg_usage[] =
	"usage: tlsguardctl [--socket PATH] status|flows [--json]\n"
	"       tlsguardctl [--socket PATH] reload\n"
	"       tlsguardctl [--socket PATH] [--pin-dir DIR] detach\n"
	"       tlsguardctl [--socket PATH] [--pin-dir DIR] start-check daemon|pinned\n"
	"       tlsguardctl [--socket PATH] audit [--file FILE] "
	"[--sender ADDR] [--since TIME] [--json]\n"
	"       tlsguardctl [--socket PATH] sender add|remove ADDRESS\n"
	"       tlsguardctl [--socket PATH] sender check ADDRESS [--json]\n"
	"       tlsguardctl [--socket PATH] sender list [--json]\n"
	"       tlsguardctl [--socket PATH] config [-n] [--json]\n"
	"       tlsguardctl probe DOMAIN|HOST:PORT|IP|[IP]:PORT "
	"[--resolver IP[:PORT]] [--timeout SECONDS] [--json]\n"
	"       tlsguardctl --help | --version\n";

/* A usage error: the usage on stderr, exit status 2. */
static void usage(void)
{
	fputs(tg_usage, stderr);
	exit(2);
}

/*
 * Ask the daemon; its answer (after "ok\n"), read to the end: an answer
 * has no size limit (flows at a full table).
 */
/*
 * A connection to the daemon's control socket, reads bounded to 5 s;
 * -1 (errno set) when nothing listens there.
 */
static int tg_connect(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = 5 };
	int fd, err;

	if (strlen(path) >= sizeof(sun.sun_path))
		fatal("--socket %s: path too long%s", path, "");
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		fatal("socket: %s%s", strerror(errno), "");
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		err = errno;
		close(fd);
		errno = err;
		return -1;
	}
	return fd;
}

static char *tg_ask(const char *path, const char *cmd)
{
	static char *reply; /* kept to the end: the answer is printed */
	size_t got = 0, cap = 65536;
	ssize_t n;
	int fd;

	reply = malloc(cap + 1);
	if (!reply)
		fatal("out of memory%s%s", "", "");
	fd = tg_connect(path);
	if (fd < 0)
		fatal("tlsguardd is not running (%s: %s)", path,
		      strerror(errno));
	if (dprintf(fd, "%s\n", cmd) < 0)
		fatal("%s: %s", path, strerror(errno));
	while ((n = read(fd, reply + got, cap - got)) > 0) {
		got += (size_t)n;
		if (got == cap) {
			char *more = realloc(reply, 2 * cap + 1);

			if (!more)
				fatal("out of memory%s%s", "", "");
			reply = more;
			cap *= 2;
		}
	}
	if (n < 0)
		fatal("%s: %s (the answer is incomplete)", path,
		      strerror(errno));
	close(fd);
	reply[got] = 0;
	if (strncmp(reply, "ok\n", 3) != 0) {
		reply[strcspn(reply, "\n")] = 0;
		fatal("tlsguardd answered: %s%s", got ? reply : "nothing", "");
	}
	return reply + 3;
}

/*
 * The UTF-8 form of code point cp (below U+10000) at out[*n], if it fits;
 * a control character as '?', so that a host's text cannot drive the
 * terminal.
 */
static void tg_put_utf8(char *out, size_t len, size_t *n, unsigned cp)
{
	unsigned char b[3];
	size_t k = 0, i;

	if (cp < 0x20 || cp == 0x7f) {
		b[k++] = '?';
	} else if (cp < 0x80) {
		b[k++] = (unsigned char)cp;
	} else if (cp < 0x800) {
		b[k++] = (unsigned char)(0xc0 | cp >> 6);
		b[k++] = (unsigned char)(0x80 | (cp & 0x3f));
	} else {
		b[k++] = (unsigned char)(0xe0 | cp >> 12);
		b[k++] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		b[k++] = (unsigned char)(0x80 | (cp & 0x3f));
	}
	for (i = 0; i < k && *n + 1 < len; i++)
		out[(*n)++] = (char)b[i];
}

/*
 * The string value of "key" in an audit record, decoded, from *pos on;
 * *pos moves past it. The records are tlsguardd's own, flat JSON: keys
 * are unique within their object, strings use only \" \\ and \uXXXX
 * (decoded to UTF-8, as a JSON reader does: "\u00e9" is printed as
 * U+00E9).
 */
static int tg_json_get(const char *rec, const char **pos, const char *key,
		       char *out, size_t len)
{
	char pat[64];
	const char *p;
	size_t n = 0;

	snprintf(pat, sizeof(pat), "\"%s\":\"", key);
	p = strstr(*pos, pat);
	if (!p)
		return -1;
	for (p += strlen(pat); *p && *p != '"'; p++) {
		if (*p == '\\') {
			p++;
			if (*p == 'u' && strspn(p + 1, "0123456789abcdefABCDEF") >= 4) {
				char hex[5] = { p[1], p[2], p[3], p[4], 0 };

				tg_put_utf8(out, len, &n,
					    (unsigned)strtoul(hex, NULL, 16));
				p += 4;
				continue;
			}
			if (!*p)
				return -1;
		}
		if (n + 1 < len)
			out[n++] = *p;
	}
	if (*p != '"')
		return -1;
	out[n] = 0;
	*pos = p + 1;
	(void)rec;
	return 0;
}

static int tg_since_ok(const char *s)
{
	for (; *s; s++)
		if (!((*s >= '0' && *s <= '9') || *s == '-' || *s == ':' ||
		      *s == 'T' || *s == '.' || *s == 'Z'))
			return 0;
	return 1;
}

static int tg_audit(const char *sock, const char *file, const char *sender,
		    const char *since, int json)
{
	char path[4096], *line = NULL, time_s[64], verdict[32], from[300];
	char host[160], remote[80], version[16], cipher[80], addr[300];
	char reply[300], data[300], guaranteed[8];
	__u64 want_key = 0, want_dom = 0, key, dom;
	unsigned long lineno = 0;
	size_t cap = 0;
	FILE *fp;

	if (since && !tg_since_ok(since))
		fatal("--since %s: expected a UTC time such as "
		      "2026-11-28T08:00%s", since, "");
	if (sender) {
		want_key = tg_addr_key(sender, (__u32)strlen(sender),
				       &want_dom);
		if (!want_key)
			fatal("--sender %s: not an address%s", sender, "");
	}
	if (!file) {
		const char *r = tg_ask(sock, "audit-file");
		size_t n = strcspn(r, "\n");

		if (n >= sizeof(path))
			fatal("tlsguardd's audit file name is too long%s%s", "",
			      "");
		memcpy(path, r, n);
		path[n] = 0;
		if (!path[0])
			fatal("tlsguardd keeps no audit trail (--audit FILE)%s%s",
			      "", "");
		file = path;
	}
	fp = fopen(file, "r");
	if (!fp)
		fatal("%s: %s", file, strerror(errno));
	while (getline(&line, &cap, fp) > 0) {
		const char *p = line;

		lineno++;
		/* the host's name: "remote":{"name":...}, or "host" (schema 1) */
		if (tg_json_get(line, &p, "time", time_s, sizeof(time_s)) ||
		    tg_json_get(line, &p, "remote", remote, sizeof(remote)) ||
		    (tg_json_get(line, &p, "name", host, sizeof(host)) &&
		     tg_json_get(line, &p, "host", host, sizeof(host))) ||
		    tg_json_get(line, &p, "sender", from, sizeof(from))) {
			fprintf(stderr, "tlsguardctl: warning: %s:%lu: not an "
				"audit record\n", file, lineno);
			continue;
		}
		if (since && strcmp(time_s, since) < 0)
			continue;
		if (sender) {
			key = tg_addr_key(from, (__u32)strlen(from), &dom);
			if (!key || key != want_key)
				continue;
		}
		if (json) {
			/* the record as tlsguardd wrote it: one JSON object */
			fputs(line, stdout);
			continue;
		}
		p = strstr(line, "\"guaranteed\":");
		snprintf(guaranteed, sizeof(guaranteed), "%s",
			 p && strncmp(p + 13, "true", 4) == 0 ? "yes" : "no");
		p = line;
		if (tg_json_get(line, &p, "verdict", verdict, sizeof(verdict)))
			snprintf(verdict, sizeof(verdict), "?");
		p = strstr(line, "\"tls\":{");
		version[0] = cipher[0] = 0;
		if (p) {
			tg_json_get(line, &p, "version", version,
				    sizeof(version));
			tg_json_get(line, &p, "cipher", cipher, sizeof(cipher));
		}
		printf("%s %s from=<%s>%s to %s[%s] %s%s%s\n", time_s, verdict,
		       from, strcmp(guaranteed, "yes") == 0 ? " (guaranteed)" : "",
		       host[0] ? host : "?", remote,
		       version[0] ? version : "plaintext", cipher[0] ? " " : "",
		       cipher);
		p = strstr(line, "\"recipients\":[");
		while (p && tg_json_get(line, &p, "address", addr,
					sizeof(addr)) == 0 &&
		       tg_json_get(line, &p, "reply", reply, sizeof(reply)) == 0)
			printf("    <%s>: %s\n", addr, reply[0] ? reply : "-");
		p = line;
		if (tg_json_get(line, &p, "mail_reply", reply, sizeof(reply)) == 0 &&
		    reply[0] && (reply[0] != '2'))
			printf("    MAIL FROM: %s\n", reply);
		p = line;
		if (tg_json_get(line, &p, "data_reply", data, sizeof(data)) == 0 &&
		    data[0])
			printf("    message: %s\n", data);
	}
	free(line);
	fclose(fp);
	return 0;
}

/*
 * Remove what a tlsguardd left pinned under dir; the kernel frees what
 * is unused, and the cgroup links' programs detach with their last pin.
 * A daemon that answers is asked first (it unpins its own pin_dir and
 * exits); one that dies meanwhile is no error: its pins are removed
 * here all the same.
 */
static int tg_detach(const char *sock, const char *dir)
{
	char p[512], err[512];
	int fd, i;

	if ((fd = tg_connect(sock)) >= 0) {
		if (write(fd, "detach\n", 7) == 7)
			while (read(fd, p, sizeof(p)) > 0)
				;
		close(fd);
		/* It unpins, then exits; a stale socket file refuses. */
		for (i = 0; i < 100 && (fd = tg_connect(sock)) >= 0; i++) {
			close(fd);
			usleep(100000);
		}
		if (i == 100)
			fatal("tlsguardd did not exit after detach (%s)%s", sock,
			      "");
	}
	switch (tg_pindir_check(dir, err, sizeof(err))) {
	case 0:
		break;
	case -ENOENT:
		return 0;	/* nothing pinned */
	default:
		fatal("--pin-dir %s%s: nothing removed", err, "");
	}
	if (tg_pindir_remove(dir, err, sizeof(err)) == -1)
		fatal("%s (tlsguard's other pins are removed)%s", err, "");
	return 0;
}

/* 1 when a tlsguardd answers a status request on sock within 5 s. */
static int tg_answers(const char *sock)
{
	char c;
	int fd = tg_connect(sock), ok;

	if (fd < 0)
		return 0;
	ok = dprintf(fd, "status\n") > 0 && read(fd, &c, 1) == 1;
	close(fd);
	return ok;
}

/*
 * start-check: may the MTA start? The kernel guards only while a daemon
 * runs or its pinned state does (the cgroup's sock_ops link pinned under
 * dir holds the programs and, through them, the maps of every
 * generation): a boot empties bpffs, so "pinned" never lets an MTA start
 * unguarded after one.
 */
static int tg_start_check(const char *sock, const char *dir,
			  const char *mode)
{
	int pinned = strcmp(mode, "pinned") == 0;
	char link[512];

	if (!*mode)
		mode = "daemon"; /* the drop-in's variable unset */
	if (!pinned && strcmp(mode, "daemon") != 0)
		usage();
	if (tg_answers(sock)) {
		printf("tlsguardd answers on %s: the MTA may start\n", sock);
		return 0;
	}
	snprintf(link, sizeof(link), "%s/tg_sockops_link", dir);
	if (pinned && access(link, F_OK) == 0) {
		printf("tlsguardd does not answer on %s, but its state pinned "
		       "under %s enforces: the MTA may start\n",
		       sock, dir);
		return 0;
	}
	fprintf(stderr,
		"tlsguardctl: fatal: tlsguardd does not answer on %s%s%s: "
		"the MTA must not start (start-check %s)\n",
		sock, pinned ? ", and nothing of it is pinned under " : "",
		pinned ? dir : "", mode);
	return 1;
}

/* sender list: the daemon names its file; the entries are read here. */
static int tg_sender_list(const char *sock, int json)
{
	char path[4096], state[16], *line = NULL;
	const char *r = tg_ask(sock, "sender list");
	unsigned n = 0;
	size_t cap = 0;
	FILE *fp;

	if (sscanf(r, "%4095[^\n]\n%15[^\n]", path, state) != 2)
		fatal("tlsguardd's answer is not understood: %.80s%s", r, "");
	if (strcmp(state, "current") != 0)
		fprintf(stderr, "tlsguardctl: warning: %s changed since "
			"tlsguardd read it; \"tlsguardctl reload\" applies "
			"it\n", path);
	fp = fopen(path, "r");
	if (!fp)
		fatal("%s: %s", path, strerror(errno));
	while (getline(&line, &cap, fp) > 0) {
		char *s = line, *end;

		if (strchr(s, '#'))
			*strchr(s, '#') = 0;
		s += strspn(s, " \t");
		end = s + strcspn(s, " \t\r\n");
		*end = 0;
		if (*s && json) {
			fputs(n++ ? "," : "[", stdout);
			tg_json_str(stdout, s);
		} else if (*s) {
			puts(s);
		}
	}
	if (json)
		puts(n ? "]" : "[]");
	free(line);
	fclose(fp);
	return 0;
}

/* An address fits a control request (TG_CTL_REQ_MAX) with its verb. */
#define TG_SENDER_ARG_MAX      (TG_CTL_REQ_MAX - 32)
#define TG_SENDER_ARG_MAX_TEXT "992"
_Static_assert(TG_SENDER_ARG_MAX == 992, "TG_SENDER_ARG_MAX_TEXT");

/* "ADDR: guaranteed (by its address entry)" as one JSON object. */
static void tg_check_json(const char *addr, const char *r)
{
	const char *verdict = strstr(r, ": guaranteed") ? "guaranteed" :
			      strstr(r, ": exempt") ? "exempt" :
						     "not-guaranteed";
	const char *by = strstr(r, " entry)"), *b;

	printf("{\"address\":");
	tg_json_str(stdout, addr);
	printf(",\"verdict\":\"%s\",\"by\":", verdict);
	if (by) {
		/* "(by its address entry)", "(by the exempt list's SRS entry)" */
		for (b = by; b > r && b[-1] != ' '; b--)
			;
		tg_json_strn(stdout, b, (size_t)(by - b));
	} else {
		fputs("null", stdout);
	}
	puts("}");
}

static int tg_sender(const char *sock, int argc, char **argv)
{
	char req[TG_CTL_REQ_MAX];
	const char *r;
	int json = argc == 3 && strcmp(argv[2], "--json") == 0;

	if (argc == 1 && strcmp(argv[0], "list") == 0)
		return tg_sender_list(sock, 0);
	if (argc == 2 && strcmp(argv[0], "list") == 0 &&
	    strcmp(argv[1], "--json") == 0)
		return tg_sender_list(sock, 1);
	if (json && strcmp(argv[0], "check") == 0)
		argc--;
	if (argc != 2 || (strcmp(argv[0], "add") && strcmp(argv[0], "remove") &&
			  strcmp(argv[0], "check")))
		usage();
	if (strlen(argv[1]) > TG_SENDER_ARG_MAX ||
	    strpbrk(argv[1], " \t\r\n"))
		fatal("%.80s: not an address (white space, or longer than "
		      "the %s bytes a request may name)", argv[1],
		      TG_SENDER_ARG_MAX_TEXT);
	snprintf(req, sizeof(req), "sender %s %s", argv[0], argv[1]);
	r = tg_ask(sock, req);
	if (json)
		tg_check_json(argv[1], r);
	else
		fputs(r, stdout);
	if (strcmp(argv[0], "check") == 0 && !strstr(r, ": guaranteed"))
		return 3;
	return 0;
}

/* config's "name = value" lines as one JSON object of strings. */
static void tg_config_json(const char *r)
{
	const char *eol, *eq;
	unsigned n = 0;

	for (; *r; r = *eol ? eol + 1 : eol) {
		eol = r + strcspn(r, "\n");
		eq = strstr(r, " = ");
		if (!eq || eq > eol)
			continue;
		fputs(n++ ? "," : "{", stdout);
		tg_json_strn(stdout, r, (size_t)(eq - r));
		fputc(':', stdout);
		tg_json_strn(stdout, eq + 3, (size_t)(eol - eq - 3));
	}
	puts(n ? "}" : "{}");
}

int main(int argc, char **argv)
{
	const char *path = TG_CTL_DEFAULT, *cmd = NULL, *pin_dir = NULL;
	const char *file = NULL, *sender = NULL, *since = NULL;
	char req[64];
	int i, json = 0, changed = 0;

	for (i = 1; i < argc; i++) {
		if (cmd && strcmp(cmd, "sender") == 0)
			return tg_sender(path, argc - i, argv + i);
		if (cmd && strcmp(cmd, "start-check") == 0) {
			if (i != argc - 1 || json || file || sender || since)
				usage();
			return tg_start_check(path, pin_dir ? pin_dir :
						     TG_PIN_DEFAULT, argv[i]);
		}
		if (cmd && strcmp(cmd, "config") == 0 &&
		    strcmp(argv[i], "-n") == 0 && !changed) {
			changed = 1;
			continue;
		}
		if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc)
			path = argv[++i];
		else if (strcmp(argv[i], "--pin-dir") == 0 && i + 1 < argc)
			pin_dir = argv[++i];
		else if (strcmp(argv[i], "--file") == 0 && i + 1 < argc)
			file = argv[++i];
		else if (strcmp(argv[i], "--sender") == 0 && i + 1 < argc)
			sender = argv[++i];
		else if (strcmp(argv[i], "--since") == 0 && i + 1 < argc)
			since = argv[++i];
		else if (strcmp(argv[i], "--json") == 0)
			json = 1;
		else if (!cmd && (strcmp(argv[i], "-h") == 0 ||
				  strcmp(argv[i], "--help") == 0)) {
			fputs(tg_usage, stdout);
			return 0;
		} else if (!cmd && strcmp(argv[i], "--version") == 0) {
			printf("tlsguardctl %s\n", TG_VERSION);
			return 0;
		} else if (!cmd && strcmp(argv[i], "probe") == 0)
			return tg_probe_main(argc - i, argv + i);
		else if (!cmd && argv[i][0] != '-')
			cmd = argv[i];
		else
			usage();
	}
	if (pin_dir && (!cmd || strcmp(cmd, "detach") != 0))
		usage();	/* only detach and start-check take it */
	if (cmd && strcmp(cmd, "audit") == 0)
		return tg_audit(path, file, sender, since, json);
	if (cmd && strcmp(cmd, "detach") == 0 && !file && !sender && !since &&
	    !json)
		return tg_detach(path, pin_dir ? pin_dir : TG_PIN_DEFAULT);
	if (!cmd || (strcmp(cmd, "status") != 0 && strcmp(cmd, "flows") != 0 &&
		     strcmp(cmd, "reload") != 0 && strcmp(cmd, "config") != 0) ||
	    file || sender || since ||
	    (json && strcmp(cmd, "status") && strcmp(cmd, "flows") &&
	     strcmp(cmd, "config")))
		usage();
	if (strcmp(cmd, "config") == 0) {
		const char *r = tg_ask(path, changed ? "config changed" :
						       "config");

		if (json)
			tg_config_json(r);
		else
			fputs(r, stdout);
		return 0;
	}
	snprintf(req, sizeof(req), "%s%s", cmd, json ? " json" : "");
	fputs(tg_ask(path, req), stdout);
	return 0;
}
