// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	test_tls - table-driven tests of the TLS ServerHello parser and the
 *	client record framer (include/tg_tls.h)
 * DESCRIPTION
 *	The ServerHello cases are real: the first flight of OpenSSL servers
 *	pinned to TLS 1.0, 1.1, 1.2 and 1.3, captured by
 *	tests/e2e/suites/tls_selftest.py into tests/unit/data/. Each is parsed
 *	whole, byte by byte and split at every offset (the state is copied
 *	between pieces, as the kernel keeps it in a map); each is then
 *	mutated into the malformed flights a hostile host could send, which
 *	must never be taken for TLS 1.2 or higher.
 */
#include <stdlib.h>

#include "tg_tls.h"
#include "tg_test.h"

#ifndef TG_TEST_DATA
#define TG_TEST_DATA "tests/unit/data"
#endif

struct capture {
	const char *file;
	__u16 version;
	__u16 cipher;
	unsigned char buf[4096];
	size_t len;
};

static struct capture captures[] = {
	{ .file = "serverhello_tls10.hex", .version = TG_TLS_1_0 },
	{ .file = "serverhello_tls11.hex", .version = TG_TLS_1_1 },
	{ .file = "serverhello_tls12.hex", .version = TG_TLS_1_2 },
	{ .file = "serverhello_tls13.hex", .version = TG_TLS_1_3 },
};

/* Hex, after a '#' comment line; the cipher id is read from the comment. */
static int load(struct capture *c)
{
	char path[512], line[1024];
	unsigned v;
	FILE *fp;
	char *p;

	snprintf(path, sizeof(path), "%s/%s", TG_TEST_DATA, c->file);
	fp = fopen(path, "r");
	if (!fp)
		return -1;
	c->len = 0;
	while (fgets(line, sizeof(line), fp)) {
		if (line[0] == '#') {
			p = strstr(line, "(suite 0x");
			if (p)
				c->cipher = (__u16)strtoul(p + 9, NULL, 16);
			continue;
		}
		for (p = line; sscanf(p, "%2x", &v) == 1 &&
			       c->len < sizeof(c->buf); p += 2)
			c->buf[c->len++] = (unsigned char)v;
	}
	fclose(fp);
	return c->len ? 0 : -1;
}

/* The event of a flight fed in two pieces, split at cut. */
static int feed(const unsigned char *b, size_t n, size_t cut,
		struct tg_tls *out)
{
	struct tg_tls t, copy;
	int ev = TG_TLS_NONE, e;
	size_t i;

	tg_tls_init(&t);
	for (i = 0; i < n; i++) {
		if (i == cut) {
			copy = t;
			t = copy;
		}
		e = tg_tls_feed(&t, b[i]);
		if (e != TG_TLS_NONE && ev == TG_TLS_NONE)
			ev = e;
	}
	*out = t;
	return ev;
}

static void test_captures(void)
{
	struct tg_tls t;
	size_t i, cut;
	int ev;

	for (i = 0; i < TG_NELEM(captures); i++) {
		struct capture *c = &captures[i];

		tg_case("capture %s", c->file);
		CHECK(load(c) == 0, "cannot read %s/%s", TG_TEST_DATA, c->file);
		if (!c->len)
			continue;
		ev = feed(c->buf, c->len, 0, &t);
		CHECK_EQ(ev, TG_TLS_VERSION);
		CHECK_EQ(t.version, c->version);
		CHECK(c->cipher && t.cipher == c->cipher,
		      "cipher 0x%04x, capture says 0x%04x", t.cipher,
		      c->cipher);
		for (cut = 1; cut < c->len; cut++) {
			ev = feed(c->buf, c->len, cut, &t);
			CHECK(ev == TG_TLS_VERSION && t.version == c->version,
			      "split at %zu: event %d version 0x%04x", cut, ev,
			      t.version);
		}
		/* one byte short: no verdict yet */
		ev = feed(c->buf, c->len - 1, 0, &t);
		CHECK_EQ(ev, TG_TLS_NONE);
	}
}

