/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_mxconn - find a domain's MX hosts and open STARTTLS to one
 * SYNOPSIS
 *	#include "tg_mxconn.h"
 *
 *	int	tg_dns_open(struct __res_state *res, const char *resolver,
 *			    int timeout);
 *	int	tg_dns_query(struct __res_state *res, const char *name,
 *			     int type, unsigned char *ans, int len,
 *			     struct tg_dns_answer *a);
 *	int	tg_dns_mx(struct __res_state *res, const char *domain,
 *			  struct tg_mx_name *out, int max,
 *			  struct tg_dns_answer *a);
 *	int	tg_dns_addrs(struct __res_state *res, const char *name,
 *			     struct tg_addr *out, int n, int max,
 *			     struct tg_dns_answer *a);
 *	int	tg_dns_tlsa(struct __res_state *res, const char *host,
 *			    unsigned port, struct tg_dns_answer *a);
 *	int	tg_dns_tlsa_rrs(struct __res_state *res, const char *host,
 *				unsigned port, struct tg_tlsa *out, int max,
 *				struct tg_dns_answer *a);
 *
 *	int	tg_starttls_open(struct tg_starttls *st, SSL_CTX *ctx,
 *				 const struct tg_addr *addr, unsigned port,
 *				 const char *sni, int timeout);
 *	int	tg_starttls_open_prep(struct tg_starttls *st, SSL_CTX *ctx,
 *				      const struct tg_addr *addr,
 *				      unsigned port, const char *sni,
 *				      int timeout,
 *				      int (*prep)(SSL *ssl, void *arg),
 *				      void *arg);
 *	void	tg_starttls_close(struct tg_starttls *st);
 *	const char *tg_addr_str(const struct tg_addr *a, char *buf,
 *				size_t len);
 * DESCRIPTION
 *	What tlsguardd's MX check (tg_mx) and tlsguardctl's probe both do:
 *	ask DNS for a domain's MX hosts and their addresses with the libc
 *	resolver, and take an SMTP session through EHLO and STARTTLS into
 *	an OpenSSL handshake.
 *
 *	tg_dns_open() readies a resolver state of its own. resolver is the
 *	server to ask, "IPv4", "IPv4:PORT", "IPv6", "[IPv6]" or
 *	"[IPv6]:PORT" (port 53 unless given), or NULL or "" for those of
 *	/etc/resolv.conf; each query is sent once and waits at most
 *	timeout seconds (as tg_mx always did). The state asks for the AD
 *	bit and keeps it in answers (RES_TRUSTAD): only a validating
 *	resolver one trusts should be named, as for any DANE client.
 *
 *	tg_dns_query() sends one question and parses the answer's header
 *	into a: rcode (ns_r_*, or -1 when no answer came), ad (the DNSSEC
 *	AD bit) and count (answer records of type). It returns the length
 *	of the answer, or -1 when none came.
 *
 *	tg_dns_mx() stores the MX hosts of domain, best preference first
 *	(at most max); tg_dns_addrs() appends the A and then AAAA addresses
 *	of name to out[n..max) and returns the new count (a->ad is set
 *	only when both answers had the AD bit); tg_dns_tlsa()
 *	returns the number of TLSA records at _PORT._tcp.HOST, and
 *	tg_dns_tlsa_rrs() stores up to max of them in out (data longer
 *	than TG_TLSA_DATA is cut and marked truncated) and returns how
 *	many it stored. Each leaves the answer to its (first) question in
 *	a, when a is not NULL.
 *
 *	tg_starttls_open() connects to addr:port, reads the greeting,
 *	sends EHLO, and, when STARTTLS is offered, sends it and runs the
 *	handshake on an SSL from ctx. When sni is not NULL, it is sent as
 *	SNI and set as the name the certificate is checked against
 *	(SSL_set1_host; whether that fails the handshake is ctx's verify
 *	mode). tg_starttls_open_prep() does the same, and calls prep(ssl,
 *	arg) before the handshake when prep is not NULL (DANE records, more
 *	names); a negative return ends it at TG_ST_HANDSHAKE.
 *	Every step is bounded by timeout seconds. It returns 0 with st->ssl
 *	set when the handshake completed, else -1 with st->stage naming the
 *	step that did not, and st->err (errno), st->code and st->reply (the
 *	server's last reply) or the OpenSSL error queue saying why.
 *	tg_starttls_close() says QUIT (over TLS when there is some) and
 *	frees everything; it is safe on a failed or closed st.
 * DIAGNOSTICS
 *	tg_dns_open() returns -1 with errno EINVAL for a bad resolver
 *	value. Nothing here prints: the callers own their diagnostics.
 */
#ifndef TG_MXCONN_H
#define TG_MXCONN_H

#include <arpa/nameser.h>
#include <netinet/in.h>
#include <resolv.h>
#include <linux/types.h>
#include <openssl/ssl.h>

struct tg_addr {
	int family;		/* AF_INET or AF_INET6 */
	__u8 addr[16];
};

struct tg_mx_name {
	char name[NS_MAXDNAME];
	int pref;
};

struct tg_dns_answer {
	int rcode;		/* ns_r_noerror, ns_r_nxdomain, ...; -1: none */
	int ad;			/* the resolver says it validated the answer */
	int count;		/* answer records of the type asked */
};

#define TG_TLSA_DATA	2048	/* a full certificate (matching type 0) */

struct tg_tlsa {
	__u8 usage, selector, mtype;	/* RFC 6698 2.1 */
	int truncated;			/* data longer than TG_TLSA_DATA */
	unsigned len;
	__u8 data[TG_TLSA_DATA];
};

enum tg_starttls_stage {
	TG_ST_CONNECT,		/* socket or connect failed */
	TG_ST_GREETING,		/* no 220 greeting */
	TG_ST_EHLO,		/* no 250 to EHLO */
	TG_ST_NOT_OFFERED,	/* EHLO reply did not list STARTTLS */
	TG_ST_STARTTLS,		/* no 220 to STARTTLS */
	TG_ST_HANDSHAKE,	/* SSL_connect failed */
	TG_ST_DONE,		/* TLS is up */
};

#define TG_SMTP_REPLY	8192

struct tg_starttls {
	enum tg_starttls_stage stage;
	int fd;
	SSL *ssl;
	int err;		/* errno of the failed step, 0 if none */
	int code;		/* the last reply's code, -1 if none */
	int offered;		/* EHLO reply listed STARTTLS */
	char greeting[256];	/* first line of the 220 greeting */
	char reply[TG_SMTP_REPLY];	/* the last reply, all its lines */
};

int tg_dns_open(struct __res_state *res, const char *resolver, int timeout);
int tg_dns_query(struct __res_state *res, const char *name, int type,
		 unsigned char *ans, int len, struct tg_dns_answer *a);
int tg_dns_mx(struct __res_state *res, const char *domain,
	      struct tg_mx_name *out, int max, struct tg_dns_answer *a);
int tg_dns_addrs(struct __res_state *res, const char *name,
		 struct tg_addr *out, int n, int max, struct tg_dns_answer *a);
int tg_dns_tlsa(struct __res_state *res, const char *host, unsigned port,
		struct tg_dns_answer *a);
int tg_dns_tlsa_rrs(struct __res_state *res, const char *host, unsigned port,
		    struct tg_tlsa *out, int max, struct tg_dns_answer *a);

int tg_starttls_open(struct tg_starttls *st, SSL_CTX *ctx,
		     const struct tg_addr *addr, unsigned port,
		     const char *sni, int timeout);
int tg_starttls_open_prep(struct tg_starttls *st, SSL_CTX *ctx,
			  const struct tg_addr *addr, unsigned port,
			  const char *sni, int timeout,
			  int (*prep)(SSL *ssl, void *arg), void *arg);
void tg_starttls_close(struct tg_starttls *st);
const char *tg_addr_str(const struct tg_addr *a, char *buf, size_t len);

#endif /* TG_MXCONN_H */
