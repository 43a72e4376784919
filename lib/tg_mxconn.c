// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_mxconn - MX lookup and STARTTLS session (see tg_mxconn.h)
 * DESCRIPTION
 *	Queries go through res_nmkquery() and res_nsend() rather than
 *	res_nquery(): res_nquery() hides the header of an answer without
 *	records (NXDOMAIN, NODATA), and the caller wants its rcode and its
 *	AD bit, an authenticated denial being an answer too.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tg_hostport.h"
#include "tg_mxconn.h"
#include "tg_smtp.h"

#ifndef RES_TRUSTAD
#define RES_TRUSTAD	0x02000000	/* glibc 2.31 */
#endif
#define TG_T_TLSA	52		/* RFC 6698 */
#define TG_DNS_ANSWER	8192

/*
 * "IPv4", "IPv4:PORT", "IPv6", "[IPv6]" or "[IPv6]:PORT" (port 53 unless
 * given) into ss; -1 if none of those.
 */
static int tg_dns_server(const char *s, struct sockaddr_storage *ss)
{
	struct tg_hostport_text ht;
	struct tg_hostport hp;
	unsigned port = 53;

	if (tg_hostport_split(s, &ht, TG_HP_BARE_V6) != 0)
		return -1;
	if (ht.port && tg_port_parse(ht.port, &port) < 0)
		return -1;
	memset(&hp, 0, sizeof(hp));
	if (inet_pton(AF_INET, ht.host, hp.addr) == 1)
		hp.family = AF_INET;
	else if (inet_pton(AF_INET6, ht.host, hp.addr) == 1)
		hp.family = AF_INET6;
	else
		return -1;
	tg_sockaddr(hp.family, hp.addr, port, ss);
	return 0;
}

/*
 * Make server the state's only one. An IPv4 server lives in nsaddr_list;
 * glibc keeps an IPv6 one in _u._ext.nsaddrs (malloc'd, freed by
 * res_nclose()) with a zero family in nsaddr_list, as res_ninit() leaves
 * an IPv6 "nameserver" line of resolv.conf, and copies the IPv4 ones
 * there itself when _u._ext.nscount is 0. The servers res_ninit() read
 * are dropped first.
 */
static int tg_dns_set_server(struct __res_state *res,
			     const struct sockaddr_storage *ss)
{
	struct sockaddr_in6 *sin6 = NULL;
	int i;

	if (ss->ss_family == AF_INET6) {
		sin6 = malloc(sizeof(*sin6));
		if (!sin6)
			return -1;
		memcpy(sin6, ss, sizeof(*sin6));
	}
	for (i = 0; i < MAXNS; i++) {
		free(res->_u._ext.nsaddrs[i]);
		res->_u._ext.nsaddrs[i] = NULL;
		res->_u._ext.nssocks[i] = -1;
	}
	res->_u._ext.nscount = 0;
	memset(&res->nsaddr_list[0], 0, sizeof(res->nsaddr_list[0]));
	if (sin6)
		res->_u._ext.nsaddrs[0] = sin6;
	else
		memcpy(&res->nsaddr_list[0], ss, sizeof(struct sockaddr_in));
	res->nscount = 1;
	return 0;
}

int tg_dns_open(struct __res_state *res, const char *resolver, int timeout)
{
	struct sockaddr_storage ss;

	if (resolver && *resolver && tg_dns_server(resolver, &ss) < 0) {
		errno = EINVAL;
		return -1;
	}
	memset(res, 0, sizeof(*res));
	if (res_ninit(res) < 0)
		return -1;
	res->retrans = timeout;
	res->retry = 1;
	res->options |= RES_TRUSTAD;
	if (resolver && *resolver && tg_dns_set_server(res, &ss) < 0) {
		res_nclose(res);
		return -1;
	}
	return 0;
}

int tg_dns_query(struct __res_state *res, const char *name, int type,
		 unsigned char *ans, int len, struct tg_dns_answer *a)
{
	unsigned char q[NS_PACKETSZ];
	struct tg_dns_answer dummy;
	ns_msg msg;
	ns_rr rr;
	int qlen, n, i;

	if (!a)
		a = &dummy;
	a->rcode = -1;
	a->ad = a->count = 0;
	qlen = res_nmkquery(res, ns_o_query, name, ns_c_in, type, NULL, 0,
			    NULL, q, sizeof(q));
	if (qlen < 0)
		return -1;
	n = res_nsend(res, q, qlen, ans, len);
	if (n < NS_HFIXEDSZ || ns_initparse(ans, n, &msg) < 0)
		return -1;
	a->rcode = ns_msg_getflag(msg, ns_f_rcode);
	a->ad = ns_msg_getflag(msg, ns_f_ad);
	for (i = 0; i < ns_msg_count(msg, ns_s_an); i++)
		if (ns_parserr(&msg, ns_s_an, i, &rr) == 0 &&
		    (int)ns_rr_type(rr) == type)
			a->count++;
	return n;
}

