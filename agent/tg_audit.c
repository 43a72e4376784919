// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_audit - the per-message audit trail (see tg_audit.h)
 * DESCRIPTION
 *	Two threads share struct tg_audit_sync, under its mutex: the loop
 *	counts each record it wrote in pending and signals wake; the
 *	syncer takes pending (all records written so far), flushes the
 *	file without the lock, counts them flushed (or lost, if the flush
 *	failed) and signals done. Nothing else is shared: the syncer reads
 *	no flow, no map, no setting. The loop waits for the syncer only
 *	when the file is reopened or closed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <openssl/ssl.h>

#include "tg_audit.h"
#include "tg_hostport.h"
#include "tg_json.h"
#include "tg_log.h"
#include "tg_mailaddr.h"
#include "tg_names.h"

enum { K_OTHER, K_MAIL, K_RCPT, K_DATA, K_END, K_RESET };

/* OpenSSL's name of a cipher suite, by its two-byte id. */
static const char *tg_cipher_name(__u16 id)
{
	static SSL_CTX *ctx;
	STACK_OF(SSL_CIPHER) *sk;
	int i;

	if (!id)
		return NULL;
	if (!ctx) {
		ctx = SSL_CTX_new(TLS_method());
		if (!ctx)
			return NULL;
		SSL_CTX_set_security_level(ctx, 0);
		SSL_CTX_set_cipher_list(ctx, "ALL:COMPLEMENTOFALL");
	}
	sk = SSL_CTX_get_ciphers(ctx);
	for (i = 0; sk && i < sk_SSL_CIPHER_num(sk); i++) {
		const SSL_CIPHER *c = sk_SSL_CIPHER_value(sk, i);

		if ((SSL_CIPHER_get_protocol_id(c) & 0xffff) == id)
			return SSL_CIPHER_get_name(c);
	}
	return NULL;
}

/*
 * The file's directory, when it is missing and its parent is not: made
 * root's, mode 0750, as a package would make /var/log/tlsguard. A
 * missing parent is an error (most likely a mistyped path).
 */
static int tg_audit_mkdir(const char *path)
{
	char dir[4096], *slash;
	struct stat st;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return 0;
	*slash = 0;
	if (stat(dir, &st) == 0 || errno != ENOENT)
		return 0;	/* open() names any other problem */
	if (mkdir(dir, 0750) < 0)
		return -1;
	msg_info("created %s (mode 0750) for the audit trail", dir);
	return 0;
}

/*
 * The syncer holds no capability: it only ever calls fdatasync() on a
 * file the loop opened. A thread's capabilities are its own (capset()
 * changes the caller's only), and this one starts before the daemon
 * drops its own (tg_drop_caps()), so it gives them all up itself.
 */
static void tg_audit_nocaps(void)
{
	struct __user_cap_header_struct hdr = {
		.version = _LINUX_CAPABILITY_VERSION_3,
	};
	struct __user_cap_data_struct data[2];

	memset(data, 0, sizeof(data));
	if (syscall(SYS_capset, &hdr, data) < 0)
		msg_warn("audit syncer: capset: %s", strerror(errno));
}

/*
 * The syncer: each flush covers every record written before it started
 * (group commit). On stop, what is pending is flushed before it returns.
 */
static void *tg_audit_syncer(void *arg)
{
	struct tg_audit *au = arg;
	struct tg_audit_sync *s = &au->sync;
	unsigned long long n;
	int fd, err;

	tg_audit_nocaps();
	pthread_setname_np(pthread_self(), "tg_audit_sync");	/* ps -L */
	pthread_mutex_lock(&s->lock);
	for (;;) {
		while (!s->pending && !s->stop)
			pthread_cond_wait(&s->wake, &s->lock);
		if (!s->pending)
			break;		/* told to stop, nothing left */
		n = s->pending;
		s->pending = 0;
		s->busy = 1;
		fd = au->fd;	/* not replaced while busy: tg_audit_drain() */
		pthread_mutex_unlock(&s->lock);
		err = fdatasync(fd) < 0 ? errno : 0;
		if (err) {
			msg_warn("%s: cannot flush %llu audit record%s: %s",
				 au->path, n, n == 1 ? "" : "s", strerror(err));
			__atomic_fetch_add(&au->write_failed, n,
					   __ATOMIC_RELAXED);
		} else {
			__atomic_fetch_add(&au->written, n, __ATOMIC_RELAXED);
		}
		pthread_mutex_lock(&s->lock);
		s->busy = 0;
		pthread_cond_broadcast(&s->done);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* Wait until every record written so far is flushed (or counted lost). */
static void tg_audit_drain(struct tg_audit *au)
{
	struct tg_audit_sync *s = &au->sync;

	while (s->pending || s->busy)
		pthread_cond_wait(&s->done, &s->lock);
}

static int tg_audit_openfile(const char *path)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);

	return fd < 0 ? -errno : fd;
}