/* Offsets inside a single-record ServerHello flight. */
#define REC_LEN		3	/* record length, 2 bytes */
#define HS_LEN		6	/* handshake length, 3 bytes */
#define LEGACY		9	/* legacy_version */
#define SID_LEN		43	/* 5 + 4 + 2 + 32 */

static size_t ext_block(const struct capture *c)
{
	size_t sid = c->buf[SID_LEN];

	return SID_LEN + 1 + sid + 2 + 1;	/* offset of the extensions length */
}

static void put16(unsigned char *p, unsigned v)
{
	p[0] = (unsigned char)(v >> 8);
	p[1] = (unsigned char)v;
}

/* Find extension type in the capture's block; offset of its type or 0. */
static size_t find_ext(const struct capture *c, unsigned type)
{
	size_t p = ext_block(c), end;

	if (p + 2 > c->len)
		return 0;
	end = p + 2 + (size_t)(c->buf[p] << 8 | c->buf[p + 1]);
	for (p += 2; p + 4 <= end && p + 4 <= c->len;) {
		unsigned t = (unsigned)(c->buf[p] << 8 | c->buf[p + 1]);
		size_t l = (size_t)(c->buf[p + 2] << 8 | c->buf[p + 3]);

		if (t == type)
			return p;
		p += 4 + l;
	}
	return 0;
}

static void test_hostile(void)
{
	struct capture *c13 = &captures[3], *c12 = &captures[2];
	struct capture m;
	struct tg_tls t;
	size_t sv, e;
	int ev;

	if (!c13->len || !c12->len)
		return;

	tg_case("TLS 1.3 claimed in legacy_version only");
	m = *c12;
	put16(m.buf + LEGACY, TG_TLS_1_3);
	ev = feed(m.buf, m.len, 0, &t);
	CHECK(ev == TG_TLS_BAD, "event %d version 0x%04x", ev, t.version);

	tg_case("supported_versions selects TLS 1.2");
	m = *c13;
	sv = find_ext(&m, TG_TLS_EXT_SUPPORTED_VERSIONS);
	CHECK(sv != 0, "no supported_versions in the TLS 1.3 capture");
	if (sv) {
		put16(m.buf + sv + 4, TG_TLS_1_2);
		ev = feed(m.buf, m.len, 0, &t);
		CHECK(ev == TG_TLS_BAD, "event %d version 0x%04x", ev,
		      t.version);
	}

	tg_case("supported_versions of three bytes");
	m = *c13;
	sv = find_ext(&m, TG_TLS_EXT_SUPPORTED_VERSIONS);
	if (sv) {
		put16(m.buf + sv + 2, 3);
		ev = feed(m.buf, m.len, 0, &t);
		CHECK(ev != TG_TLS_VERSION || t.version < TG_TLS_1_2,
		      "event %d version 0x%04x", ev, t.version);
	}

	tg_case("extensions block longer than the message");
	m = *c13;
	e = ext_block(&m);
	put16(m.buf + e, (unsigned)(m.buf[e] << 8 | m.buf[e + 1]) + 1);
	ev = feed(m.buf, m.len, 0, &t);
	CHECK_EQ(ev, TG_TLS_BAD);

	tg_case("extensions block shorter than the message");
	m = *c13;
	e = ext_block(&m);
	put16(m.buf + e, (unsigned)(m.buf[e] << 8 | m.buf[e + 1]) - 1);
	ev = feed(m.buf, m.len, 0, &t);
	CHECK_EQ(ev, TG_TLS_BAD);

	tg_case("session id longer than 32");
	m = *c12;
	m.buf[SID_LEN] = 33;
	ev = feed(m.buf, m.len, 0, &t);
	CHECK_EQ(ev, TG_TLS_BAD);

	tg_case("handshake message other than ServerHello first");
	m = *c12;
	m.buf[5] = 11;		/* Certificate */
	ev = feed(m.buf, m.len, 0, &t);
	CHECK_EQ(ev, TG_TLS_BAD);

	tg_case("application data before the ServerHello");
	m = *c12;
	m.buf[0] = TG_TLS_CT_APPDATA;
	ev = feed(m.buf, m.len, 0, &t);
	CHECK_EQ(ev, TG_TLS_BAD);

	tg_case("plaintext SMTP instead of TLS");
	ev = feed((const unsigned char *)"220 mx.test ESMTP\r\n", 19, 0, &t);
	CHECK_EQ(ev, TG_TLS_BAD);

	tg_case("handshake_failure alert");
	{
		static const unsigned char alert[] = { 21, 3, 3, 0, 2, 2, 40 };

		ev = feed(alert, sizeof(alert), 0, &t);
		CHECK_EQ(ev, TG_TLS_ALERT);
		CHECK_EQ(t.alert, 40);
	}

	tg_case("record length zero");
	m = *c12;
	put16(m.buf + REC_LEN, 0);
	ev = feed(m.buf, m.len, 0, &t);
	CHECK_EQ(ev, TG_TLS_BAD);

	tg_case("ServerHello split over two records");
	{
		unsigned char two[4200];
		size_t body = c13->len - 5, first = 20, n = 0;

		two[n++] = 22;
		two[n++] = 3;
		two[n++] = 3;
		put16(two + n, (unsigned)first);
		n += 2;
		memcpy(two + n, c13->buf + 5, first);
		n += first;
		two[n++] = 22;
		two[n++] = 3;
		two[n++] = 3;
		put16(two + n, (unsigned)(body - first));
		n += 2;
		memcpy(two + n, c13->buf + 5 + first, body - first);
		n += body - first;
		ev = feed(two, n, 0, &t);
		CHECK(ev == TG_TLS_VERSION && t.version == TG_TLS_1_3,
		      "event %d version 0x%04x", ev, t.version);
	}
	(void)HS_LEN;
}