int tg_dns_mx(struct __res_state *res, const char *domain,
	      struct tg_mx_name *out, int max, struct tg_dns_answer *a)
{
	unsigned char ans[TG_DNS_ANSWER];
	ns_msg msg;
	ns_rr rr;
	int len, i, j, n = 0;

	len = tg_dns_query(res, domain, ns_t_mx, ans, sizeof(ans), a);
	if (len < 0 || ns_initparse(ans, len, &msg) < 0)
		return 0;
	for (i = 0; i < ns_msg_count(msg, ns_s_an) && n < max; i++) {
		const unsigned char *rd;
		char name[NS_MAXDNAME];
		int p;

		if (ns_parserr(&msg, ns_s_an, i, &rr) < 0 ||
		    ns_rr_type(rr) != ns_t_mx || ns_rr_rdlen(rr) < 3)
			continue;
		rd = ns_rr_rdata(rr);
		p = rd[0] << 8 | rd[1];
		if (ns_name_uncompress(ns_msg_base(msg), ns_msg_end(msg),
				       rd + 2, name, sizeof(name)) < 0)
			continue;
		/* insertion by preference; equal ones keep DNS order */
		for (j = n; j > 0 && out[j - 1].pref > p; j--)
			out[j] = out[j - 1];
		out[j].pref = p;
		memcpy(out[j].name, name, sizeof(name));
		n++;
	}
	return n;
}

int tg_dns_addrs(struct __res_state *res, const char *name,
		 struct tg_addr *out, int n, int max, struct tg_dns_answer *a)
{
	static const int types[] = { ns_t_a, ns_t_aaaa };
	unsigned char ans[TG_DNS_ANSWER];
	unsigned t;
	ns_msg msg;
	ns_rr rr;
	struct tg_dns_answer aaaa;
	int len, i;

	for (t = 0; t < 2; t++) {
		len = tg_dns_query(res, name, types[t], ans, sizeof(ans),
				   t == 0 ? a : &aaaa);
		if (t == 1 && a)
			a->ad = a->ad && aaaa.ad;
		if (len < 0 || ns_initparse(ans, len, &msg) < 0)
			continue;
		for (i = 0; i < ns_msg_count(msg, ns_s_an) && n < max; i++) {
			if (ns_parserr(&msg, ns_s_an, i, &rr) < 0 ||
			    (int)ns_rr_type(rr) != types[t])
				continue;
			memset(&out[n], 0, sizeof(out[n]));
			if (types[t] == ns_t_a && ns_rr_rdlen(rr) == 4) {
				out[n].family = AF_INET;
				memcpy(out[n].addr, ns_rr_rdata(rr), 4);
				n++;
			} else if (types[t] == ns_t_aaaa &&
				   ns_rr_rdlen(rr) == 16) {
				out[n].family = AF_INET6;
				memcpy(out[n].addr, ns_rr_rdata(rr), 16);
				n++;
			}
		}
	}
	return n;
}

int tg_dns_tlsa(struct __res_state *res, const char *host, unsigned port,
		struct tg_dns_answer *a)
{
	return tg_dns_tlsa_rrs(res, host, port, NULL, 0, a);
}

int tg_dns_tlsa_rrs(struct __res_state *res, const char *host, unsigned port,
		    struct tg_tlsa *out, int max, struct tg_dns_answer *a)
{
	unsigned char ans[TG_DNS_ANSWER];
	char name[NS_MAXDNAME + 16];
	struct tg_dns_answer dummy;
	int len, i, n = 0;
	ns_msg msg;
	ns_rr rr;

	if (!a)
		a = &dummy;
	snprintf(name, sizeof(name), "_%u._tcp.%s", port, host);
	len = tg_dns_query(res, name, TG_T_TLSA, ans, sizeof(ans), a);
	if (len < 0)
		return 0;
	if (!out || ns_initparse(ans, len, &msg) < 0)
		return a->count;
	for (i = 0; i < ns_msg_count(msg, ns_s_an) && n < max; i++) {
		unsigned dlen;

		if (ns_parserr(&msg, ns_s_an, i, &rr) < 0 ||
		    ns_rr_type(rr) != TG_T_TLSA || ns_rr_rdlen(rr) < 3)
			continue;
		/* usage, selector, matching type, then the data (RFC 6698 2.1) */
		dlen = ns_rr_rdlen(rr) - 3;
		out[n].usage = ns_rr_rdata(rr)[0];
		out[n].selector = ns_rr_rdata(rr)[1];
		out[n].mtype = ns_rr_rdata(rr)[2];
		out[n].truncated = dlen > sizeof(out[n].data);
		out[n].len = out[n].truncated ? sizeof(out[n].data) : dlen;
		memcpy(out[n].data, ns_rr_rdata(rr) + 3, out[n].len);
		n++;
	}
	return n;
}

/*
 * Read one SMTP reply into st->reply within timeout, framed by the
 * kernel's reply parser (tg_reply_feed()); its code, or -1. *starttls,
 * when starttls is not NULL, says whether a line advertised STARTTLS.
 */
