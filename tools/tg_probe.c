// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_probe - tlsguardctl probe (see tg_probe.h)
 * DESCRIPTION
 *	One pass: resolve, then probe the addresses one after the other in
 *	MX preference order (the order an MTA tries them), then print. The
 *	DNS lookups and the SMTP/STARTTLS session are tg_mxconn's, the same
 *	code tlsguardd's MX check runs; only the SSL_CTX differs: the agent
 *	refuses below TLS 1.2, the probe accepts what the server offers so
 *	that it can say what that was.
 *
 *	DANE is OpenSSL's (SSL_dane_enable, SSL_dane_tlsa_add): the probe
 *	only decides whether the records apply (DNSSEC-validated answers,
 *	RFC 7672's usages) and hands them to the session before the
 *	handshake; with verification off in the context, the handshake
 *	completes either way and SSL_get0_dane_authority() says whether a
 *	record matched. The route is Postfix's tools' (tg_route.c), the
 *	MTA-STS policy tg_sts.c's.
 *
 *	Everything a server sends (greeting, replies, certificate names) is
 *	printed with control bytes replaced, so that a hostile host cannot
 *	write to the administrator's terminal.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "tg_hostport.h"
#include "tg_mxconn.h"
#include "tg_probe.h"
#include "tg_resp.h"
#include "tg_route.h"
#include "tg_sts.h"

#define TG_PROBE_NAMES	16	/* MX hosts looked at */
#define TG_PROBE_HOSTS	32	/* addresses probed */
#define TG_PROBE_TIMEOUT 10	/* seconds, default --timeout */
#define TG_TEXT		(2 * NS_MAXDNAME + 1024)	/* a verdict naming hosts */
#define TG_NOTES	3	/* lines explaining the overall verdict */
#define TG_PROBE_TLSA	8	/* TLSA records kept per host */
#define TG_POSTFIX_DIR	"/etc/postfix"


/* What DANE (RFC 7672) makes of one host. */
enum tg_dane {
	TG_DANE_NA,		/* an address: no name, no TLSA */
	TG_DANE_NONE,		/* no TLSA records */
	TG_DANE_INSECURE,	/* TLSA records, but not DNSSEC-validated */
	TG_DANE_UNUSABLE,	/* validated, but none usable for SMTP */
	TG_DANE_VERIFIED,	/* a record matched the presented chain */
	TG_DANE_FAILED,		/* records apply and nothing matched */
	TG_DANE_UNCHECKED,	/* records apply, the host was not reached */
};

enum tg_verdict {
	TG_V_DELIVERED,		/* TLS 1.2 or higher */
	TG_V_BOUNCE,		/* tlsguard holds the MAIL */
	TG_V_DEFER,		/* the MTA does not get as far as MAIL */
};

struct tg_probe_host {
	char name[NS_MAXDNAME];	/* MX host name, or the literal */
	int pref;		/* MX preference, -1 if not from an MX */
	int has_addr;
	struct tg_addr addr;
	char addr_s[INET6_ADDRSTRLEN];
	char no_addr[64];	/* why there is no address */

	int reached;		/* a session got as far as the greeting */
	int ehlo;		/* EHLO was answered: offered is known */
	int offered;		/* STARTTLS in the EHLO reply */
	char greeting[256];
	char failure[512];	/* what went wrong, for the verdict */
	int vnum;		/* SSL_version(), 0 without TLS */
	char version[16];
	char cipher[80];
	int bits;
	char subject[300];
	char issuer[300];
	char not_before[32];
	char not_after[32];
	int expired, not_yet;
	int cert;
	char verify[160];	/* "ok" or the verifier's reason */

	int tlsa_asked;
	struct tg_dns_answer tlsa;
	char tlsa_name[NS_MAXDNAME + 16];
	int addr_ad;		/* its A and AAAA answers had the AD bit */
	struct tg_tlsa tlsa_rr[TG_PROBE_TLSA];
	int ntlsa;

	enum tg_dane dane;
	int dane_usable;	/* records handed to OpenSSL */
	int dane_depth;		/* chain depth of the match */
	__u8 dane_u, dane_s, dane_m;	/* the record that matched */
	char dane_text[700];

	const char *sts_pattern;	/* the MTA-STS mx pattern it matches */
	int sts_ok;
	char sts_text[400];

	enum tg_verdict verdict;
	char verdict_s[TG_TEXT];
};

struct tg_probe {
	const char *target;
	const char *resolver;
	int timeout;
	int json;
	const char *ca_file;	/* CAs for verification (tests) */
	const char *postfix_dir;	/* NULL: /etc/postfix if present */
	int no_postfix;
	int route_read;		/* a Postfix configuration was read */
	struct tg_route route;
	int sts_asked;
	struct tg_sts sts;
	char sts_summary[TG_TEXT];
	char dane_summary[TG_TEXT];
	unsigned port;
	int mode;		/* TG_M_* */
	char name[NS_MAXDNAME];	/* domain or host to look up */
	struct tg_addr literal;
	struct tg_mx_name mx[TG_PROBE_NAMES];
	int nmx;
	int mx_ad;		/* the MX answer was DNSSEC-authenticated */
	int own_address;	/* no MX: the domain's own address */
	struct tg_probe_host host[TG_PROBE_HOSTS];
	int nhost;
	char overall[TG_TEXT];
	char note[TG_NOTES][TG_TEXT];
	int nnote;
	int exit;
};

enum { TG_M_DOMAIN, TG_M_HOST, TG_M_LITERAL };

static void tg_probe_fatal(const char *fmt, ...)
	__attribute__((format(printf, 1, 2), noreturn));

static void tg_probe_fatal(const char *fmt, ...)
{
	va_list ap;

	fputs("tlsguardctl: fatal: probe: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

static void tg_probe_usage(void)
{
	fputs("usage: tlsguardctl probe DOMAIN|HOST:PORT|IP|[IP]:PORT "
	      "[--resolver IP[:PORT]|[IPv6]:PORT] [--timeout SECONDS] "
	      "[--json]\n"
	      "         [--postfix-config DIR | --no-postfix-config] "
	      "[--ca-file FILE]\n", stderr);
	exit(2);
}

/* Copy with control bytes and non-ASCII replaced: server text is hostile. */
static void tg_clean(char *dst, size_t len, const char *src, size_t n)
{
	size_t i;

	if (!len)
		return;
	for (i = 0; i < n && i + 1 < len && src[i]; i++) {
		unsigned char c = (unsigned char)src[i];

		dst[i] = c < 0x20 || c >= 0x7f ? '?' : (char)c;
	}
	dst[i] = 0;
}

/* The first line of an SMTP reply, cleaned. */
static void tg_first_line(char *dst, size_t len, const char *reply)
{
	tg_clean(dst, len, reply, strcspn(reply, "\r\n"));
}

static int tg_literal(const char *s, struct tg_addr *a)
{
	memset(a, 0, sizeof(*a));
	if (inet_pton(AF_INET, s, a->addr) == 1) {
		a->family = AF_INET;
		return 1;
	}
	if (inet_pton(AF_INET6, s, a->addr) == 1) {
		a->family = AF_INET6;
		return 1;
	}
	return 0;
}

static unsigned tg_port(const char *s, const char *target)
{
	unsigned port;

	if (tg_port_parse(s, &port) < 0)
		tg_probe_fatal("%s: bad port \"%s\" (expected 1 to 65535)",
			       target, s);
	return port;
}

/*
 * DOMAIN, HOST:PORT, IPv4[:PORT], IPv6, [IP or HOST][:PORT]. Brackets
 * mean what they mean to Postfix: that host, no MX lookup.
 */
static void tg_target(struct tg_probe *p, const char *t)
{
	struct tg_hostport_text ht;

	switch (tg_hostport_split(t, &ht, TG_HP_BARE_V6)) {
	case TG_HP_EBRACKET:
		tg_probe_fatal("%s: missing \"]\" or empty brackets", t);
	case TG_HP_EAFTER:
		tg_probe_fatal("%s: expected \":PORT\" or nothing after "
			       "\"]\"", t);
	case TG_HP_ECOLONS:
		tg_probe_fatal("%s: put an IPv6 address with a port in "
			       "brackets: [IPv6]:PORT", t);
	case TG_HP_ELONG:
		tg_probe_fatal("%.64s...: name too long", t);
	}
	p->port = ht.port ? tg_port(ht.port, t) : 25;
	if (tg_literal(ht.host, &p->literal)) {
		p->mode = TG_M_LITERAL;
	} else if (!tg_domain_valid(ht.host, TG_DOMAIN_DNS)) {
		tg_probe_fatal("\"%s\": not a domain, host name or IP address",
			       ht.host);
	} else {
		p->mode = ht.bracketed || ht.port ? TG_M_HOST : TG_M_DOMAIN;
	}
	snprintf(p->name, sizeof(p->name), "%s", ht.host);
}

static const char *tg_rcode_name(int rcode)
{
	static char buf[16];

	switch (rcode) {
	case -1:
		return "no answer";
	case ns_r_noerror:
		return "NOERROR";
	case ns_r_formerr:
		return "FORMERR";
	case ns_r_servfail:
		return "SERVFAIL";
	case ns_r_nxdomain:
		return "NXDOMAIN";
	case ns_r_notimpl:
		return "NOTIMP";
	case ns_r_refused:
		return "REFUSED";
	}
	snprintf(buf, sizeof(buf), "rcode %d", rcode);
	return buf;
}

static const char *tg_server(const struct tg_probe *p)
{
	return p->resolver ? p->resolver : "the servers of /etc/resolv.conf";
}

/* A lookup that got no usable answer ends the probe (exit 2). */
static void tg_lookup_failed(const struct tg_probe *p, const char *what,
			     const struct tg_dns_answer *a)
{
	if (a->rcode == ns_r_nxdomain)
		tg_probe_fatal("%s: no such domain (NXDOMAIN from %s)",
			       p->name, tg_server(p));
	if (a->rcode == -1)
		tg_probe_fatal("%s: %s lookup: no answer from %s (--timeout "
			       "%d)", p->name, what, tg_server(p), p->timeout);
	tg_probe_fatal("%s: %s lookup failed: %s from %s", p->name, what,
		       tg_rcode_name(a->rcode), tg_server(p));
}

static struct tg_probe_host *tg_new_host(struct tg_probe *p, const char *name,
					 int pref)
{
	struct tg_probe_host *h;

	if (p->nhost == TG_PROBE_HOSTS)
		return NULL;
	h = &p->host[p->nhost++];
	memset(h, 0, sizeof(*h));
	snprintf(h->name, sizeof(h->name), "%s", name);
	h->pref = pref;
	return h;
}

/* One host per address of name; one without an address says why. */
static void tg_add_name(struct tg_probe *p, struct __res_state *res,
			const char *name, int pref)
{
	struct tg_addr addrs[TG_PROBE_HOSTS];
	struct tg_dns_answer a;
	struct tg_probe_host *h;
	int n, i;

	n = tg_dns_addrs(res, name, addrs, 0, TG_PROBE_HOSTS, &a);
	if (n == 0) {
		h = tg_new_host(p, name, pref);
		if (h)
			snprintf(h->no_addr, sizeof(h->no_addr), "%s",
				 a.rcode == ns_r_noerror ? "no A or AAAA record" :
				 tg_rcode_name(a.rcode));
		return;
	}
	for (i = 0; i < n; i++) {
		h = tg_new_host(p, name, pref);
		if (!h)
			return;
		h->has_addr = 1;
		h->addr = addrs[i];
		h->addr_ad = a.ad;
	}
}

static void tg_resolve(struct tg_probe *p, struct __res_state *res)
{
	struct tg_dns_answer a;
	struct tg_probe_host *h;
	int i;

	if (p->mode == TG_M_LITERAL) {
		h = tg_new_host(p, "", -1);
		h->has_addr = 1;
		h->addr = p->literal;
		return;
	}
	if (p->mode == TG_M_HOST) {
		tg_add_name(p, res, p->name, -1);
		if (!p->host[0].has_addr)
			tg_probe_fatal("%s: address lookup: %s from %s",
				       p->name, p->host[0].no_addr,
				       tg_server(p));
		return;
	}
	p->nmx = tg_dns_mx(res, p->name, p->mx, TG_PROBE_NAMES, &a);
	if (a.rcode != ns_r_noerror)
		tg_lookup_failed(p, "MX", &a);
	p->mx_ad = a.ad;
	if (p->nmx == 0) {	/* RFC 5321 5.1: the domain is its own MX */
		p->own_address = 1;
		tg_add_name(p, res, p->name, -1);
		if (!p->host[0].has_addr)
			tg_probe_fatal("%s: no MX, A or AAAA records (%s from "
				       "%s)", p->name, p->host[0].no_addr,
				       tg_server(p));
		return;
	}
	for (i = 0; i < p->nmx; i++) {
		const char *mx = p->mx[i].name;

		/* RFC 7505 null MX: the domain takes no mail at all */
		if (p->nmx == 1 && (!*mx || strcmp(mx, ".") == 0))
			return;
		tg_add_name(p, res, mx, p->mx[i].pref);
	}
}

static void tg_asn1_time(char *dst, size_t len, const ASN1_TIME *t)
{
	struct tm tm;

	if (!t || !ASN1_TIME_to_tm(t, &tm) ||
	    !strftime(dst, len, "%Y-%m-%d %H:%M:%S UTC", &tm))
		snprintf(dst, len, "?");
}

static void tg_x509_name(char *dst, size_t len, const X509_NAME *name)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data;
	long n;

	snprintf(dst, len, "?");
	if (!bio)
		return;
	if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) >= 0) {
		n = BIO_get_mem_data(bio, &data);
		tg_clean(dst, len, data, n > 0 ? (size_t)n : 0);
		if (n <= 0)
			snprintf(dst, len, "(empty)");
	}
	BIO_free(bio);
}