int tg_audit_open(struct tg_audit *au, const char *path, int flows_fd,
		  const struct tg_policy *const *pol)
{
	struct tg_audit_sync *s = &au->sync;
	sigset_t all, old;
	int err;

	memset(au, 0, sizeof(*au));
	au->fd = -1;
	au->flows_fd = flows_fd;
	au->policy = pol;
	if (!path)
		return 0;
	snprintf(au->path, sizeof(au->path), "%s", path);
	au->flows = calloc(TG_AUDIT_FLOWS, sizeof(*au->flows));
	if (!au->flows)
		return -ENOMEM;
	if (tg_audit_mkdir(au->path) < 0)
		return -errno;
	au->fd = tg_audit_openfile(au->path);
	if (au->fd < 0)
		return au->fd;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->wake, NULL);
	pthread_cond_init(&s->done, NULL);
	/* Signals are the loop's (its signalfd): none is delivered here. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = pthread_create(&s->thread, NULL, tg_audit_syncer, au);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err) {
		close(au->fd);
		au->fd = -1;
		return -err;
	}
	s->running = 1;
	return 0;
}

/*
 * The old file's records are flushed before it is closed: the loop waits
 * for that (one or two flushes), once per SIGHUP.
 */
int tg_audit_reopen(struct tg_audit *au)
{
	int fd, old;

	if (!au->path[0] || !au->sync.running)
		return 0;
	fd = tg_audit_openfile(au->path);
	if (fd < 0) {
		errno = -fd;
		return fd;
	}
	pthread_mutex_lock(&au->sync.lock);
	tg_audit_drain(au);
	old = au->fd;
	au->fd = fd;
	pthread_mutex_unlock(&au->sync.lock);
	close(old);
	return 0;
}

/* The record's "flow": local and remote address and port. */
static void tg_audit_addrs(struct tg_audit_flow *f, __u16 family,
			   const __u8 *laddr, __u16 lport, const __u8 *raddr,
			   __u16 rport)
{
	tg_addr_port_str(f->local, sizeof(f->local), family, laddr, lport);
	tg_addr_port_str(f->remote, sizeof(f->remote), family, raddr, rport);
	if (!inet_ntop(family == AF_INET6 ? AF_INET6 : AF_INET, raddr,
		       f->remote_ip, sizeof(f->remote_ip)))
		snprintf(f->remote_ip, sizeof(f->remote_ip), "?");
	f->remote_port = rport;
}

static struct tg_audit_flow *tg_audit_flow(struct tg_audit *au, __u64 cookie,
					   int create)
{
	unsigned i, h = (unsigned)(cookie * 0x9e3779b97f4a7c15ULL >> 40);
	struct tg_audit_flow *f;
	struct tg_flow kf;

	if (au->fd < 0)
		return NULL;	/* no audit trail */
	for (i = 0; i < TG_AUDIT_FLOWS; i++) {
		f = &au->flows[(h + i) % TG_AUDIT_FLOWS];
		if (f->cookie == cookie)
			return f;
		if (f->cookie == 0)
			break;
	}
	if (!create || i == TG_AUDIT_FLOWS) {
		if (create)
			au->dropped++;
		return NULL;
	}
	memset(f, 0, sizeof(*f));
	f->cookie = cookie;
	snprintf(f->local, sizeof(f->local), "?");
	snprintf(f->remote, sizeof(f->remote), "?");
	snprintf(f->remote_ip, sizeof(f->remote_ip), "?");
	if (bpf_map_lookup_elem(au->flows_fd, &cookie, &kf) == 0) {
		tg_audit_addrs(f, kf.family, kf.laddr, kf.lport, kf.raddr,
			       kf.rport);
		f->tls_version = kf.tls_version;
		f->tls_cipher = kf.tls_cipher;
	}
	return f;
}