/*
 * What may come before the ServerHello. The clients were run against a
 * real server with the bytes slipped into its first flight (OpenSSL
 * 3.0.22's client, TLS 1.2 and 1.3 enabled or 1.2 at most, as Postfix
 * and OpenSMTPD use it; GnuTLS 3.7.9's, as Exim uses it): the parser
 * must read on wherever one of them reads on, and say BAD or ALERT only
 * where all of them abort. Otherwise a server could put a TLS 1.0
 * session past the parser.
 */
enum { AT_FRONT, AT_IN_RECORD, AT_SPLIT };

static void test_first_flight(void)
{
	static const struct {
		int line;
		const char *name;
		const char *hex;	/* bytes slipped in */
		int where;		/* AT_* */
		int want;		/* TG_TLS_VERSION: the capture's */
		int alert;
	} rows[] = {
		/* OpenSSL skips HelloRequest (tls_get_message_header()) */
		{ __LINE__, "HelloRequest record", "16 03 01 00 04 00 00 00 00",
		  AT_FRONT, TG_TLS_VERSION, 0 },
		{ __LINE__, "HelloRequest in the ServerHello's record",
		  "00 00 00 00", AT_IN_RECORD, TG_TLS_VERSION, 0 },
		{ __LINE__, "two HelloRequests in one record",
		  "16 03 01 00 08 00 00 00 00 00 00 00 00", AT_FRONT,
		  TG_TLS_VERSION, 0 },
		{ __LINE__, "HelloRequest split over two records",
		  "16 03 01 00 02 00 00 16 03 01 00 02 00 00", AT_FRONT,
		  TG_TLS_VERSION, 0 },
		{ __LINE__, "HelloRequest in a record of version 03 ff",
		  "16 03 ff 00 04 00 00 00 00", AT_FRONT, TG_TLS_VERSION, 0 },
		{ __LINE__, "HelloRequest with a body",
		  "16 03 01 00 05 00 00 00 01 00", AT_FRONT, TG_TLS_BAD, 0 },
		{ __LINE__, "record of major version 2",
		  "16 02 00 00 04 00 00 00 00", AT_FRONT, TG_TLS_BAD, 0 },
		/* empty records (OpenSSL: up to 32 in a row) */
		{ __LINE__, "empty handshake record", "16 03 01 00 00", AT_FRONT,
		  TG_TLS_VERSION, 0 },
		{ __LINE__, "empty ChangeCipherSpec record", "14 03 01 00 00",
		  AT_FRONT, TG_TLS_VERSION, 0 },
		{ __LINE__, "empty handshake record inside the ServerHello",
		  "16 03 01 00 00", AT_SPLIT, TG_TLS_VERSION, 0 },
		{ __LINE__, "empty alert record", "15 03 01 00 00", AT_FRONT,
		  TG_TLS_BAD, 0 },
		{ __LINE__, "empty application data record", "17 03 01 00 00",
		  AT_FRONT, TG_TLS_BAD, 0 },
		{ __LINE__, "ChangeCipherSpec", "14 03 01 00 01 01", AT_FRONT,
		  TG_TLS_BAD, 0 },
		{ __LINE__, "application data", "17 03 03 00 01 00", AT_FRONT,
		  TG_TLS_BAD, 0 },
		{ __LINE__, "record type 24", "18 03 03 00 01 00", AT_FRONT,
		  TG_TLS_BAD, 0 },
		/* warning alerts: OpenSSL skips them, up to four in a row */
		{ __LINE__, "warning handshake_failure", "15 03 01 00 02 01 28",
		  AT_FRONT, TG_TLS_VERSION, 0 },
		{ __LINE__, "warning unrecognized_name", "15 03 01 00 02 01 70",
		  AT_FRONT, TG_TLS_VERSION, 0 },
		{ __LINE__, "warning user_canceled", "15 03 01 00 02 01 5a",
		  AT_FRONT, TG_TLS_VERSION, 0 },
		{ __LINE__, "warning alert inside the ServerHello",
		  "15 03 01 00 02 01 28", AT_SPLIT, TG_TLS_VERSION, 0 },
		/* GnuTLS (read on, not Exim) takes an unknown level as warning */
		{ __LINE__, "alert of level 3", "15 03 01 00 02 03 28", AT_FRONT,
		  TG_TLS_VERSION, 0 },
		{ __LINE__, "alert of three bytes", "15 03 01 00 03 01 28 00",
		  AT_FRONT, TG_TLS_VERSION, 0 },
		/* what every client aborts on */
		{ __LINE__, "warning close_notify", "15 03 01 00 02 01 00",
		  AT_FRONT, TG_TLS_ALERT, 0 },
		{ __LINE__, "fatal user_canceled", "15 03 01 00 02 02 5a",
		  AT_FRONT, TG_TLS_ALERT, 90 },
		{ __LINE__, "fatal alert of three bytes", "15 03 01 00 03 02 28 00",
		  AT_FRONT, TG_TLS_ALERT, 40 },
		{ __LINE__, "alert of one byte", "15 03 01 00 01 01", AT_FRONT,
		  TG_TLS_BAD, 0 },
		{ __LINE__, "alert split over two records",
		  "15 03 01 00 01 01 15 03 01 00 01 28", AT_FRONT, TG_TLS_BAD, 0 },
		{ __LINE__, "SSLv2 record", "80 03 00 00 00", AT_FRONT, TG_TLS_BAD,
		  0 },
	};
	struct capture *c10 = &captures[0];
	static unsigned char in[8192];
	unsigned char x[256];
	struct tg_tls t;
	size_t i, n, k, rl, cut;
	unsigned v;
	const char *h;
	int ev, bad;

	if (!c10->len)
		return;
	for (i = 0; i < TG_NELEM(rows); i++) {
		tg_case("first flight: %s, then a TLS 1.0 ServerHello",
			rows[i].name);
		for (k = 0, h = rows[i].hex; sscanf(h, "%2x", &v) == 1;
		     h += h[2] ? 3 : 2)
			x[k++] = (unsigned char)v;
		rl = (size_t)(c10->buf[3] << 8 | c10->buf[4]);
		n = 0;
		switch (rows[i].where) {
		case AT_FRONT:
			memcpy(in, x, k);
			memcpy(in + k, c10->buf, c10->len);
			n = k + c10->len;
			break;
		case AT_IN_RECORD:
			memcpy(in, c10->buf, 5);
			put16(in + 3, (unsigned)(rl + k));
			memcpy(in + 5, x, k);
			memcpy(in + 5 + k, c10->buf + 5, c10->len - 5);
			n = k + c10->len;
			break;
		case AT_SPLIT:
			cut = 20;
			memcpy(in, c10->buf, 5 + cut);
			put16(in + 3, (unsigned)cut);
			n = 5 + cut;
			memcpy(in + n, x, k);
			n += k;
			memcpy(in + n, c10->buf, 3);
			put16(in + n + 3, (unsigned)(rl - cut));
			n += 5;
			memcpy(in + n, c10->buf + 5 + cut, c10->len - 5 - cut);
			n += c10->len - 5 - cut;
			break;
		}
		ev = feed(in, n, 0, &t);
		if (rows[i].want == TG_TLS_VERSION) {
			CHECK_AT(rows[i].line,
				 ev == TG_TLS_VERSION && t.version == TG_TLS_1_0,
				 "event %d version 0x%04x, expected VERSION "
				 "0x0301", ev, t.version);
		} else {
			CHECK_AT(rows[i].line, ev == rows[i].want,
				 "event %d, expected %d", ev, rows[i].want);
			if (ev == TG_TLS_ALERT)
				CHECK_EQ_AT(rows[i].line, t.alert,
					    rows[i].alert);
		}
		for (cut = 1, bad = 0; cut < n && !bad; cut++) {
			struct tg_tls u;

			bad = feed(in, n, cut, &u) != ev || u.version != t.version;
			CHECK_AT(rows[i].line, !bad, "split at %zu: another event",
				 cut);
		}
	}
}

