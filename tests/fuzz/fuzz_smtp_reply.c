// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	fuzz_smtp_reply - libFuzzer target for the SMTP reply parser
 * SYNOPSIS
 *	build/fuzz/fuzz_smtp_reply [libFuzzer options] [corpus or input...]
 * DESCRIPTION
 *	The whole input is what an SMTP server writes. It goes to
 *	tg_reply_feed() (include/tg_smtp.h) in one piece, cut at one point
 *	and cut in many pieces (cut points derived from the input, the state
 *	moving between heap blocks at each cut): the events must be the same.
 *
 *	A reference classifier reads each line (the bytes before LF, less
 *	one CR before the LF; any other CR is an ordinary byte, as the MTA's
 *	client reads it):
 * .IP BAD
 *	fewer than three bytes, a non-digit among the first three, or a
 *	fourth byte other than '-' or ' '.
 * .IP "CONT, FINAL"
 *	otherwise: CONT when the fourth byte is '-', else FINAL; the code is
 *	the three digits.
 * .PP
 *	A reply is the lines since the last FINAL or BAD. At each CONT and
 *	FINAL event, r->code must be the line's code and r->starttls must
 *	say whether a line of the reply so far has STARTTLS (any case) as its
 *	first word after the separator (white space: space and tab). After
 *	an event, no other is due before the next LF.
 * DIAGNOSTICS
 *	A failed check prints the input, the line, what was expected and
 *	what the parser gave, then aborts (libFuzzer saves the input).
 */
#include "tg_smtp.h"
#include "fuzz_common.h"

#include <stdint.h>

#define MAX_IN 65536

struct rev {
	int type;
	int code;
	int starttls;
	size_t at;		/* offset of the LF */
};

struct rlist {
	size_t n;
	struct rev *v;
};

static const char *rname(int type)
{
	switch (type) {
	case TG_REPLY_NONE:
		return "NONE";
	case TG_REPLY_FINAL:
		return "FINAL";
	case TG_REPLY_CONT:
		return "CONT";
	case TG_REPLY_BAD:
		return "BAD";
	}
	return "?";
}

static int is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* Does the first word of l[from..n) spell STARTTLS? */
static int ref_starttls(const unsigned char *l, size_t from, size_t n)
{
	static const char word[] = "STARTTLS";
	size_t i = from, start, k;

	while (i < n && (l[i] == ' ' || l[i] == '\t'))
		i++;
	start = i;
	while (i < n && l[i] != ' ' && l[i] != '\t')
		i++;
	if (i - start != 8)
		return 0;
	for (k = 0; k < 8; k++) {
		unsigned char c = l[start + k];

		if (c >= 'a' && c <= 'z')
			c = c - 'a' + 'A';
		if (c != (unsigned char)word[k])
			return 0;
	}
	return 1;
}

static void ref_replies(const unsigned char *s, size_t len, struct rlist *out)
{
	size_t i = 0;
	int group_tls = 0;

	out->n = 0;
	while (i < len) {
		const unsigned char *lf = memchr(s + i, '\n', len - i);
		const unsigned char *l = s + i;
		struct rev *e = &out->v[out->n++];
		size_t j, n;

		if (!lf) {
			out->n--;
			break;
		}
		j = (size_t)(lf - s);
		n = j - i;
		if (n && l[n - 1] == '\r')
			n--;
		e->at = j;
		e->code = 0;
		e->starttls = 0;
		if (n < 3 || !is_digit(l[0]) || !is_digit(l[1]) ||
		    !is_digit(l[2]) || (n > 3 && l[3] != '-' && l[3] != ' ')) {
			e->type = TG_REPLY_BAD;
			group_tls = 0;
		} else {
			e->type = n > 3 && l[3] == '-' ? TG_REPLY_CONT :
							 TG_REPLY_FINAL;
			e->code = (l[0] - '0') * 100 + (l[1] - '0') * 10 +
				  (l[2] - '0');
			group_tls |= n > 4 && ref_starttls(l, 4, n);
			e->starttls = group_tls;
			if (e->type == TG_REPLY_FINAL)
				group_tls = 0;
		}
		i = j + 1;
	}
}

static void run(const unsigned char *s, size_t len, const size_t *cuts,
		size_t ncuts, struct rlist *out)
{
	struct tg_reply *r = malloc(sizeof(*r));
	size_t i, k = 0;

	if (!r)
		abort();
	tg_reply_init(r);
	out->n = 0;
	for (i = 0; i < len; i++) {
		int ev;

		if (k < ncuts && cuts[k] == i) {
			r = fz_move_state(r, sizeof(*r));
			k++;
		}
		ev = tg_reply_feed(r, s[i]);
		if (ev == TG_REPLY_NONE)
			continue;
		out->v[out->n].type = ev;
		out->v[out->n].code = ev == TG_REPLY_BAD ? 0 : r->code;
		out->v[out->n].starttls = ev == TG_REPLY_BAD ? 0 : !!r->starttls;
		out->v[out->n].at = i;
		out->n++;
	}
	free(r);
}

/* The line that ends at offset at, for messages. */
static const char *line_at(const unsigned char *s, size_t at)
{
	size_t b = at;

	while (b > 0 && s[b - 1] != '\n')
		b--;
	return fz_esc(s + b, at + 1 - b);
}

static void compare(const char *what, const unsigned char *s, size_t len,
		    const struct rlist *got, const struct rlist *want)
{
	size_t i;

	for (i = 0; i < got->n && i < want->n; i++) {
		const struct rev *g = &got->v[i], *w = &want->v[i];

		if (g->type != w->type || g->code != w->code ||
		    g->starttls != w->starttls || g->at != w->at)
			FUZZ_FAIL("input \"%s\": %s: event %zu at %zu is "
				  "%s %d starttls=%d, expected %s %d "
				  "starttls=%d at %zu (line \"%s\")",
				  fz_esc(s, len), what, i, g->at,
				  rname(g->type), g->code, g->starttls,
				  rname(w->type), w->code, w->starttls, w->at,
				  line_at(s, w->at < g->at ? w->at : g->at));
	}
	FUZZ_CHECK(got->n == want->n,
		   "input \"%s\": %s: %zu events, expected %zu",
		   fz_esc(s, len), what, got->n, want->n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct rev v1[MAX_IN + 1], v2[MAX_IN + 1], v3[MAX_IN + 1];
	static size_t cuts[MAX_IN];
	struct rlist one = { 0, v1 }, split = { 0, v2 }, ref = { 0, v3 };
	size_t len = size > MAX_IN ? MAX_IN : size, nc;
	int many;

	run(data, len, NULL, 0, &one);
	ref_replies(data, len, &ref);
	compare("reference", data, len, &one, &ref);
	for (many = 0; many < 2; many++) {
		nc = fz_cuts(data, len, 0, many, cuts, FZ_NELEM(cuts));
		run(data, len, cuts, nc, &split);
		compare(many ? "cut in many pieces" : "cut in two", data, len,
			&split, &one);
	}
	return 0;
}