/* OpenSSL says "TLSv1" for 1.0; tlsguardd's texts say "TLSv1.0". */
static const char *tg_version_name(const SSL *ssl)
{
	return SSL_version(ssl) == TLS1_VERSION ? "TLSv1.0" :
						  SSL_get_version(ssl);
}

static void tg_handshake_error(char *dst, size_t len, int err)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;

	if (r)
		snprintf(dst, len, "%s", r);
	else if (err)
		snprintf(dst, len, "%s", strerror(err));
	else
		snprintf(dst, len, "the server closed the connection");
	ERR_clear_error();
}

/* ---- DANE (RFC 7672, RFC 6698 as Postfix applies them) ---- */

static const char *tg_dane_usage(unsigned u)
{
	return u == 0 ? "PKIX-TA" : u == 1 ? "PKIX-EE" : u == 2 ? "DANE-TA" :
	       u == 3 ? "DANE-EE" : "unknown usage";
}

static const char *tg_dane_selector(unsigned s)
{
	return s == 0 ? "certificate" : s == 1 ? "SPKI" : "unknown selector";
}

static const char *tg_dane_mtype(unsigned m)
{
	return m == 0 ? "full" : m == 1 ? "SHA2-256" : m == 2 ? "SHA2-512" :
	       "unknown matching type";
}

