// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_sts - a domain's MTA-STS policy (see tg_sts.h)
 * DESCRIPTION
 *	The policy is one small text file behind one HTTPS GET: a request
 *	of HTTP/1.0 (no chunked answer to undo) over an OpenSSL session
 *	that verifies the server as any MTA-STS sender does. The answer is
 *	read whole, at most TG_STS_BODY bytes past the header (RFC 8461
 *	3.3 lets a sender stop at 64 KiB).
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "tg_hostport.h"
#include "tg_mxconn.h"
#include "tg_sts.h"

#define TG_STS_BODY	65536
#define TG_STS_ADDRS	8

/* Copy with control bytes and non-ASCII replaced: server text is hostile. */
static void tg_sts_clean(char *dst, size_t len, const char *src, size_t n)
{
	size_t i;

	for (i = 0; i < n && i + 1 < len; i++) {
		unsigned char c = (unsigned char)src[i];

		dst[i] = c < 0x20 || c >= 0x7f ? '?' : (char)c;
	}
	dst[i] = 0;
}

static const char *tg_sts_rcode(int rcode)
{
	static char buf[16];

	if (rcode == ns_r_servfail)
		return "SERVFAIL";
	if (rcode == ns_r_nxdomain)
		return "NXDOMAIN";
	if (rcode == ns_r_refused)
		return "REFUSED";
	snprintf(buf, sizeof(buf), "rcode %d", rcode);
	return buf;
}

/* The STSv1 TXT record of domain into s; 0, or -1 with s->state set. */
static int tg_sts_txt(struct tg_sts *s, struct __res_state *res,
		      const char *domain)
{
	unsigned char ans[8192];
	char name[NS_MAXDNAME + 16], txt[512];
	struct tg_dns_answer a;
	int len, i, found = 0;
	ns_msg msg;
	ns_rr rr;

	snprintf(name, sizeof(name), "_mta-sts.%s", domain);
	len = tg_dns_query(res, name, ns_t_txt, ans, sizeof(ans), &a);
	if (len < 0 || (a.rcode != ns_r_noerror && a.rcode != ns_r_nxdomain)) {
		s->state = TG_STS_DNS_ERROR;
		snprintf(s->problem, sizeof(s->problem), "TXT lookup of %s "
			 "failed (%s): a sender that applies MTA-STS uses a "
			 "policy it cached, if any", name,
			 a.rcode == -1 ? "no answer" : tg_sts_rcode(a.rcode));
		return -1;
	}
	if (ns_initparse(ans, len, &msg) < 0)
		return -1;
	for (i = 0; i < ns_msg_count(msg, ns_s_an); i++) {
		const unsigned char *rd, *end;
		size_t off = 0;

		if (ns_parserr(&msg, ns_s_an, i, &rr) < 0 ||
		    ns_rr_type(rr) != ns_t_txt)
			continue;
		/* one record is the concatenation of its strings */
		rd = ns_rr_rdata(rr);
		end = rd + ns_rr_rdlen(rr);
		while (rd < end && rd + 1 + *rd <= end &&
		       off + *rd < sizeof(txt)) {
			memcpy(txt + off, rd + 1, *rd);
			off += *rd;
			rd += 1 + *rd;
		}
		txt[off] = 0;
		if (strncmp(txt, "v=STSv1", 7) != 0 ||
		    (txt[7] && txt[7] != ';' && txt[7] != ' '))
			continue;
		found++;
		tg_sts_clean(s->record, sizeof(s->record), txt, off);
	}
	if (found != 1) {
		s->state = TG_STS_NONE;
		if (found > 1)
			snprintf(s->problem, sizeof(s->problem), "%d STSv1 "
				 "records at %s: RFC 8461 3.1 wants exactly one",
				 found, name);
		return -1;
	}
	{
		const char *id = strstr(s->record, "id=");
		size_t n;

		if (!id || (id != s->record && id[-1] != ' ' &&
			    id[-1] != ';')) {
			s->state = TG_STS_FETCH_ERROR;
			snprintf(s->problem, sizeof(s->problem), "the TXT "
				 "record at %s has no id= (RFC 8461 3.1)",
				 name);
			return -1;
		}
		id += 3;
		n = strcspn(id, "; ");
		snprintf(s->id, sizeof(s->id), "%.*s", (int)n, id);
	}
	return 0;
}