static void test_client(void)
{
	static const struct {
		int line;
		const char *name;
		const char *bytes;
		size_t len;
		long bad_at;	/* -1: all TLS */
	} rows[] = {
		{ __LINE__, "ClientHello record header", "\x16\x03\x01\x00\x02\x01\x00", 7, -1 },
		{ __LINE__, "two records", "\x16\x03\x03\x00\x01\x00\x17\x03\x03\x00\x01\x00", 12, -1 },
		{ __LINE__, "plaintext EHLO", "EHLO x\r\n", 8, 0 },
		{ __LINE__, "MAIL after a record", "\x15\x03\x03\x00\x02\x02\x28MAIL FROM:<a@b>\r\n", 24, 7 },
		{ __LINE__, "bad major version", "\x16\x02\x00\x00\x01\x00", 6, 1 },
		{ __LINE__, "record length zero", "\x17\x03\x03\x00\x00", 5, 4 },
	};
	struct tg_tls_client r;
	size_t i, j;
	long bad;

	for (i = 0; i < TG_NELEM(rows); i++) {
		tg_case("client: %s", rows[i].name);
		memset(&r, 0, sizeof(r));
		bad = -1;
		for (j = 0; j < rows[i].len; j++)
			if (tg_tls_client_feed(&r, (unsigned char)rows[i].bytes[j]) ==
			    TG_TLS_BAD) {
				bad = (long)j;
				break;
			}
		CHECK_AT(rows[i].line, bad == rows[i].bad_at,
			 "first non-TLS byte at %ld, want %ld", bad,
			 rows[i].bad_at);
	}
}

int main(void)
{
	test_captures();
	test_hostile();
	test_first_flight();
	test_client();
	return tg_test_done();
}