/*
 * Usable in SMTP (RFC 7672 3.1.3): DANE-TA(2) and DANE-EE(3) only, the
 * selectors and matching types OpenSSL knows, data not cut.
 */
static int tg_tlsa_usable(const struct tg_tlsa *t)
{
	return (t->usage == 2 || t->usage == 3) && t->selector <= 1 &&
	       t->mtype <= 2 && !t->truncated;
}

/*
 * Before the session: does DANE apply to h? It does when the TLSA
 * records, the MX answer that named the host (none for a host probed
 * without an MX lookup) and the host's addresses were all
 * DNSSEC-validated (the resolver's AD bit), and a record is usable.
 */
static void tg_dane_plan(const struct tg_probe *p, struct tg_probe_host *h)
{
	const char *why = NULL;
	int secure, i;

	h->dane_usable = 0;
	if (!h->tlsa_asked) {
		h->dane = TG_DANE_NA;
		snprintf(h->dane_text, sizeof(h->dane_text), "not applicable "
			 "(an address has no TLSA records)");
		return;
	}
	secure = h->addr_ad && (p->mode != TG_M_DOMAIN || p->mx_ad);
	if (p->mode == TG_M_DOMAIN && !p->mx_ad)
		why = "the MX answer was not DNSSEC-validated";
	else if (!h->addr_ad)
		why = "the host's address answer was not DNSSEC-validated";
	if (h->tlsa.rcode != ns_r_noerror && h->tlsa.rcode != ns_r_nxdomain) {
		h->dane = secure ? TG_DANE_FAILED : TG_DANE_INSECURE;
		snprintf(h->dane_text, sizeof(h->dane_text), secure ?
			 "FAILED: TLSA lookup of %s failed (%s): a DANE client "
			 "does not deliver without an answer" :
			 "TLSA lookup of %s failed (%s); not DNSSEC-validated "
			 "(insecure): DANE does not apply", h->tlsa_name,
			 tg_rcode_name(h->tlsa.rcode));
		return;
	}
	if (!h->tlsa.count) {
		h->dane = TG_DANE_NONE;
		snprintf(h->dane_text, sizeof(h->dane_text), "no TLSA (%s): "
			 "DANE does not apply", h->tlsa.ad && secure ?
			 "DNSSEC-authenticated denial" :
			 "not DNSSEC-validated");
		return;
	}
	if (!h->tlsa.ad || !secure) {
		h->dane = TG_DANE_INSECURE;
		snprintf(h->dane_text, sizeof(h->dane_text), "TLSA not "
			 "validated (insecure: %s): DANE does not apply",
			 !h->tlsa.ad ? "the TLSA answer has no AD bit" : why);
		return;
	}
	for (i = 0; i < h->ntlsa; i++)
		h->dane_usable += tg_tlsa_usable(&h->tlsa_rr[i]);
	if (!h->dane_usable) {
		h->dane = TG_DANE_UNUSABLE;
		snprintf(h->dane_text, sizeof(h->dane_text), "no usable TLSA "
			 "record (SMTP uses DANE-TA(2) and DANE-EE(3) only): a "
			 "DANE client requires TLS here but authenticates "
			 "nothing");
		return;
	}
	/* until the session says more */
	h->dane = TG_DANE_UNCHECKED;
	snprintf(h->dane_text, sizeof(h->dane_text), "not checked: the host "
		 "was not reached (its TLSA records apply)");
}

/*
 * The TLSA records into the session before the handshake: OpenSSL
 * matches them against the chain the host presents. DANE-EE needs no
 * name (RFC 7672 3.1.1); DANE-TA checks the MX host name and the
 * next-hop domain (3.2.2).
 */
struct tg_dane_arg {
	const struct tg_probe *p;
	struct tg_probe_host *h;
};