static int tg_smtp_reply(struct tg_starttls *st, int timeout, int *starttls)
{
	size_t got = 0, len = sizeof(st->reply), i;
	char *buf = st->reply;
	struct tg_reply rp;

	buf[0] = 0;
	st->code = -1;
	tg_reply_init(&rp);
	for (;;) {
		struct pollfd p = { .fd = st->fd, .events = POLLIN };
		ssize_t n;
		int r;

		r = poll(&p, 1, timeout * 1000);
		if (r <= 0) {
			st->err = r == 0 ? ETIMEDOUT : errno;
			return -1;
		}
		if (got + 1 >= len) {
			st->err = EMSGSIZE;
			return -1;
		}
		n = read(st->fd, buf + got, len - got - 1);
		if (n <= 0) {
			st->err = n == 0 ? ECONNRESET : errno;
			return -1;
		}
		for (i = got, got += (size_t)n; i < got; i++) {
			if (tg_reply_feed(&rp, (unsigned char)buf[i]) !=
			    TG_REPLY_FINAL)
				continue;
			buf[i + 1] = 0;
			if (starttls)
				*starttls = rp.starttls;
			st->code = rp.code;
			return st->code;
		}
		buf[got] = 0;
	}
}

static int tg_smtp_send(struct tg_starttls *st, const char *s)
{
	ssize_t n = write(st->fd, s, strlen(s));

	if (n == (ssize_t)strlen(s))
		return 0;
	st->err = n < 0 ? errno : EPIPE;
	return -1;
}

int tg_starttls_open(struct tg_starttls *st, SSL_CTX *ctx,
		     const struct tg_addr *a, unsigned port, const char *sni,
		     int timeout)
{
	return tg_starttls_open_prep(st, ctx, a, port, sni, timeout, NULL,
				     NULL);
}

int tg_starttls_open_prep(struct tg_starttls *st, SSL_CTX *ctx,
			  const struct tg_addr *a, unsigned port,
			  const char *sni, int timeout,
			  int (*prep)(SSL *ssl, void *arg), void *arg)
{
	struct timeval tv = { .tv_sec = timeout };
	struct sockaddr_storage ss;
	socklen_t slen;

	memset(st, 0, sizeof(*st));
	st->fd = -1;
	st->code = -1;
	st->stage = TG_ST_CONNECT;
	slen = tg_sockaddr(a->family, a->addr, port, &ss);
	st->fd = socket(a->family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (st->fd < 0) {
		st->err = errno;
		return -1;
	}
	/* SO_SNDTIMEO bounds connect() too; SO_RCVTIMEO the handshake. */
	setsockopt(st->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(st->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(st->fd, (struct sockaddr *)&ss, slen) < 0) {
		st->err = errno == EINPROGRESS ? ETIMEDOUT : errno;
		return -1;
	}
	st->stage = TG_ST_GREETING;
	if (tg_smtp_reply(st, timeout, NULL) != 220)
		return -1;
	snprintf(st->greeting, sizeof(st->greeting), "%.*s",
		 (int)strcspn(st->reply, "\r\n"), st->reply);
	st->stage = TG_ST_EHLO;
	if (tg_smtp_send(st, "EHLO tlsguard.invalid\r\n") < 0 ||
	    tg_smtp_reply(st, timeout, &st->offered) != 250)
		return -1;
	st->stage = TG_ST_NOT_OFFERED;
	if (!st->offered)
		return -1;
	st->stage = TG_ST_STARTTLS;
	if (tg_smtp_send(st, "STARTTLS\r\n") < 0 ||
	    tg_smtp_reply(st, timeout, NULL) != 220)
		return -1;
	st->stage = TG_ST_HANDSHAKE;
	st->ssl = SSL_new(ctx);
	if (!st->ssl || !SSL_set_fd(st->ssl, st->fd))
		return -1;
	/* the name the MTA looked up: SNI, and what a verifier checks */
	if (sni && *sni && (!SSL_set_tlsext_host_name(st->ssl, sni) ||
			    !SSL_set1_host(st->ssl, sni)))
		return -1;
	if (prep && prep(st->ssl, arg) < 0)
		return -1;
	if (SSL_connect(st->ssl) != 1) {
		st->err = errno;
		return -1;
	}
	st->stage = TG_ST_DONE;
	return 0;
}

void tg_starttls_close(struct tg_starttls *st)
{
	if (st->ssl && st->stage == TG_ST_DONE) {
		SSL_write(st->ssl, "QUIT\r\n", 6);
		SSL_shutdown(st->ssl);
	} else if (st->fd >= 0 && st->stage != TG_ST_CONNECT &&
		   st->stage != TG_ST_HANDSHAKE) {
		/* best effort: the session ends either way */
		if (write(st->fd, "QUIT\r\n", 6) < 0)
			st->err = st->err ? st->err : errno;
	}
	SSL_free(st->ssl);
	st->ssl = NULL;
	if (st->fd >= 0)
		close(st->fd);
	st->fd = -1;
}

const char *tg_addr_str(const struct tg_addr *a, char *buf, size_t len)
{
	if (!inet_ntop(a->family, a->addr, buf, (socklen_t)len))
		snprintf(buf, len, "?");
	return buf;
}