/* Free an entry; later entries of its probe chain move up. */
static void tg_audit_forget(struct tg_audit *au, struct tg_audit_flow *f)
{
	unsigned i = (unsigned)(f - au->flows), j, h;

	free(f->rcpt);
	f->rcpt = NULL;
	f->rcpt_cap = f->nrcpt = 0;
	f->cookie = 0;
	for (j = (i + 1) % TG_AUDIT_FLOWS; au->flows[j].cookie;
	     j = (j + 1) % TG_AUDIT_FLOWS) {
		struct tg_audit_flow tmp = au->flows[j];

		h = (unsigned)(tmp.cookie * 0x9e3779b97f4a7c15ULL >> 40) %
		    TG_AUDIT_FLOWS;
		au->flows[j].cookie = 0;
		while (au->flows[h].cookie)
			h = (h + 1) % TG_AUDIT_FLOWS;
		au->flows[h] = tmp;
	}
}

/* Copy a line's text as a C string, at most len - 1 bytes. */
static void tg_copy(char *dst, size_t len, const char *src, size_t n)
{
	if (n >= len)
		n = len - 1;
	memcpy(dst, src, n);
	dst[n] = 0;
}

static int tg_audit_guaranteed(struct tg_audit *au, const char *sender)
{
	if (!sender[0])
		return 0;
	return tg_policy_lookup_addr(*au->policy, sender, NULL) ==
	       TG_POL_GUARANTEED;
}

/* A key (with what comes before it) and its string value. */
static void tg_json_field(FILE *fp, const char *key, const char *value)
{
	fputs(key, fp);
	tg_json_str(fp, value);
}

static void tg_audit_write(struct tg_audit *au, struct tg_audit_flow *f)
{
	char *buf = NULL, ts[40];
	size_t len = 0;
	struct timeval tv;
	struct tm tm;
	const char *cipher;
	unsigned i;
	FILE *fp;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	fp = open_memstream(&buf, &len);
	if (!fp)
		return;
	fprintf(fp, "{\"schema_version\":%d,\"time\":\"%s.%03ldZ\","
		"\"flow\":{\"local\":", TG_AUDIT_SCHEMA, ts,
		(long)(tv.tv_usec / 1000));
	tg_json_str(fp, f->local);
	tg_json_field(fp, ",\"remote\":", f->remote);
	tg_json_field(fp, "},\"remote\":{\"name\":", f->host);
	tg_json_field(fp, ",\"address\":", f->remote_ip);
	fprintf(fp, ",\"port\":%u}", f->remote_port);
	tg_json_field(fp, ",\"sender\":", f->sender);
	fprintf(fp, ",\"guaranteed\":%s,\"recipients\":[",
		tg_audit_guaranteed(au, f->sender) ? "true" : "false");
	for (i = 0; i < f->nrcpt; i++) {
		fputs(i ? ",{\"address\":" : "{\"address\":", fp);
		tg_json_str(fp, f->rcpt[i].addr);
		fputs(",\"reply\":", fp);
		tg_json_str(fp, f->rcpt[i].reply);
		fputc('}', fp);
	}
	fputs("],\"tls\":", fp);
	if (f->tls_version) {
		cipher = tg_cipher_name(f->tls_cipher);
		fputs("{\"version\":", fp);
		tg_json_str(fp, tg_tls_version_name(f->tls_version));
		fputs(",\"cipher\":", fp);
		if (cipher) {
			tg_json_str(fp, cipher);
		} else {
			char hex[8];

			snprintf(hex, sizeof(hex), "0x%04x", f->tls_cipher);
			tg_json_str(fp, hex);
		}
		fputc('}', fp);
	} else {
		fputs("null", fp);
	}
	tg_json_field(fp, ",\"mail_reply\":", f->mail_reply);
	tg_json_field(fp, ",\"data_reply\":", f->data_reply);
	tg_json_field(fp, ",\"verdict\":", f->verdict);
	fputs("}\n", fp);
	fclose(fp);
	if (write(au->fd, buf, len) != (ssize_t)len) {
		msg_warn("%s: cannot write the audit record: %s", au->path,
			 strerror(errno));
		__atomic_fetch_add(&au->write_failed, 1, __ATOMIC_RELAXED);
	} else {
		/* The syncer flushes it; the loop does not wait for the disk. */
		pthread_mutex_lock(&au->sync.lock);
		au->sync.pending++;
		pthread_cond_signal(&au->sync.wake);
		pthread_mutex_unlock(&au->sync.lock);
	}
	free(buf);
}