static int tg_dane_prep(SSL *ssl, void *arg)
{
	const struct tg_dane_arg *da = arg;
	const struct tg_probe *p = da->p;
	struct tg_probe_host *h = da->h;
	int i, added = 0;

	if (SSL_dane_enable(ssl, h->name) <= 0)
		return -1;
	SSL_dane_set_flags(ssl, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
	if (p->mode == TG_M_DOMAIN && strcasecmp(p->name, h->name) != 0 &&
	    !SSL_add1_host(ssl, p->name))
		return -1;
	for (i = 0; i < h->ntlsa; i++) {
		const struct tg_tlsa *t = &h->tlsa_rr[i];

		if (tg_tlsa_usable(t) &&
		    SSL_dane_tlsa_add(ssl, t->usage, t->selector, t->mtype,
				      t->data, t->len) > 0)
			added++;
	}
	ERR_clear_error();	/* a malformed record is only unusable */
	h->dane_usable = added;
	return 0;
}

/*
 * Fold DANE into the host's verdict. Where DANE applies, an MTA that
 * uses it (Postfix: smtp_dns_support_level = dnssec, smtp_tls_security_level
 * = dane) delivers only over TLS to a host that a record authenticates;
 * otherwise it defers and goes on to the next MX host, and never gets as
 * far as the MAIL that tlsguardd judges.
 */
static void tg_dane_verdict(struct tg_probe_host *h,
			    const struct tg_starttls *st)
{
	if (h->dane == TG_DANE_VERIFIED) {
		if (h->verdict == TG_V_DELIVERED)
			snprintf(h->verdict_s, sizeof(h->verdict_s),
				 "would be delivered, DANE-authenticated: a "
				 "man in the middle can neither read nor "
				 "change it");
		return;
	}
	if (!h->reached)
		return;
	if (h->dane == TG_DANE_UNCHECKED) {	/* reached, but no TLS */
		h->dane = TG_DANE_FAILED;
		snprintf(h->dane_text, sizeof(h->dane_text), "FAILED: no TLS "
			 "(%s), and the TLSA records require it",
			 h->failure[0] ? h->failure :
			 "STARTTLS not offered");
	}
	if (h->dane != TG_DANE_FAILED)
		return;
	h->verdict = TG_V_DEFER;
	snprintf(h->verdict_s, sizeof(h->verdict_s), "would be deferred: "
		 "DANE %s: an MTA that uses DANE does not deliver to this "
		 "host (a man in the middle, or TLSA records the host's "
		 "certificate no longer matches)", h->dane_text);
}

/* After the handshake: what OpenSSL's DANE check found. */
static void tg_dane_result(struct tg_probe_host *h, SSL *ssl)
{
	uint8_t u, s, m;
	long vr;

	if (!h->dane_usable) {
		h->dane = TG_DANE_UNUSABLE;
		snprintf(h->dane_text, sizeof(h->dane_text), "no usable TLSA "
			 "record (malformed data): a DANE client requires TLS "
			 "here but authenticates nothing");
		return;
	}
	h->dane_depth = SSL_get0_dane_authority(ssl, NULL, NULL);
	vr = SSL_get_verify_result(ssl);
	if (h->dane_depth >= 0 && vr == X509_V_OK &&
	    SSL_get0_dane_tlsa(ssl, &u, &s, &m, NULL, NULL) >= 0) {
		h->dane = TG_DANE_VERIFIED;
		h->dane_u = u;
		h->dane_s = s;
		h->dane_m = m;
		snprintf(h->dane_text, sizeof(h->dane_text), "verified "
			 "(%u/%u/%u: %s, %s, %s, chain depth %d)", u, s, m,
			 tg_dane_usage(u), tg_dane_selector(s),
			 tg_dane_mtype(m), h->dane_depth);
		return;
	}
	h->dane = TG_DANE_FAILED;
	snprintf(h->dane_text, sizeof(h->dane_text), "FAILED: %s",
		 vr == X509_V_ERR_DANE_NO_MATCH ? "no TLSA record matches the "
		 "certificate chain the host presented" :
		 X509_verify_cert_error_string(vr));
}

static void tg_probe_one(struct tg_probe *p, SSL_CTX *ctx,
			 struct tg_probe_host *h)
{
	struct tg_replies replies;
	struct tg_starttls st;
	char why[200], line[256];
	struct tg_dane_arg da = { .p = p, .h = h };
	struct tg_resp held;
	X509 *cert;
	long vr;

	/* what tlsguardd answers with tlsguard.conf's defaults */
	tg_replies_defaults(&replies);

	tg_addr_str(&h->addr, h->addr_s, sizeof(h->addr_s));
	tg_dane_plan(p, h);
	tg_starttls_open_prep(&st, ctx, &h->addr, p->port,
			      h->name[0] ? h->name : NULL, p->timeout,
			      h->dane_usable ? tg_dane_prep : NULL, &da);
	h->reached = st.stage > TG_ST_GREETING;
	h->ehlo = st.stage > TG_ST_EHLO;
	h->offered = st.offered;
	tg_clean(h->greeting, sizeof(h->greeting), st.greeting,
		 strlen(st.greeting));
	tg_first_line(line, sizeof(line), st.reply);
	switch (st.stage) {
	case TG_ST_CONNECT:
		snprintf(h->failure, sizeof(h->failure), "cannot connect: %s",
			 strerror(st.err));
		break;
	case TG_ST_GREETING:
	case TG_ST_EHLO:
		if (st.code > 0)
			snprintf(h->failure, sizeof(h->failure),
				 "%s refused: %s", st.stage == TG_ST_EHLO ?
				 "EHLO" : "session", line);
		else
			snprintf(h->failure, sizeof(h->failure),
				 "no reply to %s: %s", st.stage == TG_ST_EHLO ?
				 "EHLO" : "connect", strerror(st.err));
		break;
	case TG_ST_NOT_OFFERED:
		break;
	case TG_ST_STARTTLS:
		snprintf(h->failure, sizeof(h->failure), "STARTTLS answered: %s",
			 st.code > 0 ? line : strerror(st.err));
		break;
	case TG_ST_HANDSHAKE:
		tg_handshake_error(why, sizeof(why), st.err);
		snprintf(h->failure, sizeof(h->failure),
			 "TLS handshake failed: %s", why);
		break;
	case TG_ST_DONE:
		h->vnum = SSL_version(st.ssl);
		snprintf(h->version, sizeof(h->version), "%s",
			 tg_version_name(st.ssl));
		snprintf(h->cipher, sizeof(h->cipher), "%s",
			 SSL_get_cipher_name(st.ssl));
		h->bits = SSL_get_cipher_bits(st.ssl, NULL);
		cert = SSL_get1_peer_certificate(st.ssl);
		if (cert) {
			h->cert = 1;
			tg_x509_name(h->subject, sizeof(h->subject),
				     X509_get_subject_name(cert));
			tg_x509_name(h->issuer, sizeof(h->issuer),
				     X509_get_issuer_name(cert));
			tg_asn1_time(h->not_before, sizeof(h->not_before),
				     X509_get0_notBefore(cert));
			tg_asn1_time(h->not_after, sizeof(h->not_after),
				     X509_get0_notAfter(cert));
			h->expired = X509_cmp_current_time(
					     X509_get0_notAfter(cert)) <= 0;
			h->not_yet = X509_cmp_current_time(
					     X509_get0_notBefore(cert)) >= 0;
			vr = SSL_get_verify_result(st.ssl);
			snprintf(h->verify, sizeof(h->verify), "%s",
				 vr == X509_V_OK ? "ok" :
				 X509_verify_cert_error_string(vr));
			X509_free(cert);
		}
		if (h->dane == TG_DANE_UNCHECKED)
			tg_dane_result(h, st.ssl);
		break;
	}
	tg_starttls_close(&st);

	if (st.stage == TG_ST_DONE && h->vnum >= TLS1_2_VERSION) {
		h->verdict = TG_V_DELIVERED;
		snprintf(h->verdict_s, sizeof(h->verdict_s),
			 "would be delivered");
	} else if (st.stage == TG_ST_DONE) {
		h->verdict = TG_V_BOUNCE;
		tg_resp_held(&held, &replies, 0, h->version);
		snprintf(h->verdict_s, sizeof(h->verdict_s),
			 "would bounce: %s", held.text);
	} else if (st.stage == TG_ST_NOT_OFFERED) {
		h->verdict = TG_V_BOUNCE;
		tg_resp_held(&held, &replies, 0, NULL);
		snprintf(h->verdict_s, sizeof(h->verdict_s),
			 "would bounce: %s", held.text);
	} else if (st.stage == TG_ST_STARTTLS) {
		/* the MTA goes on in plaintext, and tlsguardd holds MAIL */
		h->verdict = TG_V_BOUNCE;
		tg_resp_held(&held, &replies, 0, NULL);
		snprintf(h->verdict_s, sizeof(h->verdict_s),
			 "would bounce: %s (%s)", held.text, h->failure);
	} else if (st.stage == TG_ST_HANDSHAKE) {
		/* Postfix at "may" defers, then retries in plaintext */
		h->verdict = TG_V_BOUNCE;
		snprintf(h->verdict_s, sizeof(h->verdict_s),
			 "would bounce: %s; the MTA's retry without TLS is "
			 "held", h->failure);
	} else {
		h->verdict = TG_V_DEFER;
		snprintf(h->verdict_s, sizeof(h->verdict_s),
			 "would be deferred: %s", h->failure);
	}
	tg_dane_verdict(h, &st);
}

/* TLSA at _PORT._tcp.NAME, asked once per host name. */
static void tg_tlsa(struct tg_probe *p, struct __res_state *res)
{
	int i, j;

	for (i = 0; i < p->nhost; i++) {
		struct tg_probe_host *h = &p->host[i];

		if (!h->name[0])
			continue;	/* a literal address has no name */
		snprintf(h->tlsa_name, sizeof(h->tlsa_name), "_%u._tcp.%s",
			 p->port, h->name);
		for (j = 0; j < i; j++)
			if (p->host[j].tlsa_asked &&
			    strcasecmp(p->host[j].name, h->name) == 0)
				break;
		h->tlsa_asked = 1;
		if (j < i) {
			h->tlsa = p->host[j].tlsa;
			h->ntlsa = p->host[j].ntlsa;
			memcpy(h->tlsa_rr, p->host[j].tlsa_rr,
			       sizeof(h->tlsa_rr));
		} else {
			h->ntlsa = tg_dns_tlsa_rrs(res, h->name, p->port,
						   h->tlsa_rr, TG_PROBE_TLSA,
						   &h->tlsa);
		}
	}
}

static void tg_note(struct tg_probe *p, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void tg_note(struct tg_probe *p, const char *fmt, ...)
{
	va_list ap;

	if (p->nnote == TG_NOTES)
		return;
	va_start(ap, fmt);
	vsnprintf(p->note[p->nnote++], TG_TEXT, fmt, ap);
	va_end(ap);
}

/* "the host" or "the N hosts" */
static const char *tg_hosts(char *buf, size_t len, int n)
{
	if (n == 1)
		snprintf(buf, len, "the host");
	else
		snprintf(buf, len, "the %d hosts", n);
	return buf;
}

static void tg_overall(struct tg_probe *p)
{
	char buf[32];
	struct tg_probe_host *first = NULL;
	struct tg_replies replies;
	int i, secure = 0, bounce = 0, reached_before = 0, dane_failed = 0;
	int dane_ok = 0;

	tg_replies_defaults(&replies);

	for (i = 0; i < p->nhost; i++) {
		struct tg_probe_host *h = &p->host[i];

		dane_failed += h->verdict == TG_V_DEFER &&
			       h->dane == TG_DANE_FAILED;
		dane_ok += h->dane == TG_DANE_VERIFIED;
		if (h->verdict == TG_V_DELIVERED) {
			secure++;
			if (!first)
				first = h;
		} else {
			bounce += h->verdict == TG_V_BOUNCE;
			if (!first && h->reached)
				reached_before++;
		}
	}
	p->exit = 1;
	if (p->nhost == 0) {
		snprintf(p->overall, sizeof(p->overall),
			 "would bounce: %s publishes a null MX (RFC 7505) and "
			 "takes no mail", p->name);
	} else if (secure == p->nhost) {
		p->exit = 0;
		if (p->nhost == 1)
			memcpy(p->overall, p->host[0].verdict_s,
			       sizeof(p->overall));
		else
			snprintf(p->overall, sizeof(p->overall), "would be "
				 "delivered: every host takes mail over TLS "
				 "1.2 or higher%s", dane_ok == p->nhost ?
				 ", DANE-authenticated: a man in the middle "
				 "can neither read nor change it" : "");
	} else if (p->nhost == 1) {
		snprintf(p->overall, sizeof(p->overall), "%s",
			 p->host[0].verdict_s);
	} else if (secure) {
		snprintf(p->overall, sizeof(p->overall),
			 "would be delivered, by %s[%s]", first->name,
			 first->addr_s);
		if (bounce)
			tg_note(p, "at %s that would bounce it, tlsguardd "
				"answers %u %s instead (another MX host "
				"takes TLS 1.2 or higher), and the MTA tries the "
				"next host", tg_hosts(buf, sizeof(buf), bounce),
				replies.defer_code, replies.defer_dsn);
		if (dane_failed)
			tg_note(p, "an MTA that uses DANE passes over %s "
				"where DANE fails", tg_hosts(buf, sizeof(buf),
							     dane_failed));
		if (p->nhost - secure - bounce - dane_failed)
			tg_note(p, "the MTA passes over %s it cannot reach",
				tg_hosts(buf, sizeof(buf), p->nhost - secure -
					 bounce - dane_failed));
		if (reached_before >= 2)
			tg_note(p, "%d hosts that answer come before %s[%s]: "
				"Postfix makes at most 2 SMTP sessions per "
				"delivery attempt (smtp_mx_session_limit), so "
				"the mail may be deferred until one of them "
				"fails or is fixed", reached_before,
				first->name, first->addr_s);
	} else if (bounce) {
		snprintf(p->overall, sizeof(p->overall), "would bounce: no "
			 "host takes mail over TLS 1.2 or higher");
	} else if (dane_failed) {
		snprintf(p->overall, sizeof(p->overall),
			 "would be deferred: DANE fails at every host that "
			 "answers (an MTA that uses DANE retries until the mail "
			 "expires)");
	} else {
		snprintf(p->overall, sizeof(p->overall),
			 "would be deferred: no host could be reached (the MTA "
			 "retries until the mail expires)");
	}
}

/* ---- the MTA's route: Postfix's relayhost and transport_maps ---- */

/*
 * For a domain, the route Postfix would take when its configuration can
 * be read (--postfix-config DIR, else /etc/postfix when it has a
 * main.cf): the probe then checks the host the mail goes to.
 */
static void tg_follow_route(struct tg_probe *p)
{
	static const char *smtp[] = { "smtp", "relay", NULL };
	const char *dir = p->postfix_dir;
	struct tg_route *r = &p->route;
	int i;

	if (p->mode != TG_M_DOMAIN || p->no_postfix)
		return;
	if (!dir) {
		if (access(TG_POSTFIX_DIR "/main.cf", R_OK) != 0)
			return;
		dir = TG_POSTFIX_DIR;
	}
	p->postfix_dir = dir;
	if (tg_route_lookup(r, dir, p->name) < 0)
		tg_probe_fatal("Postfix configuration %s: %s", dir, r->how);
	p->route_read = 1;
	for (i = 0; smtp[i]; i++)
		if (strcmp(r->transport, smtp[i]) == 0)
			break;
	if (!smtp[i])
		tg_probe_fatal("%s: Postfix (%s) sends it with transport "
			       "\"%s\", not over SMTP to port 25: nothing to "
			       "probe (%s)", p->name, dir, r->transport,
			       r->how);
	if (!r->routed)
		return;
	p->port = r->port ? r->port : 25;
	if (tg_literal(r->host, &p->literal))
		p->mode = TG_M_LITERAL;
	else if (!tg_domain_valid(r->host, TG_DOMAIN_DNS))
		tg_probe_fatal("Postfix configuration %s: nexthop \"%s\" is "
			       "not a host name or address", dir, r->host);
	else
		p->mode = r->bracketed ? TG_M_HOST : TG_M_DOMAIN;
	snprintf(p->name, sizeof(p->name), "%s", r->host);
}

/* ---- MTA-STS (RFC 8461) per host ---- */

static void tg_sts_hosts(struct tg_probe *p)
{
	const char *then;
	int i, bad = 0, n = 0;
	char mx[512];
	size_t off = 0;

	if (!p->sts_asked) {
		snprintf(p->sts_summary, sizeof(p->sts_summary), "not "
			 "applicable (%s)", p->route.routed ? "the route is "
			 "not the domain's MX hosts" : p->mode == TG_M_LITERAL ?
			 "an address" : "a host probed without an MX lookup");
		return;
	}
	if (p->sts.state == TG_STS_NONE) {
		snprintf(p->sts_summary, sizeof(p->sts_summary), "%s",
			 p->sts.problem[0] ? p->sts.problem :
			 "none (no STSv1 TXT record at _mta-sts)");
		return;
	}
	if (p->sts.state != TG_STS_POLICY) {
		snprintf(p->sts_summary, sizeof(p->sts_summary), "no policy%s"
			 "%s%s: %s", p->sts.id[0] ? " (TXT record id " : "",
			 p->sts.id, p->sts.id[0] ? ")" : "", p->sts.problem);
		return;
	}
	then = strcmp(p->sts.mode, "enforce") == 0 ? "enforce: a sender "
	       "that applies MTA-STS does not deliver to this host" :
	       strcmp(p->sts.mode, "testing") == 0 ? "testing: a sender "
	       "reports it and delivers anyway" : "none";
	for (i = 0; i < p->sts.nmx && off < sizeof(mx); i++)
		off += (size_t)snprintf(mx + off, sizeof(mx) - off, "%s%s",
					i ? ", " : "", p->sts.mx[i]);
	for (i = 0; i < p->nhost; i++) {
		struct tg_probe_host *h = &p->host[i];

		if (!h->has_addr)
			continue;
		n++;
		h->sts_pattern = tg_sts_match(&p->sts, h->name);
		if (strcmp(p->sts.mode, "none") == 0)
			snprintf(h->sts_text, sizeof(h->sts_text), "policy "
				 "mode none: nothing checked");
		else if (!h->sts_pattern)
			snprintf(h->sts_text, sizeof(h->sts_text), "FAILED: "
				 "%s matches no mx pattern of the policy (%s)",
				 h->name, then);
		else if (h->vnum < TLS1_2_VERSION)
			snprintf(h->sts_text, sizeof(h->sts_text), "FAILED: "
				 "no TLS 1.2 or higher (%s)", then);
		else if (strcmp(h->verify, "ok") != 0)
			snprintf(h->sts_text, sizeof(h->sts_text), "FAILED: "
				 "the certificate is not valid for %s: %s (%s)",
				 h->name, h->verify, then);
		else
			h->sts_ok = 1;
		if (h->sts_ok)
			snprintf(h->sts_text, sizeof(h->sts_text), "ok: "
				 "matches mx pattern %s, valid certificate",
				 h->sts_pattern);
		bad += !h->sts_ok && strcmp(p->sts.mode, "none") != 0;
	}
	snprintf(p->sts_summary, sizeof(p->sts_summary), "mode %s (id %s, "
		 "max_age %ld, mx %s): %s", p->sts.mode, p->sts.id,
		 p->sts.max_age, off ? mx : "none",
		 strcmp(p->sts.mode, "none") == 0 ? "nothing is checked" :
		 !bad ? "every MX host matches and has a valid certificate" :
		 bad == n ? "no MX host passes" : "some MX hosts fail");
}

/* ---- the destination's DANE status, in one line ---- */

static void tg_dane_summary(struct tg_probe *p)
{
	/* Where DANE does not authenticate every host, this follows. */
	static const char unnoticed[] = "a man in the middle who presents a "
					"certificate of its own goes "
					"unnoticed";
	int i, n = 0, verified = 0, failed = 0, insecure = 0;
	char *out = p->dane_summary;
	size_t len = sizeof(p->dane_summary);

	for (i = 0; i < p->nhost; i++) {
		const struct tg_probe_host *h = &p->host[i];

		if (!h->has_addr)
			continue;
		n++;
		verified += h->dane == TG_DANE_VERIFIED;
		failed += h->dane == TG_DANE_FAILED;
		insecure += h->dane == TG_DANE_INSECURE;
	}
	if (p->mode == TG_M_LITERAL)
		snprintf(out, len, "not applicable: an address has no TLSA "
			 "records; %s", unnoticed);
	else if (failed)
		snprintf(out, len, "FAILED at %d of %d host%s: an MTA that "
			 "uses DANE does not deliver there", failed, n,
			 n == 1 ? "" : "s");
	else if (n && verified == n)
		snprintf(out, len, "every host is DANE-authenticated: a man "
			 "in the middle can neither read nor change the mail, "
			 "for an MTA that uses DANE (Postfix: "
			 "smtp_dns_support_level = dnssec, "
			 "smtp_tls_security_level = dane)");
	else if (verified)
		snprintf(out, len, "%d of %d hosts DANE-authenticated: at the "
			 "others %s", verified, n, unnoticed);
	else if (insecure)
		snprintf(out, len, "not in force: the TLSA records are not "
			 "DNSSEC-validated; %s", unnoticed);
	else
		snprintf(out, len, "no TLSA records: %s (tlsguard checks the "
			 "TLS version, not who answers)", unnoticed);
	if (p->route_read && p->mode != TG_M_LITERAL) {
		size_t off = strlen(p->dane_summary);

		snprintf(p->dane_summary + off, sizeof(p->dane_summary) - off,
			 p->route.dane ? "; the Postfix of %s uses DANE "
			 "(smtp_tls_security_level = %s, smtp_dns_support_level "
			 "= %s)" : "; the Postfix of %s does not use DANE "
			 "(smtp_tls_security_level = %s, smtp_dns_support_level "
			 "= %s): it does not look at TLSA records",
			 p->postfix_dir, p->route.tls_level,
			 p->route.dns_level[0] ? p->route.dns_level : "(empty)");
	}
}

/* ---- text output ---- */

#define TG_KEY	"  %-18s"

static void tg_kv(const char *key, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void tg_kv(const char *key, const char *fmt, ...)
{
	char k[32];
	va_list ap;

	snprintf(k, sizeof(k), "%s:", key);
	printf(TG_KEY, k);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

static void tg_tlsa_text(const struct tg_probe_host *h, char *buf, size_t len)
{
	const char *auth = h->tlsa.ad ? "DNSSEC-authenticated" :
					"not DNSSEC-authenticated";

	if (!h->tlsa_asked)
		snprintf(buf, len, "not looked up (no host name)");
	else if (h->tlsa.rcode != ns_r_noerror &&
		 h->tlsa.rcode != ns_r_nxdomain)
		snprintf(buf, len, "lookup of %s failed (%s)", h->tlsa_name,
			 tg_rcode_name(h->tlsa.rcode));
	else if (h->tlsa.count)
		snprintf(buf, len, "%d record%s at %s, %s%s", h->tlsa.count,
			 h->tlsa.count == 1 ? "" : "s", h->tlsa_name, auth,
			 h->tlsa.ad ? "" : " (a DANE client ignores them)");
	else
		snprintf(buf, len, "none at %s (%s)", h->tlsa_name,
			 h->tlsa.ad ? "DNSSEC-authenticated denial" :
				      "not DNSSEC-authenticated");
}

static void tg_print_text(const struct tg_probe *p)
{
	char buf[NS_MAXDNAME + 200];
	size_t off = 0;
	int i;

	printf("%-20s%s (%s%s%s), port %u\n", "destination:", p->target,
	       p->route.routed ? "routed to " : "",
	       p->route.routed ? p->name : "",
	       p->mode == TG_M_DOMAIN ? (p->route.routed ? ": its MX hosts" :
					 "its MX hosts") :
	       p->mode == TG_M_HOST ? (p->route.routed ? ": that host, no "
				       "MX lookup" : "that host, no MX lookup") :
	       p->route.routed ? ": that address" : "that address", p->port);
	if (p->route_read)
		printf("%-20s%s (Postfix configuration %s)\n", "route:",
		       p->route.how, p->postfix_dir);
	if (p->mode != TG_M_LITERAL)
		printf("%-20s%s\n", "DNS server:", tg_server(p));
	if (p->mode == TG_M_DOMAIN) {
		for (i = 0; i < p->nmx && off < sizeof(buf); i++)
			off += (size_t)snprintf(buf + off, sizeof(buf) - off,
						"%s%d %s", i ? ", " : "",
						p->mx[i].pref, p->mx[i].name);
		printf("%-20s%s%s\n", "MX hosts:", p->own_address ?
		       "none: the domain's own address takes the mail "
		       "(RFC 5321 5.1)" : p->nhost ? buf : "null MX (RFC 7505)",
		       p->mx_ad ? " (DNSSEC-authenticated)" : "");
	}
	printf("%-20s%s\n", "MTA-STS:", p->sts_summary);
	for (i = 0; i < p->nhost; i++) {
		const struct tg_probe_host *h = &p->host[i];

		putchar('\n');
		if (!h->has_addr) {
			printf("%s\n", h->name);
			if (h->pref >= 0)
				tg_kv("MX preference", "%d", h->pref);
			tg_kv("address", "none (%s)", h->no_addr);
			tg_kv("verdict", "%s", h->verdict_s);
			continue;
		}
		printf("%s[%s]:%u\n", h->name, h->addr_s, p->port);
		if (h->pref >= 0)
			tg_kv("MX preference", "%d", h->pref);
		if (h->greeting[0])
			tg_kv("greeting", "%s", h->greeting);
		if (h->ehlo)
			tg_kv("STARTTLS offered", "%s", h->offered ? "yes" :
			      "no");
		if (h->version[0]) {
			tg_kv("TLS version", "%s", h->version);
			tg_kv("cipher", "%s (%d bits)", h->cipher, h->bits);
		} else if (h->failure[0]) {
			tg_kv("error", "%s", h->failure);
		}
		if (h->cert) {
			tg_kv("subject", "%s", h->subject);
			tg_kv("issuer", "%s", h->issuer);
			tg_kv("not before", "%s%s", h->not_before,
			      h->not_yet ? " (not yet valid)" : "");
			tg_kv("not after", "%s (%s)", h->not_after,
			      h->expired ? "expired" : "not expired");
			tg_kv("verification", "%s%s", h->verify,
			      h->dane == TG_DANE_VERIFIED ? " (by DANE)" :
			      strcmp(h->verify, "ok") == 0 ? "" :
			      " (tlsguard does not require it)");
		} else if (h->version[0]) {
			tg_kv("certificate", "none (anonymous cipher)");
		}
		tg_tlsa_text(h, buf, sizeof(buf));
		tg_kv("TLSA (DANE)", "%s", buf);
		if (h->dane_text[0])
			tg_kv("DANE", "%s", h->dane_text);
		if (h->sts_text[0])
			tg_kv("MTA-STS", "%s", h->sts_text);
		tg_kv("verdict", "%s", h->verdict_s);
	}
	printf("\n%-20s%s\n", "overall:", p->overall);
	printf("%-20s%s\n", "DANE:", p->dane_summary);
	for (i = 0; i < p->nnote; i++)
		printf("%-20s%s\n", "note:", p->note[i]);
}

/* ---- JSON output ---- */

static void tg_js(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static void tg_jkv(const char *key, const char *val, int comma)
{
	printf("\"%s\":", key);
	if (val)
		tg_js(val);
	else
		fputs("null", stdout);
	if (comma)
		putchar(',');
}

static const char *tg_dane_key(enum tg_dane d)
{
	static const char *const key[] = {
		[TG_DANE_NA] = "not-applicable",
		[TG_DANE_NONE] = "no-tlsa",
		[TG_DANE_INSECURE] = "insecure",
		[TG_DANE_UNUSABLE] = "unusable",
		[TG_DANE_VERIFIED] = "verified",
		[TG_DANE_FAILED] = "failed",
		[TG_DANE_UNCHECKED] = "unchecked",
	};

	return key[d];
}

static void tg_json_tlsa(const struct tg_probe_host *h)
{
	int i;
	unsigned j;

	printf("\"records\":[");
	for (i = 0; i < h->ntlsa; i++) {
		const struct tg_tlsa *t = &h->tlsa_rr[i];

		printf("%s{\"usage\":%u,\"selector\":%u,\"mtype\":%u,"
		       "\"data\":\"", i ? "," : "", t->usage, t->selector,
		       t->mtype);
		for (j = 0; j < t->len; j++)
			printf("%02x", t->data[j]);
		printf("\"}");
	}
	printf("]");
}

static void tg_json_dane(const struct tg_probe_host *h)
{
	printf("\"dane\":{");
	tg_jkv("status", tg_dane_key(h->dane), 1);
	if (h->dane == TG_DANE_VERIFIED)
		printf("\"usage\":%u,\"selector\":%u,\"mtype\":%u,"
		       "\"depth\":%d,", h->dane_u, h->dane_s, h->dane_m,
		       h->dane_depth);
	tg_jkv("text", h->dane_text[0] ? h->dane_text : NULL, 0);
	printf("},");
	if (h->sts_text[0]) {
		printf("\"mta_sts\":{\"ok\":%s,", h->sts_ok ? "true" :
		       "false");
		tg_jkv("pattern", h->sts_pattern, 1);
		tg_jkv("text", h->sts_text, 0);
		printf("},");
	} else {
		printf("\"mta_sts\":null,");
	}
}

static void tg_json_top(const struct tg_probe *p)
{
	static const char *const sts[] = {
		[TG_STS_NONE] = "none",
		[TG_STS_DNS_ERROR] = "dns-error",
		[TG_STS_FETCH_ERROR] = "no-policy",
		[TG_STS_POLICY] = "policy",
	};
	int i;

	if (p->route_read) {
		printf("\"route\":{");
		tg_jkv("postfix_config", p->postfix_dir, 1);
		tg_jkv("how", p->route.how, 1);
		tg_jkv("transport", p->route.transport, 1);
		printf("\"routed\":%s,", p->route.routed ? "true" : "false");
		tg_jkv("nexthop", p->route.routed ? p->route.host : NULL, 1);
		printf("\"mx_lookup\":%s,", p->mode == TG_M_DOMAIN ? "true" :
		       "false");
		tg_jkv("smtp_tls_security_level", p->route.tls_level, 1);
		tg_jkv("smtp_dns_support_level", p->route.dns_level, 1);
		printf("\"postfix_uses_dane\":%s},", p->route.dane ? "true" :
		       "false");
	} else {
		printf("\"route\":null,");
	}
	printf("\"mta_sts\":{");
	tg_jkv("status", p->sts_asked ? sts[p->sts.state] : "not-applicable",
	       1);
	if (p->sts_asked && p->sts.state == TG_STS_POLICY) {
		tg_jkv("id", p->sts.id, 1);
		tg_jkv("mode", p->sts.mode, 1);
		printf("\"max_age\":%ld,\"mx\":[", p->sts.max_age);
		for (i = 0; i < p->sts.nmx; i++) {
			if (i)
				putchar(',');
			tg_js(p->sts.mx[i]);
		}
		printf("],");
	}
	tg_jkv("text", p->sts_summary, 0);
	printf("},\"dane\":");
	tg_js(p->dane_summary);
	putchar(',');
}

static const char *tg_verdict_key(enum tg_verdict v)
{
	return v == TG_V_DELIVERED ? "delivered" :
	       v == TG_V_BOUNCE ? "bounce" : "defer";
}

static void tg_print_json(const struct tg_probe *p)
{
	char buf[16];
	int i;

	putchar('{');
	tg_jkv("target", p->target, 1);
	printf("\"port\":%u,", p->port);
	tg_jkv("resolver", p->resolver, 1);
	printf("\"mx\":[");
	for (i = 0; i < p->nmx; i++) {
		printf("%s{\"preference\":%d,", i ? "," : "", p->mx[i].pref);
		tg_jkv("host", p->mx[i].name, 0);
		putchar('}');
	}
	printf("],\"mx_authenticated\":%s,\"null_mx\":%s,"
	       "\"own_address\":%s,\"hosts\":[", p->mx_ad ? "true" : "false",
	       p->mode == TG_M_DOMAIN && p->nhost == 0 ? "true" : "false",
	       p->own_address ? "true" : "false");
	for (i = 0; i < p->nhost; i++) {
		const struct tg_probe_host *h = &p->host[i];

		printf("%s{", i ? "," : "");
		tg_jkv("name", h->name[0] ? h->name : NULL, 1);
		tg_jkv("address", h->has_addr ? h->addr_s : NULL, 1);
		if (h->pref >= 0)
			printf("\"preference\":%d,", h->pref);
		else
			printf("\"preference\":null,");
		tg_jkv("no_address", h->has_addr ? NULL : h->no_addr, 1);
		printf("\"reached\":%s,\"starttls\":%s,",
		       h->reached ? "true" : "false",
		       !h->ehlo ? "null" : h->offered ? "true" : "false");
		tg_jkv("greeting", h->greeting[0] ? h->greeting : NULL, 1);
		tg_jkv("error", h->failure[0] ? h->failure : NULL, 1);
		if (h->version[0]) {
			printf("\"tls\":{");
			tg_jkv("version", h->version, 1);
			tg_jkv("cipher", h->cipher, 1);
			printf("\"bits\":%d},", h->bits);
		} else {
			printf("\"tls\":null,");
		}
		if (h->cert) {
			printf("\"certificate\":{");
			tg_jkv("subject", h->subject, 1);
			tg_jkv("issuer", h->issuer, 1);
			tg_jkv("not_before", h->not_before, 1);
			tg_jkv("not_after", h->not_after, 1);
			printf("\"expired\":%s,\"not_yet_valid\":%s,",
			       h->expired ? "true" : "false",
			       h->not_yet ? "true" : "false");
			tg_jkv("verification", h->verify, 0);
			printf("},");
		} else {
			printf("\"certificate\":null,");
		}
		if (h->tlsa_asked) {
			printf("\"tlsa\":{");
			tg_jkv("name", h->tlsa_name, 1);
			tg_jkv("rcode", tg_rcode_name(h->tlsa.rcode), 1);
			printf("\"count\":%d,\"authenticated\":%s,",
			       h->tlsa.count, h->tlsa.ad ? "true" : "false");
			tg_json_tlsa(h);
			printf("},");
		} else {
			printf("\"tlsa\":null,");
		}
		tg_json_dane(h);
		tg_jkv("verdict", tg_verdict_key(h->verdict), 1);
		tg_jkv("verdict_text", h->verdict_s, 0);
		putchar('}');
	}
	snprintf(buf, sizeof(buf), "%s", p->exit == 0 ? "delivered" :
		 strncmp(p->overall, "would be delivered", 18) == 0 ?
		 "delivered" : strncmp(p->overall, "would bounce", 12) == 0 ?
		 "bounce" : "defer");
	printf("],");
	tg_json_top(p);
	tg_jkv("verdict", buf, 1);
	tg_jkv("verdict_text", p->overall, 1);
	printf("\"notes\":[");
	for (i = 0; i < p->nnote; i++) {
		if (i)
			putchar(',');
		tg_js(p->note[i]);
	}
	printf("],");
	printf("\"all_secure\":%s,\"exit\":%d}\n", p->exit == 0 ? "true" :
	       "false", p->exit);
}

static SSL_CTX *tg_probe_ctx(const char *ca_file)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (!ctx)
		return NULL;
	/*
	 * See what the server does, however weak: the verdict, not the
	 * handshake, is where a weak host fails.
	 */
	SSL_CTX_set_security_level(ctx, 0);
	SSL_CTX_set_min_proto_version(ctx, TLS1_VERSION);
	SSL_CTX_set_cipher_list(ctx, "ALL:@SECLEVEL=0");
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	if (ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1 :
		      SSL_CTX_set_default_verify_paths(ctx) != 1)
		tg_probe_fatal("--ca-file %s: cannot load CA certificates",
			       ca_file ? ca_file : "(default)");
	/* the records themselves come per session (tg_dane_prep) */
	if (SSL_CTX_dane_enable(ctx) <= 0) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

int tg_probe_main(int argc, char **argv)
{
	static struct tg_probe p;
	struct __res_state res;
	SSL_CTX *ctx;
	char *end;
	int i;

	/* a host that closes early must not end the probe without a word */
	signal(SIGPIPE, SIG_IGN);
	p.timeout = TG_PROBE_TIMEOUT;
	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--resolver") == 0) {
			if (++i == argc)
				tg_probe_fatal("--resolver: missing value "
					       "(IP or IP:PORT)");
			p.resolver = argv[i];
		} else if (strcmp(argv[i], "--timeout") == 0) {
			if (++i == argc)
				tg_probe_fatal("--timeout: missing value "
					       "(seconds)");
			errno = 0;
			p.timeout = (int)strtol(argv[i], &end, 10);
			if (!*argv[i] || *end || errno || p.timeout < 1 ||
			    p.timeout > 600)
				tg_probe_fatal("--timeout %s: expected whole "
					       "seconds from 1 to 600",
					       argv[i]);
		} else if (strcmp(argv[i], "--json") == 0) {
			p.json = 1;
		} else if (strcmp(argv[i], "--postfix-config") == 0) {
			if (++i == argc || !*argv[i])
				tg_probe_fatal("--postfix-config: missing "
					       "value (the directory of "
					       "main.cf)");
			p.postfix_dir = argv[i];
		} else if (strcmp(argv[i], "--no-postfix-config") == 0) {
			p.no_postfix = 1;
		} else if (strcmp(argv[i], "--ca-file") == 0) {
			if (++i == argc || !*argv[i])
				tg_probe_fatal("--ca-file: missing value (a "
					       "PEM file of CA certificates)");
			p.ca_file = argv[i];
		} else if (strcmp(argv[i], "-h") == 0 ||
			   strcmp(argv[i], "--help") == 0) {
			tg_probe_usage();
		} else if (argv[i][0] == '-' && argv[i][1]) {
			tg_probe_fatal("unknown option %s (see "
				       "tlsguardctl --help)", argv[i]);
		} else if (p.target) {
			tg_probe_fatal("one destination at a time (%s, then "
				       "%s)", p.target, argv[i]);
		} else {
			p.target = argv[i];
		}
	}
	if (!p.target)
		tg_probe_usage();
	tg_target(&p, p.target);
	if (p.postfix_dir && p.no_postfix)
		tg_probe_fatal("--postfix-config and --no-postfix-config "
			       "exclude each other");
	tg_follow_route(&p);
	if (tg_dns_open(&res, p.resolver, p.timeout) < 0) {
		if (errno == EINVAL)
			tg_probe_fatal("--resolver %s: expected an IPv4 or IPv6 "
				       "address, optionally with a port: IPv4:PORT "
				       "or [IPv6]:PORT", p.resolver);
		tg_probe_fatal("cannot set up the resolver: %s",
			       strerror(errno));
	}
	tg_resolve(&p, &res);
	tg_tlsa(&p, &res);
	/* MTA-STS is the recipient domain's, for mail to its MX hosts */
	if (p.mode == TG_M_DOMAIN && !p.route.routed) {
		p.sts_asked = 1;
		tg_sts_lookup(&p.sts, &res, p.name, p.ca_file, p.timeout);
	}
	res_nclose(&res);

	ctx = tg_probe_ctx(p.ca_file);
	if (!ctx)
		tg_probe_fatal("OpenSSL: cannot make a TLS context");
	for (i = 0; i < p.nhost; i++) {
		struct tg_probe_host *h = &p.host[i];

		if (h->has_addr) {
			tg_probe_one(&p, ctx, h);
		} else {
			h->verdict = TG_V_DEFER;
			snprintf(h->verdict_s, sizeof(h->verdict_s),
				 "would be deferred: %s has no address (%s)",
				 h->name, h->no_addr);
		}
	}
	SSL_CTX_free(ctx);
	tg_sts_hosts(&p);
	tg_overall(&p);
	tg_dane_summary(&p);
	if (p.json)
		tg_print_json(&p);
	else
		tg_print_text(&p);
	return p.exit;
}
