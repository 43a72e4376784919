// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	test_skip - the command parser's fast paths agree with feeding every
 *	byte
 * SYNOPSIS
 *	build/tests/test_skip
 * DESCRIPTION
 *	The BPF scanners take the words of a DATA body in which no line
 *	starts with "." up to eight at a time (tg_body_words(), which sets
 *	the body's state from them), and pass over BDAT chunk bytes by
 *	counting them down. This test runs both ways over the same streams,
 *	as the scanners do (words are taken only at a position that is a
 *	multiple of 8, at most 8 of them, the next one then fed byte by
 *	byte), and checks that the events and the final parser state are
 *	the same.
 *
 *	It also checks tg_bytes_eq8() for every byte value at every position
 *	of a word among every other, and tg_body_words() against
 *	tg_cmd_feed() over random words of the bytes that matter to a body
 *	(LF, CR, ".", NUL, others) from each state it takes.
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

/* As the BPF scanners do: chunks counted down, body words taken at once. */
static void run_fast(struct run *r, const unsigned char *b, size_t len)
{
	size_t i = 0;
	__u32 k;

	while (i < len) {
		if (r->p.mode == TG_MODE_CHUNK && r->p.chunk_left > 1) {
			__u64 n = r->p.chunk_left - 1;

			if (n > len - i)
				n = len - i;
			r->p.chunk_left -= n;
			i += n;
			continue;
		}
		if (r->p.mode == TG_MODE_BODY && !(i & 7)) {
			k = tg_body_words(&r->p, b + i, (__u32)((len - i) / 8));
			i += 8 * k;
			/* the next word byte by byte, as tg_body_bytes() */
			for (k = 0; k < 8 && i < len; k++, i++) {
				note(r, tg_cmd_feed(&r->p, b[i]));
				if (r->p.mode != TG_MODE_BODY) {
					i++;
					break;
				}
			}
			continue;
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

static void test_eq8(void)
{
	static const unsigned char others[] = { 0, 1, 0x7f, 0x80, 0xff, '\n',
						'\r', '.', 'a' };
	unsigned c, pos, o;
	__u64 w, m;

	tg_case("tg_bytes_eq8 marks exactly the bytes equal to c");
	for (c = 0; c < 256; c++) {
		for (o = 0; o < sizeof(others); o++) {
			for (pos = 0; pos < 8; pos++) {
				w = TG_ONES8 * others[o];
				w &= ~(0xffULL << (8 * pos));
				w |= (__u64)c << (8 * pos);
				m = tg_bytes_eq8(w, (unsigned char)c);
				if (others[o] == c)
					CHECK(m == TG_HIGH8, "0x%02x among 0x%02x",
					      c, others[o]);
				else
					CHECK(m == 0x80ULL << (8 * pos),
					      "0x%02x at %u among 0x%02x", c, pos,
					      others[o]);
			}
		}
	}
}

/* tg_body_words() over n words at b, from state st, against every byte fed. */
static void check_words(const unsigned char *b, __u32 nw, __u8 st)
{
	struct tg_cmd slow, fast;
	__u32 k, j;
	int ev = TG_CMD_NONE;

	tg_cmd_init(&slow);
	tg_cmd_start_body(&slow);
	slow.body = st;
	fast = slow;
	k = tg_body_words(&fast, b, nw);
	CHECK(k <= nw, "took %u of %u words", k, nw);
	for (j = 0; j < 8 * k && ev == TG_CMD_NONE; j++)
		ev = tg_cmd_feed(&slow, b[j]);
	CHECK(ev == TG_CMD_NONE, "an event (%d) in words taken at once", ev);
	CHECK(memcmp(&slow, &fast, sizeof(slow)) == 0,
	      "state 0x%02x, %u words: body 0x%02x at once, 0x%02x fed", st, k,
	      fast.body, slow.body);
	/* the word it stopped at has a line that starts with "." */
	if (k < nw) {
		int dot = 0;

		for (j = 8 * k; j < 8 * k + 8; j++)
			if (b[j] == '.' &&
			    (j == 0 ? (st & ~TG_BODY_BARE) == TG_BODY_SOL :
				      b[j - 1] == '\n'))
				dot = 1;
		CHECK(dot || (k == 0 && (st & ~TG_BODY_BARE) != TG_BODY_MID &&
			      (st & ~TG_BODY_BARE) != TG_BODY_MIDCR &&
			      (st & ~TG_BODY_BARE) != TG_BODY_SOL),
		      "stopped at word %u of %u with no line starting with \".\"",
		      k, nw);
	}
}

static void test_words(void)
{
	static const unsigned char alpha[] = { '\n', '\r', '.', 0, 'a', ' ' };
	static const __u8 states[] = { TG_BODY_MID, TG_BODY_MIDCR, TG_BODY_SOL,
				       TG_BODY_DOT, TG_BODY_DOTCR };
	unsigned char b[64];
	size_t i, j, s, bare;

	tg_case("tg_body_words agrees with tg_cmd_feed on random words");
	srandom(11);
	for (i = 0; i < 200000; i++) {
		/* mostly text, so that runs of words get taken */
		int rare = 2 + (int)(i % 30);

		for (j = 0; j < sizeof(b); j++)
			b[j] = random() % rare ? 'a' + random() % 26 :
			       alpha[random() % sizeof(alpha)];
		s = i % sizeof(states);
		bare = (i / sizeof(states)) % 2 ? TG_BODY_BARE : 0;
		check_words(b, 1 + (__u32)(random() % 8), states[s] | bare);
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
	test_eq8();
	test_words();
	test_streams();
	return tg_test_done();
}