static int tg_code(const char *reply)
{
	if (reply[0] < '1' || reply[0] > '5' || !reply[1] || !reply[2])
		return 0;
	return atoi(reply);
}

/* The message attempt in progress ends here: write its record. */
static void tg_audit_end(struct tg_audit *au, struct tg_audit_flow *f,
			 const char *verdict)
{
	unsigned i, refused = 0;

	if (!f->txn)
		return;
	if (!f->ended) {
		if (verdict) {
			snprintf(f->verdict, sizeof(f->verdict), "%s", verdict);
		} else {
			for (i = 0; i < f->nrcpt; i++)
				refused += tg_code(f->rcpt[i].reply) >= 500;
			snprintf(f->verdict, sizeof(f->verdict), "%s",
				 f->nrcpt && refused == f->nrcpt ?
					 "rejected-by-host" : "deferred");
		}
	}
	tg_audit_write(au, f);
	f->txn = 0;
	f->held = f->weak = f->ended = 0;
	f->verdict[0] = f->sender[0] = 0;
	f->mail_reply[0] = f->data_reply[0] = 0;
	f->nrcpt = 0;
}

/* A verdict is known: the record is written when the attempt ends. */
static void tg_audit_verdict(struct tg_audit_flow *f, const char *v)
{
	snprintf(f->verdict, sizeof(f->verdict), "%s", v);
	f->ended = 1;
}

static void tg_audit_push(struct tg_audit_flow *f, int kind, unsigned rcpt)
{
	unsigned i;

	if (f->pend_n == TG_AUDIT_PEND)
		return;		/* replies beyond this are not matched */
	i = (f->pend_head + f->pend_n++) % TG_AUDIT_PEND;
	f->pend[i] = (unsigned char)kind;
	f->pend_rcpt[i] = (unsigned short)rcpt;
}

/* Room for one more recipient in f: 0, or -1 (out of memory). */
static int tg_audit_rcpt_room(struct tg_audit_flow *f)
{
	struct tg_audit_rcpt *r;
	unsigned cap;

	if (f->nrcpt < f->rcpt_cap)
		return 0;
	cap = f->rcpt_cap ? 2 * f->rcpt_cap : 4;
	if (cap > TG_AUDIT_RCPTS)
		cap = TG_AUDIT_RCPTS;
	r = realloc(f->rcpt, cap * sizeof(*r));
	if (!r)
		return -1;
	f->rcpt = r;
	f->rcpt_cap = cap;
	return 0;
}