/* A TCP connection to one of host's addresses on port 443; fd or -1. */
static int tg_sts_connect(struct __res_state *res, const char *host,
			  int timeout, char *why, size_t len)
{
	struct timeval tv = { .tv_sec = timeout };
	struct tg_addr addrs[TG_STS_ADDRS];
	struct sockaddr_storage ss;
	struct tg_dns_answer a;
	int n, i, fd = -1, err = 0;
	socklen_t slen;

	n = tg_dns_addrs(res, host, addrs, 0, TG_STS_ADDRS, &a);
	if (n == 0) {
		snprintf(why, len, "%s has no address (%s)", host,
			 a.rcode == ns_r_noerror ? "no A or AAAA record" :
			 a.rcode == -1 ? "no answer" : tg_sts_rcode(a.rcode));
		return -1;
	}
	for (i = 0; i < n; i++) {
		fd = socket(addrs[i].family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			err = errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		slen = tg_sockaddr(addrs[i].family, addrs[i].addr, 443, &ss);
		if (connect(fd, (struct sockaddr *)&ss, slen) == 0)
			return fd;
		err = errno == EINPROGRESS ? ETIMEDOUT : errno;
		close(fd);
		fd = -1;
	}
	snprintf(why, len, "cannot connect to %s port 443: %s", host,
		 strerror(err));
	return -1;
}

static const char *tg_ssl_why(SSL *ssl)
{
	static char buf[200];
	unsigned long e = ERR_peek_last_error();
	long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;

	if (vr != X509_V_OK)
		snprintf(buf, sizeof(buf), "certificate verification failed: "
			 "%s", X509_verify_cert_error_string(vr));
	else if (e)
		snprintf(buf, sizeof(buf), "%s", ERR_reason_error_string(e) ?
			 ERR_reason_error_string(e) : "TLS error");
	else
		snprintf(buf, sizeof(buf), "the server closed the connection");
	ERR_clear_error();
	return buf;
}

/*
 * GET the policy from host into buf (NUL-terminated); its length, or -1
 * with why set.
 */
static long tg_sts_get(struct __res_state *res, const char *host,
		       const char *ca_file, int timeout, char *buf,
		       size_t size, char *why, size_t len)
{
	char req[NS_MAXDNAME + 128];
	SSL_CTX *ctx = NULL;
	SSL *ssl = NULL;
	long got = -1;
	size_t off = 0;
	int fd, n;

	fd = tg_sts_connect(res, host, timeout, why, len);
	if (fd < 0)
		return -1;
	ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx) {
		snprintf(why, len, "OpenSSL: cannot make a TLS context");
		goto out;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1 :
		      SSL_CTX_set_default_verify_paths(ctx) != 1) {
		snprintf(why, len, "cannot load the CA certificates%s%s",
			 ca_file ? " of " : "", ca_file ? ca_file : "");
		goto out;
	}
	ssl = SSL_new(ctx);
	if (!ssl || !SSL_set_fd(ssl, fd) ||
	    !SSL_set_tlsext_host_name(ssl, host) || !SSL_set1_host(ssl, host)) {
		snprintf(why, len, "OpenSSL: cannot set up the session");
		goto out;
	}
	if (SSL_connect(ssl) != 1) {
		snprintf(why, len, "https://%s/: %s", host, tg_ssl_why(ssl));
		goto out;
	}
	n = snprintf(req, sizeof(req), "GET /.well-known/mta-sts.txt "
		     "HTTP/1.0\r\nHost: %s\r\nUser-Agent: tlsguardctl\r\n"
		     "Connection: close\r\n\r\n", host);
	if (SSL_write(ssl, req, n) != n) {
		snprintf(why, len, "https://%s/: cannot send the request: %s",
			 host, tg_ssl_why(ssl));
		goto out;
	}
	while (off + 1 < size) {
		n = SSL_read(ssl, buf + off, (int)(size - off - 1));
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	buf[off] = 0;
	got = (long)off;
out:
	if (ssl && got >= 0)
		SSL_shutdown(ssl);
	ERR_clear_error();
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	close(fd);
	return got;
}

/* Lowercase, without a trailing dot, into dst. */
static void tg_sts_name(char *dst, size_t len, const char *src)
{
	size_t i;

	for (i = 0; src[i] && i + 1 < len; i++)
		dst[i] = (char)tolower((unsigned char)src[i]);
	dst[i] = 0;
	if (i && dst[i - 1] == '.')
		dst[i - 1] = 0;
}

int tg_sts_policy(struct tg_sts *s, char *buf)
{
	char *body, *line, *next, status[80];
	int version = 0;

	body = strstr(buf, "\r\n\r\n");
	if (!body) {
		snprintf(s->problem, sizeof(s->problem), "%s: no complete "
			 "HTTP answer", s->url);
		return -1;
	}
	*body = 0;
	body += 4;
	if (strncmp(buf, "HTTP/1.", 7) != 0 || strncmp(buf + 8, " 200", 4)) {
		tg_sts_clean(status, sizeof(status), buf, strcspn(buf, "\r\n"));
		snprintf(s->problem, sizeof(s->problem), "%s answered \"%s\" "
			 "(a policy needs 200; redirects are not followed)",
			 s->url, status);
		return -1;
	}
	for (line = body; line && *line; line = next) {
		char *colon, *val, key[32], v[NS_MAXDNAME];
		size_t n;

		next = strchr(line, '\n');
		if (next)
			*next++ = 0;
		n = strlen(line);
		if (n && line[n - 1] == '\r')
			line[--n] = 0;
		colon = strchr(line, ':');
		if (!colon)
			continue;
		*colon = 0;
		for (val = colon + 1; *val == ' ' || *val == '\t'; val++)
			;
		n = strlen(val);
		while (n && (val[n - 1] == ' ' || val[n - 1] == '\t'))
			val[--n] = 0;
		tg_sts_clean(key, sizeof(key), line, strlen(line));
		tg_sts_clean(v, sizeof(v), val, n);
		if (strcmp(key, "version") == 0) {
			version = strcmp(v, "STSv1") == 0;
		} else if (strcmp(key, "mode") == 0) {
			snprintf(s->mode, sizeof(s->mode), "%s", v);
		} else if (strcmp(key, "max_age") == 0) {
			s->max_age = strspn(v, "0123456789") == strlen(v) &&
				     *v && strlen(v) <= 10 ? atol(v) : -1;
		} else if (strcmp(key, "mx") == 0 && s->nmx < TG_STS_MX) {
			tg_sts_name(s->mx[s->nmx++], sizeof(s->mx[0]), v);
		}
	}
	if (!version)
		snprintf(s->problem, sizeof(s->problem), "%s: the policy has "
			 "no \"version: STSv1\"", s->url);
	else if (strcmp(s->mode, "enforce") && strcmp(s->mode, "testing") &&
		 strcmp(s->mode, "none"))
		snprintf(s->problem, sizeof(s->problem), "%s: mode \"%s\" is "
			 "not enforce, testing or none", s->url, s->mode);
	else if (s->max_age < 0 || !s->max_age)
		snprintf(s->problem, sizeof(s->problem), "%s: no valid "
			 "max_age", s->url);
	else if (!s->nmx && strcmp(s->mode, "none"))
		snprintf(s->problem, sizeof(s->problem), "%s: no mx pattern",
			 s->url);
	else
		return 0;
	return -1;
}

void tg_sts_lookup(struct tg_sts *s, struct __res_state *res,
		   const char *domain, const char *ca_file, int timeout)
{
	char host[NS_MAXDNAME + 16], why[NS_MAXDNAME + 400];
	char *buf;
	long n;

	memset(s, 0, sizeof(*s));
	if (tg_sts_txt(s, res, domain) < 0)
		return;
	s->state = TG_STS_FETCH_ERROR;
	snprintf(host, sizeof(host), "mta-sts.%s", domain);
	snprintf(s->url, sizeof(s->url), "https://%s/.well-known/mta-sts.txt",
		 host);
	buf = malloc(TG_STS_BODY + 4096);
	if (!buf) {
		snprintf(s->problem, sizeof(s->problem), "out of memory");
		return;
	}
	n = tg_sts_get(res, host, ca_file, timeout, buf, TG_STS_BODY + 4096,
		       why, sizeof(why));
	if (n < 0)
		snprintf(s->problem, sizeof(s->problem), "%s", why);
	else if (tg_sts_policy(s, buf) == 0)
		s->state = TG_STS_POLICY;
	free(buf);
}

const char *tg_sts_match(const struct tg_sts *s, const char *host)
{
	char h[NS_MAXDNAME];
	const char *dot;
	int i;

	tg_sts_name(h, sizeof(h), host);
	dot = strchr(h, '.');
	for (i = 0; i < s->nmx; i++) {
		const char *m = s->mx[i];

		if (strcmp(m, h) == 0)
			return m;
		/* "*.example.com": exactly one label left of example.com */
		if (m[0] == '*' && m[1] == '.' && dot && dot != h &&
		    strcmp(m + 1, dot) == 0)
			return m;
	}
	return NULL;
}
