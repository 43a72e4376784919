// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	test_skip - the command parser's fast paths agree with feeding every
 *	byte
 * SYNOPSIS
 *	build/tests/test_skip
 * DESCRIPTION
 *	The BPF scanners pass over the middle of DATA body lines a word at a
 *	time, where tg_body_quiet8() says that feeding the eight bytes to
 *	tg_cmd_feed() in TG_BODY_MID would change nothing, and over BDAT
 *	chunk bytes by counting them down. This test runs both ways over
 *	the same streams, as the scanners do (a word is skipped only at a
 *	position that is a multiple of 8 and only in TG_BODY_MID), and checks
 *	that the events and the final parser state are the same.
 *
 *	It also checks tg_body_quiet() against tg_cmd_feed() for every byte,
 *	and tg_body_quiet8() against tg_body_quiet() for every position of
 *	every byte in a word.
 * DIAGNOSTICS
 *	One line per failed check on stderr; "N passed, M failed" on stdout.
 */
#include <stdlib.h>

#include "tg_smtp.h"
#include "tg_test.h"

#define EV_MAX	64

struct run {
	int ev[EV_MAX];
	int n;
	struct tg_cmd p;
};

static void note(struct run *r, int ev)
{
	if (ev != TG_CMD_NONE && r->n < EV_MAX)
		r->ev[r->n++] = ev;
}

/* Every byte fed. */
static void run_slow(struct run *r, const unsigned char *b, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		note(r, tg_cmd_feed(&r->p, b[i]));
		if (r->p.mode == TG_MODE_CMD && r->p.verb == TG_VERB_DATA &&
		    r->p.line_len == 0 && r->n && r->ev[r->n - 1] == TG_CMD_LINE)
			tg_cmd_start_body(&r->p);
	}
}

/* As the BPF scanners do: chunks counted down, quiet body words skipped. */
static void run_fast(struct run *r, const unsigned char *b, size_t len)
{
	size_t i = 0;
	__u64 w;

	while (i < len) {
		if (r->p.mode == TG_MODE_CHUNK && r->p.chunk_left > 1) {
			__u64 n = r->p.chunk_left - 1;

			if (n > len - i)
				n = len - i;
			r->p.chunk_left -= n;
			i += n;
			continue;
		}
		if (r->p.mode == TG_MODE_BODY &&
		    (r->p.body & ~TG_BODY_BARE) == TG_BODY_MID &&
		    !(i & 7) && i + 8 <= len) {
			memcpy(&w, b + i, 8);
			if (tg_body_quiet8(w)) {
				i += 8;
				continue;
			}
		}
		note(r, tg_cmd_feed(&r->p, b[i]));
		if (r->p.mode == TG_MODE_CMD && r->p.verb == TG_VERB_DATA &&
		    r->p.line_len == 0 && r->n && r->ev[r->n - 1] == TG_CMD_LINE)
			tg_cmd_start_body(&r->p);
		i++;
	}
}

static void compare(const char *what, const unsigned char *b, size_t len)
{
	struct run a = { 0 }, f = { 0 };
	int k;

	tg_cmd_init(&a.p);
	tg_cmd_init(&f.p);
	run_slow(&a, b, len);
	run_fast(&f, b, len);
	CHECK(a.n == f.n, "%s: %d events fed byte by byte, %d skipping", what,
	      a.n, f.n);
	for (k = 0; k < a.n && k < f.n; k++)
		CHECK(a.ev[k] == f.ev[k], "%s: event %d: %d vs %d", what, k,
		      a.ev[k], f.ev[k]);
	CHECK(memcmp(&a.p, &f.p, sizeof(a.p)) == 0,
	      "%s: parser state differs at the end", what);
}

static void test_quiet(void)
{
	struct tg_cmd p;
	unsigned c, pos;
	__u64 w;
	int ev;

	tg_case("tg_body_quiet agrees with tg_cmd_feed for every byte");
	for (c = 0; c < 256; c++) {
		tg_cmd_init(&p);
		tg_cmd_start_body(&p);
		p.body = TG_BODY_MID;
		ev = tg_cmd_feed(&p, (unsigned char)c);
		CHECK(tg_body_quiet((unsigned char)c) ==
			      (ev == TG_CMD_NONE && p.mode == TG_MODE_BODY &&
			       p.body == TG_BODY_MID),
		      "byte 0x%02x", c);
		/* the same after a bare LF (the line's flag kept) */
		tg_cmd_init(&p);
		tg_cmd_start_body(&p);
		p.body = TG_BODY_MID | TG_BODY_BARE;
		ev = tg_cmd_feed(&p, (unsigned char)c);
		CHECK(tg_body_quiet((unsigned char)c) ==
			      (ev == TG_CMD_NONE && p.mode == TG_MODE_BODY &&
			       p.body == (TG_BODY_MID | TG_BODY_BARE)),
		      "byte 0x%02x after a bare LF", c);
	}
	tg_case("tg_body_quiet8 agrees with tg_body_quiet at every position");
	for (c = 0; c < 256; c++) {
		for (pos = 0; pos < 8; pos++) {
			w = 0x6161616161616161ULL;	/* "aaaaaaaa" */
			w &= ~(0xffULL << (8 * pos));
			w |= (__u64)c << (8 * pos);
			CHECK(tg_body_quiet8(w) == tg_body_quiet((unsigned char)c),
			      "byte 0x%02x at %u", c, pos);
		}
	}
}

static const char *const streams[] = {
	"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"
	"Subject: a long enough line to have whole quiet words in it\r\n"
	"\r\n..dot stuffed line, and more text after it to skip\r\n"
	"a line\rwith a bare CR in its middle, then more words\r\n"
	"a line\nwith a bare LF in its middle, then more words\r\n"
	".\r\nMAIL FROM:<e@f>\r\nQUIT\r\n",
	"EHLO a\r\nBDAT 40\r\n0123456789012345678901234567890123456789"
	"BDAT 9 LAST\r\nMAIL FROM\r\nMAIL FROM:<g@h>\r\n",
	"DATA\r\n.\r\nDATA\r\nx\r\n.\r\n",
};

static void test_streams(void)
{
	size_t i, k, len;
	unsigned char buf[2048];

	for (i = 0; i < TG_NELEM(streams); i++) {
		tg_case("stream %zu: byte by byte and skipping agree", i);
		compare("as written", (const unsigned char *)streams[i],
			strlen(streams[i]));
		/* every alignment of the stream against the words */
		for (k = 1; k < 8; k++) {
			len = strlen(streams[i]);
			memset(buf, 'x', k);
			buf[k - 1] = '\n';
			memcpy(buf + k, streams[i], len);
			compare("shifted", buf, len + k);
		}
	}
	tg_case("random bodies: byte by byte and skipping agree");
	srandom(7);
	for (i = 0; i < 2000; i++) {
		static const char alpha[] = "ab.\r\n \tMAIL FROM:<x@y>BDAT 9";

		len = 8 + (size_t)random() % (sizeof(buf) - 64);
		memcpy(buf, "DATA\r\n", 6);
		for (k = 6; k < len; k++)
			buf[k] = (random() % 4) ?
				 'a' + random() % 26 :
				 (unsigned char)alpha[random() %
						      (sizeof(alpha) - 1)];
		compare("random", buf, len);
	}
}

int main(void)
{
	test_quiet();
	test_streams();
	return tg_test_done();
}