static void tg_audit_command(struct tg_audit *au, struct tg_audit_flow *f,
			     __u32 flags, const char *text, size_t len)
{
	char addr[TG_AUDIT_ADDR];
	__u64 verb;

	if (flags & TG_LINE_END) {
		tg_audit_push(f, K_END, 0);
		return;
	}
	tg_line_addr(text, len, &verb, addr, sizeof(addr));
	switch (verb) {
	case TG_VERB_MAIL:
		tg_audit_end(au, f, NULL);
		f->txn = 1;
		snprintf(f->sender, sizeof(f->sender), "%s", addr);
		if (flags & TG_LINE_HELD)
			f->weak = 1;	/* cut in TLS, see tg_audit_killed() */
		tg_audit_push(f, K_MAIL, 0);
		break;
	case TG_VERB_RCPT:
		if (f->txn && f->nrcpt < TG_AUDIT_RCPTS &&
		    tg_audit_rcpt_room(f) == 0) {
			struct tg_audit_rcpt *r = &f->rcpt[f->nrcpt];

			snprintf(r->addr, sizeof(r->addr), "%s", addr);
			r->reply[0] = 0;
			tg_audit_push(f, K_RCPT, f->nrcpt++);
		} else {
			tg_audit_push(f, K_OTHER, 0);
		}
		break;
	case TG_VERB_DATA:
		tg_audit_push(f, K_DATA, 0);
		break;
	case TG_VERB_BDAT:
		tg_audit_push(f, K_END, 0);
		break;
	case TG_VERB_RSET:
	case TG_VERB_QUIT:
		/*
		 * The attempt ends at this command's reply, not here: the MTA
		 * pipelines QUIT behind the message, whose reply comes first.
		 */
		tg_audit_push(f, K_RESET, 0);
		break;
	default:
		tg_audit_push(f, K_OTHER, 0);
	}
}

/*
 * The verdict of a reply tlsguardd gave for the host (TG_LINE_HELD): by
 * its kind, never by its text, which the administrator may change.
 */
static const char *tg_held_verdict(int kind, int code)
{
	if (kind == TG_RK_HELD_WEAK_TLS)
		return "held-weak-tls";
	return code >= 500 ? "held-no-tls" : "deferred";
}

/* A reply; rk is the tg_resp kind of one of the agent's own, else -1. */
static void tg_audit_reply(struct tg_audit *au, struct tg_audit_flow *f,
			   __u32 flags, const char *text, size_t len, int rk)
{
	char reply[TG_AUDIT_REPLY];
	unsigned i, rcpt;
	int kind, code;

	tg_copy(reply, sizeof(reply), text, len);
	code = tg_code(reply);
	if (!f->greeted && f->pend_n == 0) {
		/* "220 mx.example.net ESMTP ...": the host's own name */
		const char *p = reply + (len > 4 ? 4 : len);

		f->greeted = 1;
		tg_copy(f->host, sizeof(f->host), p, strcspn(p, " \t"));
		return;
	}
	if (f->pend_n == 0)
		return;
	i = f->pend_head;
	kind = f->pend[i];
	rcpt = f->pend_rcpt[i];
	f->pend_head = (f->pend_head + 1) % TG_AUDIT_PEND;
	f->pend_n--;
	switch (kind) {
	case K_MAIL:
		snprintf(f->mail_reply, sizeof(f->mail_reply), "%s", reply);
		if (flags & TG_LINE_HELD) {
			/* 250: accepted for now, the verdict comes per RCPT */
			f->held = code >= 400;
			if (code >= 400)
				tg_audit_verdict(f, tg_held_verdict(rk, code));
		} else if (code >= 500) {
			tg_audit_verdict(f, "rejected-by-host");
		} else if (code >= 400) {
			tg_audit_verdict(f, "deferred");
		}
		break;
	case K_RCPT:
		if (rcpt < f->nrcpt)
			snprintf(f->rcpt[rcpt].reply, sizeof(f->rcpt[rcpt].reply),
				 "%s", reply);
		/* A held MAIL answered for now: the verdict comes per RCPT. */
		if (f->ended || !(flags & TG_LINE_HELD) || code < 400)
			break;
		f->held = 1;
		tg_audit_verdict(f, tg_held_verdict(rk, code));
		break;
	case K_DATA:
		if (code >= 400 && !f->ended)
			tg_audit_verdict(f, code >= 500 ? "rejected-by-host" :
							  "deferred");
		break;
	case K_END:
		snprintf(f->data_reply, sizeof(f->data_reply), "%s", reply);
		if (!f->ended)
			tg_audit_verdict(f, code >= 200 && code < 300 ?
					 "delivered" :
					 code >= 500 ? "rejected-by-host" :
						       "deferred");
		tg_audit_end(au, f, NULL);
		break;
	case K_RESET:
		tg_audit_end(au, f, NULL);
		break;
	}
}

void tg_audit_line(struct tg_audit *au, __u64 cookie, __u32 flags,
		   const char *text, size_t len)
{
	struct tg_audit_flow *f;

	f = tg_audit_flow(au, cookie, 1);
	if (!f)
		return;
	if (flags & TG_LINE_REPLY)
		tg_audit_reply(au, f, flags, text, len, -1);
	else
		tg_audit_command(au, f, flags, text, len);
}

void tg_audit_held(struct tg_audit *au, __u64 cookie, const struct tg_resp *r)
{
	struct tg_audit_flow *f;
	char line[TG_RESP_LINE];
	size_t len;

	f = tg_audit_flow(au, cookie, 1);
	if (!f)
		return;
	len = tg_resp_line(r, line, sizeof(line));
	while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	tg_audit_reply(au, f, TG_LINE_REPLY | TG_LINE_HELD, line, len,
		       r->kind);
}

/*
 * A line from the kernel. Its flow may be closed and gone from tg_flows by
 * now (the agent lags behind a short connection on a busy machine): the
 * addresses come from the event then.
 */
void tg_audit_line_event(struct tg_audit *au, const struct tg_line_event *le)
{
	struct tg_audit_flow *f;

	f = tg_audit_flow(au, le->cookie, 1);
	if (f && strcmp(f->local, "?") == 0 && le->family) {
		tg_audit_addrs(f, le->family, le->laddr, le->lport, le->raddr,
			       le->rport);
	}
	tg_audit_line(au, le->cookie, le->flags, le->text,
		      le->len > TG_LINE_TEXT ? TG_LINE_TEXT : le->len);
}

void tg_audit_tls(struct tg_audit *au, const struct tg_event *e)
{
	struct tg_audit_flow *f;

	f = tg_audit_flow(au, e->cookie, 1);
	if (!f)
		return;
	f->tls_version = e->tls_version;
	f->tls_cipher = e->tls_cipher;
}

void tg_audit_killed(struct tg_audit *au, const struct tg_event *e)
{
	struct tg_audit_flow *f;

	f = tg_audit_flow(au, e->cookie, 0);
	if (!f)
		return;
	/*
	 * A flow cut at once may be gone from tg_flows before its first line
	 * is read here (a busy agent): the event has its addresses.
	 */
	if (strcmp(f->local, "?") == 0) {
		tg_audit_addrs(f, e->family, e->laddr, e->lport, e->raddr,
			       e->rport);
		if (!f->tls_version)
			f->tls_version = e->tls_version;
		if (!f->tls_cipher)
			f->tls_cipher = e->tls_cipher;
	}
	if (f->txn && f->weak && e->why == TG_WHY_WEAK_TLS)
		tg_audit_verdict(f, "held-weak-tls");
	tg_audit_end(au, f, f->weak ? "held-weak-tls" : "deferred");
}

void tg_audit_closed(struct tg_audit *au, __u64 cookie)
{
	struct tg_audit_flow *f;

	f = tg_audit_flow(au, cookie, 0);
	if (!f)
		return;
	tg_audit_end(au, f, NULL);
	tg_audit_forget(au, f);
}

void tg_audit_close(struct tg_audit *au)
{
	unsigned i;

	for (i = 0; au->flows && i < TG_AUDIT_FLOWS; i++)
		if (au->flows[i].cookie) {
			tg_audit_end(au, &au->flows[i], NULL);
			free(au->flows[i].rcpt);
		}
	free(au->flows);
	au->flows = NULL;
	if (au->sync.running) {
		/* The syncer flushes what is pending, then returns. */
		pthread_mutex_lock(&au->sync.lock);
		au->sync.stop = 1;
		pthread_cond_signal(&au->sync.wake);
		pthread_mutex_unlock(&au->sync.lock);
		pthread_join(au->sync.thread, NULL);
		au->sync.running = 0;
		pthread_cond_destroy(&au->sync.done);
		pthread_cond_destroy(&au->sync.wake);
		pthread_mutex_destroy(&au->sync.lock);
	}
	if (au->fd >= 0)
		close(au->fd);
	au->fd = -1;
}
