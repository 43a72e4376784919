// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	test_smtp - unit tests of the SMTP command and reply parsers
 * SYNOPSIS
 *	build/tests/test_smtp
 * DESCRIPTION
 *	Runs the parsers of include/tg_smtp.h, the very code the BPF
 *	programs run, over whole client and server streams, and checks the
 *	events they return against the contract in the header comment.
 *
 *	Each command stream is fed once in one piece, then again byte by
 *	byte, split in two at every offset, and cut at pseudo-random offsets,
 *	with the parser state copied between pieces as the BPF programs keep
 *	it in a map: every run must give the same events. A client stream is
 *	driven as tlsguard drives it: tg_cmd_start_body() follows a DATA
 *	line at once, as if the server had accepted it (354).
 *
 *	Expected events are written as a list separated by '|':
 * .IP VERB
 *	TG_CMD_LINE with that verb ("EHLO"); "-" for an empty line, "*" for a
 *	verb longer than eight characters.
 * .IP "mail ADDR"
 *	TG_CMD_MAIL whose addr_key and domain_key are those of ADDR, written
 *	normalized (lower case, no +extension, no source route): they must
 *	equal tg_addr_key(ADDR) and an FNV-1a computed here independently.
 * .IP "null, bad, end, chunk"
 *	TG_CMD_MAIL_NULL, TG_CMD_MAIL_BAD, TG_CMD_BODY_END, TG_CMD_CHUNK_END.
 * .IP "amb, chunkbad"
 *	TG_CMD_BODY_AMBIGUOUS, TG_CMD_CHUNK_BAD (whatever its verb).
 * DIAGNOSTICS
 *	One line per failed check on stderr; "N passed, M failed" on stdout.
 *	The exit status is non-zero when a case failed.
 */
#include <stdlib.h>

#include "tg_smtp.h"
#include "tg_mailaddr.h"
#include "tg_test.h"

#define MAX_EVENTS 32
#define BIG 4096		/* longest generated stream */

struct ev {
	int type;
	__u64 verb;
	__u64 addr_key;
	__u64 domain_key;
};

struct evlist {
	int n;
	int overflow;
	struct ev v[MAX_EVENTS];
};

/* FNV-1a written out here, so that a bug shared by both parsers shows. */
static __u64 ref_fnv(const char *s)
{
	__u64 h = 0xcbf29ce484222325ULL;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
	return h;
}

static __u64 pack_verb(const char *s, size_t n)
{
	__u64 v = 0;
	size_t i;

	if (n > 8)
		return TG_VERB_LONG;
	for (i = 0; i < n; i++)
		v |= (__u64)(unsigned char)s[i] << (8 * i);
	return v;
}

static const char *ev_name(int type)
{
	static const char *names[] = {
		[TG_CMD_NONE] = "none",	    [TG_CMD_LINE] = "line",
		[TG_CMD_MAIL] = "mail",	    [TG_CMD_MAIL_NULL] = "null",
		[TG_CMD_MAIL_BAD] = "bad",  [TG_CMD_BODY_END] = "end",
		[TG_CMD_CHUNK_END] = "chunk",
		[TG_CMD_BODY_AMBIGUOUS] = "amb",
		[TG_CMD_CHUNK_BAD] = "chunkbad",
	};

	if (type < 0 || type >= (int)TG_NELEM(names))
		return "?";
	return names[type];
}

/* Events as text, for failure messages. */
static const char *ev_show(const struct evlist *l)
{
	static char out[2][1024];
	static unsigned next;
	char *o = out[next++ % 2];
	size_t n = 0;
	int i, k;

	o[0] = 0;
	for (i = 0; i < l->n && n < sizeof(out[0]) - 80; i++) {
		const struct ev *e = &l->v[i];

		n += sprintf(o + n, "%s", i ? " | " : "");
		if (e->type != TG_CMD_LINE) {
			n += sprintf(o + n, "%s", ev_name(e->type));
			if (e->type == TG_CMD_MAIL)
				n += sprintf(o + n, " #%016llx/%016llx",
					     (unsigned long long)e->addr_key,
					     (unsigned long long)e->domain_key);
			continue;
		}
		if (e->verb == 0)
			n += sprintf(o + n, "-");
		else if (e->verb == TG_VERB_LONG)
			n += sprintf(o + n, "*");
		for (k = 0; k < 8 && e->verb != TG_VERB_LONG; k++) {
			unsigned char c = (e->verb >> (8 * k)) & 0xff;

			if (c)
				n += sprintf(o + n, c > ' ' && c < 0x7f ?
						    "%c" : "\\x%02x", c);
		}
	}
	if (l->overflow)
		sprintf(o + n, " ...(more than %d)", MAX_EVENTS);
	return o;
}

static void ev_add(struct evlist *l, int type, const struct tg_cmd *p)
{
	if (l->n == MAX_EVENTS) {
		l->overflow = 1;
		return;
	}
	l->v[l->n].type = type;
	l->v[l->n].verb = p->verb;
	l->v[l->n].addr_key = p->addr_key;
	l->v[l->n].domain_key = p->domain_key;
	l->n++;
}

/*
 * Parses an expected-event list (see DESCRIPTION). Returns 0 on a
 * mistake in the table itself, which the caller reports.
 */
static int ev_parse(const char *spec, struct evlist *l, char *why,
		    size_t whylen)
{
	const char *s = spec, *end, *tok_end;
	char addr[BIG];
	__u64 dk;

	memset(l, 0, sizeof(*l));
	while (*s) {
		struct ev *e = &l->v[l->n];
		size_t n;

		while (*s == ' ')
			s++;
		end = strchr(s, '|');
		if (!end)
			end = s + strlen(s);
		tok_end = end;
		while (tok_end > s && tok_end[-1] == ' ')
			tok_end--;
		n = (size_t)(tok_end - s);
		if (l->n == MAX_EVENTS || n == 0) {
			snprintf(why, whylen, "bad event list \"%s\"", spec);
			return 0;
		}
		memset(e, 0, sizeof(*e));
		if (n > 5 && !strncmp(s, "mail ", 5)) {
			if (n - 5 >= sizeof(addr)) {
				snprintf(why, whylen, "table: address too long");
				return 0;
			}
			memcpy(addr, s + 5, n - 5);
			addr[n - 5] = 0;
			e->type = TG_CMD_MAIL;
			e->verb = TG_VERB_MAIL;
			e->addr_key = tg_addr_key(addr, (__u32)(n - 5), &dk);
			e->domain_key = dk;
			if (e->addr_key == 0) {
				snprintf(why, whylen,
					 "table: tg_addr_key(\"%s\") is 0",
					 tg_esc(addr, n - 5));
				return 0;
			}
			if (e->addr_key != ref_fnv(addr) ||
			    e->domain_key != (strrchr(addr, '@') ?
					      ref_fnv(strrchr(addr, '@')) : 0)) {
				snprintf(why, whylen,
					 "tg_addr_key(\"%s\") differs from "
					 "FNV-1a of the normalized address",
					 tg_esc(addr, n - 5));
				return 0;
			}
		} else if (n == 4 && !strncmp(s, "null", 4)) {
			e->type = TG_CMD_MAIL_NULL;
			e->verb = TG_VERB_MAIL;
		} else if (n == 3 && !strncmp(s, "bad", 3)) {
			e->type = TG_CMD_MAIL_BAD;
			e->verb = TG_VERB_MAIL;
		} else if (n == 3 && !strncmp(s, "end", 3)) {
			e->type = TG_CMD_BODY_END;
		} else if (n == 3 && !strncmp(s, "amb", 3)) {
			e->type = TG_CMD_BODY_AMBIGUOUS;
		} else if (n == 5 && !strncmp(s, "chunk", 5)) {
			e->type = TG_CMD_CHUNK_END;
		} else if (n == 8 && !strncmp(s, "chunkbad", 8)) {
			e->type = TG_CMD_CHUNK_BAD;
			e->verb = TG_VERB_BDAT;
		} else if (n == 1 && *s == '-') {
			e->type = TG_CMD_LINE;
		} else if (n == 1 && *s == '*') {
			e->type = TG_CMD_LINE;
			e->verb = TG_VERB_LONG;
		} else {
			e->type = TG_CMD_LINE;
			e->verb = pack_verb(s, n);
		}
		l->n++;
		s = *end ? end + 1 : end;
	}
	return 1;
}

/* Does an event match what the table expects (keys only for MAIL)? */
static int ev_match(const struct ev *got, const struct ev *want)
{
	if (got->type != want->type)
		return 0;
	if (want->type == TG_CMD_CHUNK_BAD)
		return 1;	/* the verb as read may be "BDAT\v12" */
	if (got->verb != want->verb)
		return 0;
	if (want->type == TG_CMD_MAIL)
		return got->addr_key == want->addr_key &&
		       got->domain_key == want->domain_key;
	return 1;
}

static int ev_list_match(const struct evlist *got, const struct evlist *want)
{
	int i;

	if (got->overflow || got->n != want->n)
		return 0;
	for (i = 0; i < got->n; i++)
		if (!ev_match(&got->v[i], &want->v[i]))
			return 0;
	return 1;
}

/* Same events, field for field: what splitting must not change. */
static int ev_list_same(const struct evlist *a, const struct evlist *b)
{
	int i;

	if (a->n != b->n || a->overflow != b->overflow)
		return 0;
	for (i = 0; i < a->n; i++)
		if (a->v[i].type != b->v[i].type ||
		    a->v[i].verb != b->v[i].verb ||
		    a->v[i].addr_key != b->v[i].addr_key ||
		    a->v[i].domain_key != b->v[i].domain_key)
			return 0;
	return 1;
}

/*
 * Feeds bytes as tlsguard does: the body of a DATA starts right after
 * the DATA line (the test plays a server that answers 354).
 */
static void feed(struct tg_cmd *p, const unsigned char *s, size_t len,
		 struct evlist *out)
{
	size_t i;
	int ev;

	for (i = 0; i < len; i++) {
		ev = tg_cmd_feed(p, s[i]);
		if (ev == TG_CMD_NONE)
			continue;
		ev_add(out, ev, p);
		if (ev == TG_CMD_LINE && p->verb == TG_VERB_DATA)
			tg_cmd_start_body(p);
	}
}

/*
 * Feeds a stream in pieces ending at cuts[0..ncuts-1] and then at len.
 * Between pieces the state lives in another variable only, as it lives
 * in a map between two runs of a BPF program.
 */
static void feed_cut(const unsigned char *s, size_t len, const size_t *cuts,
		     size_t ncuts, struct evlist *out)
{
	struct tg_cmd p, saved;
	size_t i, at = 0, to;

	memset(out, 0, sizeof(*out));
	tg_cmd_init(&p);
	for (i = 0; i <= ncuts; i++) {
		to = i < ncuts ? cuts[i] : len;
		feed(&p, s + at, to - at, out);
		memcpy(&saved, &p, sizeof(p));
		memset(&p, 0xa5, sizeof(p));
		memcpy(&p, &saved, sizeof(p));
		at = to;
	}
}

/* Runs one stream in every way and checks the events against want. */
/* head, 'x' up to byte pad, then tail, in buf; returns the length. */
static size_t padded(char *buf, const char *head, size_t pad,
		     const char *tail)
{
	size_t n = strlen(head);

	memcpy(buf, head, n);
	memset(buf + n, 'x', pad - n);
	return pad + (size_t)sprintf(buf + pad, "%s", tail);
}

static void check_stream(int line, const void *in, size_t len,
			 const char *want_spec)
{
	const unsigned char *s = in;
	struct evlist want, got, split;
	static size_t cuts[BIG];
	char why[512] = "";
	unsigned seed = 12345;
	size_t i, k, n;

	if (!CHECK_AT(line, ev_parse(want_spec, &want, why, sizeof(why)),
		      "%s", why[0] ? why : "bad event list in the table"))
		return;
	feed_cut(s, len, NULL, 0, &got);
	CHECK_AT(line, ev_list_match(&got, &want),
		 "input \"%s\": events [%s], expected [%s]", tg_esc(s, len),
		 ev_show(&got), want_spec);

	/* Byte by byte. */
	for (i = 0; i + 1 < len; i++)
		cuts[i] = i + 1;
	feed_cut(s, len, cuts, len ? len - 1 : 0, &split);
	CHECK_AT(line, ev_list_same(&split, &got),
		 "fed byte by byte: events [%s], in one piece [%s]",
		 ev_show(&split), ev_show(&got));

	/* In two pieces, at every offset. */
	for (k = 0; k <= len; k++) {
		feed_cut(s, len, &k, 1, &split);
		if (!CHECK_AT(line, ev_list_same(&split, &got),
			      "split at %zu: events [%s], in one piece [%s]",
			      k, ev_show(&split), ev_show(&got)))
			break;
	}

	/* In pseudo-random pieces. */
	for (k = 0; k < 20 && len > 1; k++) {
		for (i = 0, n = 0; i < len; i++) {
			seed = seed * 1103515245 + 12345;
			if ((seed >> 16) % 4 == 0)
				cuts[n++] = i;
		}
		feed_cut(s, len, cuts, n, &split);
		if (!CHECK_AT(line, ev_list_same(&split, &got),
			      "cut in %zu pieces: events [%s], in one "
			      "piece [%s]",
			      n + 1, ev_show(&split), ev_show(&got)))
			break;
	}
}

/* ------------------------------------------------------------------ */

struct cmd_case {
	int line;
	const char *name;
	const char *in;
	size_t len;
	const char *want;
};

/* sizeof, not strlen: an input may hold NUL bytes. */
#define C(name, in, want) { __LINE__, name, in, sizeof(in) - 1, want }

static const struct cmd_case cmd_cases[] = {
	/* Verbs. */
	C("EHLO", "EHLO client.example\r\n", "EHLO"),
	C("verbs of a session",
	  "EHLO c\r\nNOOP\r\nRSET\r\nHELO c\r\nQUIT\r\n",
	  "EHLO | NOOP | RSET | HELO | QUIT"),
	C("STARTTLS, eight characters", "STARTTLS\r\nstarttls\r\n",
	  "STARTTLS | STARTTLS"),
	C("verb of nine characters", "STARTTLSX\r\n", "*"),
	C("empty and blank lines", "\r\n \t \r\n\n", "- | - | -"),
	C("no event before the end of the line",
	  "MAIL FROM:<alice@example.org>", ""),

	/* MAIL FROM. */
	C("MAIL FROM", "MAIL FROM:<alice@example.org>\r\n",
	  "mail alice@example.org"),
	C("lower case verb", "mail from:<alice@example.org>\r\n",
	  "mail alice@example.org"),
	C("mixed case verb", "MaIl FrOm:<alice@example.org>\r\n",
	  "mail alice@example.org"),
	C("space after the colon", "MAIL FROM: <a@b>\r\n", "mail a@b"),
	C("space before the colon", "MAIL FROM :<a@b>\r\n", "mail a@b"),
	C("tabs", "MAIL\tFROM:\t<a@b>\r\n", "mail a@b"),
	C("ESMTP parameters",
	  "MAIL FROM:<a@b> SIZE=1000 BODY=8BITMIME\r\n", "mail a@b"),
	C("bare address", "MAIL FROM:a@b\r\n", "mail a@b"),
	C("bare address and parameters", "MAIL FROM:a@b SIZE=1000\r\n",
	  "mail a@b"),
	C("two spaces after the verb", "MAIL  FROM:<a@b>\r\n", "mail a@b"),
	C("white space before the verb", "  \tMAIL FROM:<a@b>\r\n",
	  "mail a@b"),
	C("address case is folded",
	  "MAIL FROM:<Alice@Example.ORG>\r\n", "mail alice@example.org"),
	C("+extension is dropped",
	  "MAIL FROM:<alice+news@example.org>\r\n", "mail alice@example.org"),
	C("+extension, case folded",
	  "MAIL FROM:<ALICE+News@EXAMPLE.org>\r\n", "mail alice@example.org"),
	C("several + in the local part",
	  "MAIL FROM:<alice+a+b@example.org>\r\n", "mail alice@example.org"),
	C("leading + is kept", "MAIL FROM:<+alice@example.org>\r\n",
	  "mail +alice@example.org"),
	/* BATV: the signing prefix is not part of the mailbox. */
	C("BATV prvs= prefix",
	  "MAIL FROM:<prvs=0123abcdef=alice@example.org>\r\n",
	  "mail alice@example.org"),
	C("BATV PRVS= prefix, case folded, with a +extension",
	  "MAIL FROM:<PRVS=0123ABCDEF=Alice+x@Example.org>\r\n",
	  "mail alice@example.org"),
	C("BATV btv1== prefix",
	  "MAIL FROM:<btv1==0a1b2c3d4e5==alice@example.org>\r\n",
	  "mail alice@example.org"),
	C("BATV prefix in a quoted local part",
	  "MAIL FROM:<\"prvs=0123abcdef=alice\"@example.org>\r\n",
	  "mail alice@example.org"),
	C("prvs= without a second '=' is a mailbox",
	  "MAIL FROM:<prvs=alice@example.org>\r\n",
	  "mail prvs=alice@example.org"),
	C("btv1== with one '=' after the tag is a mailbox",
	  "MAIL FROM:<btv1==x=alice@example.org>\r\n",
	  "mail btv1==x=alice@example.org"),
	C("prvs= not at the start is a mailbox",
	  "MAIL FROM:<xprvs=1=alice@example.org>\r\n",
	  "mail xprvs=1=alice@example.org"),
	C("a '+' inside the BATV tag is not a delimiter",
	  "MAIL FROM:<prvs=12+34=alice@example.org>\r\n",
	  "mail alice@example.org"),
	C("+ in the domain is kept", "MAIL FROM:<a@b+c>\r\n", "mail a@b+c"),
	/* A quoted local part is the same mailbox as its unquoted form. */
	C("quoted local part", "MAIL FROM:<\"alice\"@example.org>\r\n",
	  "mail alice@example.org"),
	C("quoted local part with an escaped character",
	  "MAIL FROM:<\"al\\ice\"@example.org>\r\n",
	  "mail alice@example.org"),
	C("quoted local part with a +extension",
	  "MAIL FROM:<\"Alice+x\"@example.org>\r\n",
	  "mail alice@example.org"),
	C("source route", "MAIL FROM:<@relay.example:alice@example.org>\r\n",
	  "mail alice@example.org"),
	C("source route of two hops",
	  "MAIL FROM:<@r1.example,@r2.example:Alice+x@Example.org>\r\n",
	  "mail alice@example.org"),
	C("SMTPUTF8 address",
	  "MAIL FROM:<j\xc3\xb6ran@ex\xc3\xa4mple.org> SMTPUTF8\r\n",
	  "mail j\xc3\xb6ran@ex\xc3\xa4mple.org"),
	C("SMTPUTF8 address, ASCII case folded",
	  "MAIL FROM:<J\xc3\xb6ran@EX\xc3\xa4mple.org>\r\n",
	  "mail j\xc3\xb6ran@ex\xc3\xa4mple.org"),
	C("address without a domain", "MAIL FROM:<alice>\r\n", "mail alice"),
	C("trailing dot in the domain",
	  "MAIL FROM:<Alice@Example.ORG.>\r\n", "mail alice@example.org"),
	C("trailing dot in a bare address",
	  "MAIL FROM:alice@example.org. SIZE=10\r\n", "mail alice@example.org"),
	C("keys do not leak into the next MAIL",
	  "MAIL FROM:<alice@example.org>\r\nRSET\r\n"
	  "MAIL FROM:<bob@example.net>\r\nMAIL FROM:<x\r\n",
	  "mail alice@example.org | RSET | mail bob@example.net | bad"),

	/* Null reverse-path. */
	C("null sender", "MAIL FROM:<>\r\n", "null"),
	C("null sender and parameters", "MAIL FROM:<> SIZE=0\r\n", "null"),
	C("null sender, lower case, space", "mail from: <>\r\n", "null"),

	/* Malformed: MAIL_BAD, never a MAIL nor a LINE. */
	C("no '>'", "MAIL FROM:<a@b\r\n", "bad"),
	C("no colon", "MAIL FROM<a@b>\r\n", "bad"),
	C("TO instead of FROM", "MAIL TO:<a@b>\r\n", "bad"),
	C("two '@'", "MAIL FROM:<a@b@c>\r\n", "bad"),
	C("MAIL alone", "MAIL\r\n", "bad"),
	C("MAIL FROM: and nothing", "MAIL FROM:\r\n", "bad"),
	C("space inside brackets", "MAIL FROM:<a @b>\r\n", "bad"),
	C("'<' inside brackets", "MAIL FROM:<<a@b>>\r\n", "bad"),
	C("unterminated quote", "MAIL FROM:<\"a b@example.org>\r\n", "bad"),
	C("control byte", "MAIL FROM:<a\x01@b>\r\n", "bad"),
	C("NUL byte", "MAIL FROM:<a\0@b>\r\n", "bad"),
	C("DEL byte", "MAIL FROM:<a@b\x7f>\r\n", "bad"),
	C("user@", "MAIL FROM:<alice@>\r\n", "bad"),
	C("unterminated source route", "MAIL FROM:<@relay.example>\r\n",
	  "bad"),
	/* tg_cmd_eol(): '"user@" and "<@route:>" name nobody' */
	C("source route and no address", "MAIL FROM:<@relay.example:>\r\n",
	  "bad"),
	C("MAILX is not MAIL", "MAILX FROM:<a@b>\r\n", "MAILX"),
	C("MAIL:FROM is not MAIL", "MAIL:FROM:<a@b>\r\n", "*"),

	/* Line ends. */
	C("bare LF", "MAIL FROM:<a@b>\nRCPT TO:<c@d>\n", "mail a@b | RCPT"),
	C("pipelined MAIL, RCPT, DATA",
	  "MAIL FROM:<alice@example.org> SIZE=10\r\nRCPT TO:<bob@example.net>"
	  "\r\nRCPT TO:<carol@example.net>\r\nDATA\r\n",
	  "mail alice@example.org | RCPT | RCPT | DATA"),
	C("whole session",
	  "EHLO c.example\r\nMAIL FROM:<alice@example.org>\r\n"
	  "RCPT TO:<bob@example.net>\r\nDATA\r\nSubject: x\r\n\r\nhello\r\n"
	  ".\r\nQUIT\r\n",
	  "EHLO | mail alice@example.org | RCPT | DATA | end | QUIT"),

	/* DATA body. */
	C("commands in the body are text",
	  "DATA\r\nSubject: t\r\n\r\nMAIL FROM:<x@y>\r\nRCPT TO:<z@w>\r\n"
	  "QUIT\r\n.\r\nMAIL FROM:<a@b>\r\n",
	  "DATA | end | mail a@b"),
	C("empty body", "DATA\r\n.\r\nQUIT\r\n", "DATA | end | QUIT"),
	/*
	 * Where servers end DATA: Postfix smtpd (smtpd_forbid_bare_newline
	 * = no, the default before 3.9) at a line "." after LF, any CRs
	 * before the LF dropped; with = normalize (3.9's default) only at
	 * CRLF "." CRLF; Exim 4.96 at [CR] LF "." [CR] LF (4.97.1, strict:
	 * CRLF only); OpenSMTPD 6.8 at a line that is "." as a C string
	 * after one CR is dropped. None starts a line after a bare CR.
	 */
	C("body with bare LF", "DATA\nhello\nMAIL FROM:<x@y>\n.\nQUIT\n",
	  "DATA | amb | QUIT"),
	C("dot and bare LF after CRLF", "DATA\r\nhello\r\n.\nQUIT\r\n",
	  "DATA | amb | QUIT"),
	C("dot CRLF after a bare LF", "DATA\r\nhello\n.\r\nQUIT\r\n",
	  "DATA | amb | QUIT"),
	C("dot and two CRs", "DATA\r\nhello\r\n.\r\r\nQUIT\r\n",
	  "DATA | amb | QUIT"),
	C("dot, NUL", "DATA\r\nhello\r\n.\0x\r\nQUIT\r\n",
	  "DATA | amb | QUIT"),
	C("dot, CR, NUL is text", "DATA\r\nx\r\n.\r\0\r\nQUIT\r\n.\r\n",
	  "DATA | end"),
	C("lone dot at the start of the body", "DATA\r\n.\nQUIT\r\n",
	  "DATA | amb | QUIT"),
	C("lone dot after a bare CR", "DATA\r\nhello\r.\r\nQUIT\r\n",
	  "DATA"),
	C("lone dot after the bare CR that ends a dot line",
	  "DATA\r\nhello\r\n.\r.\r\nMAIL FROM:<alice@example.org>\r\n",
	  "DATA"),
	C("dot after bare CRs at the start of a line",
	  "DATA\r\nx\r\n\r\r.\r\nQUIT\r\n", "DATA"),
	/* Seen too early, body text became commands: a BDAT blinded it. */
	C("BDAT after a bare CR dot line is body text",
	  "MAIL FROM:<x@y>\r\nDATA\r\nx\r.\r\nBDAT 999999999999\r\n"
	  "\r\n.\r\nMAIL FROM:<alice@example.org>\r\n",
	  "mail x@y | DATA | end | mail alice@example.org"),
	C("dot-stuffed lines do not end the body",
	  "DATA\r\n..MAIL FROM:<x@y>\r\n..\r\n.x\r\n. \r\nx.\r\n.\r\nQUIT\r\n",
	  "DATA | end | QUIT"),
	C("two messages",
	  "DATA\r\na\r\n.\r\nMAIL FROM:<a@b>\r\nDATA\r\nb\r\n.\r\n",
	  "DATA | end | mail a@b | DATA | end"),

	/*
	 * BDAT. A chunk is framed only for the form Exim's client writes
	 * ("BDAT" SP size [SP "LAST"]) inside a mail transaction; any other
	 * BDAT line is TG_CMD_CHUNK_BAD, as servers frame it differently
	 * (Exim: sscanf("%u %n"), a 32-bit size, "12x" is 12 bytes; Postfix:
	 * digits only, an off_t, white space of isspace()).
	 */
	C("BDAT without LAST",
	  "MAIL FROM:<x@y>\r\nBDAT 17\r\nMAIL FROM:<x@y>\r\nBDAT 0 LAST\r\n"
	  "QUIT\r\n",
	  "mail x@y | BDAT | chunk | BDAT | QUIT"),
	C("BDAT LAST, chunk holding a MAIL line",
	  "MAIL FROM:<x@y>\r\nBDAT 17 LAST\r\nMAIL FROM:<x@y>\r\nQUIT\r\n",
	  "mail x@y | BDAT | chunk | QUIT"),
	C("BDAT LAST, chunk ending inside a line",
	  "MAIL FROM:<x@y>\r\nBDAT 10 LAST\r\n0123456789"
	  "MAIL FROM:<alice@example.org>\r\n",
	  "mail x@y | BDAT | chunk | mail alice@example.org"),
	C("bdat, lower case", "MAIL FROM:<x@y>\r\nbdat 5 last\r\nhelloRSET\r\n",
	  "mail x@y | BDAT | chunk | RSET"),
	C("two chunks",
	  "MAIL FROM:<x@y>\r\nRCPT TO:<z@w>\r\nBDAT 3\r\nabcBDAT 2 LAST\r\n"
	  "xyNOOP\r\n",
	  "mail x@y | RCPT | BDAT | chunk | BDAT | chunk | NOOP"),
	C("chunk of one byte, two spaces",
	  "MAIL FROM:<x@y>\r\nBDAT  1\r\n\nNOOP\r\n",
	  "mail x@y | BDAT | chunk | NOOP"),
	C("size with leading zeros, spaces around LAST",
	  "MAIL FROM:<x@y>\r\nBDAT 0000000003  LAST \r\nabcNOOP\r\n",
	  "mail x@y | BDAT | chunk | NOOP"),
	C("BDAT 0 LAST frames nothing", "MAIL FROM:<x@y>\r\nBDAT 0 LAST\r\n"
	  "QUIT\r\n", "mail x@y | BDAT | QUIT"),
	C("the largest chunk", "MAIL FROM:<x@y>\r\nBDAT 1073741824\r\n",
	  "mail x@y | BDAT"),
	/* Not framed: the caller cannot vouch for what follows. */
	C("BDAT x", "MAIL FROM:<x@y>\r\nBDAT x\r\nMAIL FROM:<a@b>\r\n",
	  "mail x@y | chunkbad | mail a@b"),
	C("BDAT alone", "MAIL FROM:<x@y>\r\nBDAT\r\nMAIL FROM:<a@b>\r\n",
	  "mail x@y | chunkbad | mail a@b"),
	C("BDAT 12x (Exim: a chunk of 12)",
	  "MAIL FROM:<x@y>\r\nBDAT 12x\r\nMAIL FROM:<a@b>\r\n",
	  "mail x@y | chunkbad | mail a@b"),
	C("BDAT 12LAST", "MAIL FROM:<x@y>\r\nBDAT 12LAST\r\n",
	  "mail x@y | chunkbad"),
	C("BDAT +12", "MAIL FROM:<x@y>\r\nBDAT +12\r\n", "mail x@y | chunkbad"),
	C("BDAT -1", "MAIL FROM:<x@y>\r\nBDAT -1\r\n", "mail x@y | chunkbad"),
	C("BDAT 12 LAST x", "MAIL FROM:<x@y>\r\nBDAT 12 LAST x\r\n",
	  "mail x@y | chunkbad"),
	C("BDAT 12 FOO", "MAIL FROM:<x@y>\r\nBDAT 12 FOO\r\n",
	  "mail x@y | chunkbad"),
	C("BDAT 12 LA", "MAIL FROM:<x@y>\r\nBDAT 12 LA\r\n",
	  "mail x@y | chunkbad"),
	C("tab after BDAT", "MAIL FROM:<x@y>\r\nBDAT\t12\r\n",
	  "mail x@y | chunkbad"),
	C("tab before LAST", "MAIL FROM:<x@y>\r\nBDAT 12\tLAST\r\n",
	  "mail x@y | chunkbad"),
	C("space before BDAT", "MAIL FROM:<x@y>\r\n BDAT 12\r\n",
	  "mail x@y | chunkbad"),
	C("CR inside the size", "MAIL FROM:<x@y>\r\nBDAT 1\r2\r\n",
	  "mail x@y | chunkbad"),
	C("VT after BDAT (Postfix: white space)",
	  "MAIL FROM:<x@y>\r\nBDAT\v12\r\n", "mail x@y | chunkbad"),
	C("bare CR after BDAT", "MAIL FROM:<x@y>\r\nBDAT\r 12\r\n",
	  "mail x@y | chunkbad"),
	C("eleven digits", "MAIL FROM:<x@y>\r\nBDAT 00000000012\r\n",
	  "mail x@y | chunkbad"),
	C("above the largest chunk", "MAIL FROM:<x@y>\r\nBDAT 1073741825\r\n",
	  "mail x@y | chunkbad"),
	C("huge size", "MAIL FROM:<x@y>\r\nBDAT 999999999999999999\r\n"
	  "MAIL FROM:<alice@example.org>\r\n",
	  "mail x@y | chunkbad | mail alice@example.org"),
	/* Outside a mail transaction no client writes BDAT. */
	C("BDAT without MAIL", "BDAT 3\r\nabc\r\n", "chunkbad | ABC"),
	C("BDAT after the LAST chunk",
	  "MAIL FROM:<x@y>\r\nBDAT 3 LAST\r\nabcBDAT 3\r\n",
	  "mail x@y | BDAT | chunk | chunkbad"),
	C("BDAT after BDAT 0 LAST",
	  "MAIL FROM:<x@y>\r\nBDAT 0 LAST\r\nBDAT 3\r\n",
	  "mail x@y | BDAT | chunkbad"),
	C("BDAT after RSET", "MAIL FROM:<x@y>\r\nRSET\r\nBDAT 3\r\n",
	  "mail x@y | RSET | chunkbad"),
	C("BDAT after the end of a DATA body",
	  "MAIL FROM:<x@y>\r\nDATA\r\nx\r\n.\r\nBDAT 3\r\n",
	  "mail x@y | DATA | end | chunkbad"),
	C("BDAT after EHLO", "MAIL FROM:<x@y>\r\nEHLO c\r\nBDAT 3\r\n",
	  "mail x@y | EHLO | chunkbad"),
	C("BDAT after a null sender", "MAIL FROM:<>\r\nBDAT 2 LAST\r\nabQUIT\r\n",
	  "null | BDAT | chunk | QUIT"),
};

static void test_cmd_table(void)
{
	size_t i;

	for (i = 0; i < TG_NELEM(cmd_cases); i++) {
		const struct cmd_case *c = &cmd_cases[i];

		tg_case("cmd: %s", c->name);
		check_stream(c->line, c->in, c->len, c->want);
	}
}

/* MAIL FROM:<local@example.org>, the address exactly alen bytes long. */
static size_t mail_of_len(char *buf, size_t alen, const char *tail,
			  char *addr)
{
	const char *dom = "@example.org";
	size_t llen = alen - strlen(dom);

	memset(addr, 'a', llen);
	strcpy(addr + llen, dom);
	return (size_t)sprintf(buf, "MAIL FROM:<%s>%s", addr, tail);
}

static void test_cmd_lengths(void)
{
	static char buf[BIG], addr[TG_ADDR_MAX + 16], want[TG_ADDR_MAX + 24];
	size_t n, pad, alen;

	/*
	 * A MAIL line is judged by its address wherever the line ends; the
	 * address must end within TG_LINE_MAX bytes ("MAIL FROM:<" is 11
	 * bytes, and the '>' counts).
	 */
	alen = TG_LINE_MAX - 12;
	tg_case("cmd: address whose '>' is byte TG_LINE_MAX");
	n = mail_of_len(buf, alen, "\r\n", addr);
	snprintf(want, sizeof(want), "mail %s", addr);
	check_stream(__LINE__, buf, n, want);

	tg_case("cmd: address whose '>' is byte TG_LINE_MAX + 1");
	n = mail_of_len(buf, alen + 1, "\r\n", addr);
	check_stream(__LINE__, buf, n, "bad");

	/* "MAIL FROM:" is 10 bytes */
	tg_case("cmd: bare address ending at byte TG_LINE_MAX + 1");
	mail_of_len(buf, TG_LINE_MAX - 9, "", addr);
	n = (size_t)sprintf(buf, "MAIL FROM:%s\r\n", addr);
	check_stream(__LINE__, buf, n, "bad");

	tg_case("cmd: bare address ending at byte TG_LINE_MAX");
	mail_of_len(buf, TG_LINE_MAX - 10, "", addr);
	n = (size_t)sprintf(buf, "MAIL FROM:%s\r\n", addr);
	snprintf(want, sizeof(want), "mail %s", addr);
	check_stream(__LINE__, buf, n, want);

	tg_case("cmd: address of 317 bytes (more than RFC 5321's 256)");
	n = mail_of_len(buf, 317, " SIZE=10\r\n", addr);
	snprintf(want, sizeof(want), "mail %s", addr);
	check_stream(__LINE__, buf, n, want);

	/* The bytes of a +extension count, even the '+' themselves. */
	tg_case("cmd: address ending past TG_LINE_MAX in a +extension");
	memset(addr, 'a', TG_ADDR_MAX);
	addr[TG_ADDR_MAX] = 0;
	n = (size_t)sprintf(buf, "MAIL FROM:<a+%s@b.c>\r\n", addr);
	check_stream(__LINE__, buf, n, "bad");

	tg_case("cmd: address of 301 bytes, a run of '+'");
	memset(addr, '+', 300);
	addr[300] = 0;
	n = (size_t)sprintf(buf, "MAIL FROM:<a%s@b.c>\r\n", addr);
	check_stream(__LINE__, buf, n, "mail a@b.c");

	/* Parameters after the address: the line's length does not count. */
	n = (size_t)sprintf(buf, "MAIL FROM:<a@b> X-PAD=");
	pad = TG_LINE_MAX - n;
	memset(buf + n, 'x', pad);
	n += pad;

	tg_case("cmd: MAIL line of TG_LINE_MAX bytes, LF");
	memcpy(buf + n, "\n", 2);
	check_stream(__LINE__, buf, n + 1, "mail a@b");

	tg_case("cmd: MAIL line of TG_LINE_MAX + 1 bytes, CRLF");
	memcpy(buf + n, "x\r\n", 4);
	check_stream(__LINE__, buf, n + 3, "mail a@b");

	tg_case("cmd: MAIL line of 3000 bytes, then MAIL");
	n = padded(buf, "MAIL FROM:<a@b> X-PAD=", 3000, "\r\nMAIL FROM:<c@d>\r\n");
	check_stream(__LINE__, buf, n, "mail a@b | mail c@d");

	tg_case("cmd: bare address, then 3000 bytes of parameters");
	n = padded(buf, "MAIL FROM:a@b X-PAD=", 3000, "\r\n");
	check_stream(__LINE__, buf, n, "mail a@b");

	tg_case("cmd: long line of another verb, then MAIL");
	n = padded(buf, "NOOP ", 3000, "\r\nMAIL FROM:<c@d>\r\n");
	check_stream(__LINE__, buf, n, "NOOP | mail c@d");

	tg_case("cmd: BDAT chunk of 2000 bytes looking like commands");
	n = (size_t)sprintf(buf, "MAIL FROM:<a@b>\r\nBDAT 2000 LAST\r\n");
	for (pad = 0; pad < 2000; pad += 20)
		memcpy(buf + n + pad, "MAIL FROM:<x@y>\r\n\r\n.", 20);
	n += 2000;
	n += (size_t)sprintf(buf + n, "MAIL FROM:<c@d>\r\n");
	check_stream(__LINE__, buf, n, "mail a@b | BDAT | chunk | mail c@d");
}

/*
 * A host that did not offer CHUNKING: Exim refuses BDAT and reads what
 * follows as commands, Postfix hangs up; a client that sends BDAT anyway
 * is not one tlsguard can vouch for.
 */
static void test_no_chunking(void)
{
	static const char in[] = "MAIL FROM:<x@y>\r\nBDAT 3 LAST\r\nabc\r\n";
	struct evlist ev;
	struct tg_cmd p;

	tg_case("cmd: BDAT to a host that did not offer CHUNKING");
	memset(&ev, 0, sizeof(ev));
	tg_cmd_init(&p);
	p.no_chunking = 1;
	feed(&p, (const unsigned char *)in, sizeof(in) - 1, &ev);
	CHECK(ev.n == 3 && ev.v[0].type == TG_CMD_MAIL &&
		      ev.v[1].type == TG_CMD_CHUNK_BAD &&
		      ev.v[2].type == TG_CMD_LINE,
	      "events [%s], expected [mail x@y | chunkbad | ABC]",
	      ev_show(&ev));
	CHECK_EQ(p.mode, TG_MODE_CMD);
}

/* ------------------------------------------------------------------ */

struct hold_case {
	int line;
	const char *in;
	size_t len;
	int want;
};

#define H(in, want) { __LINE__, in, sizeof(in) - 1, want }

static const struct hold_case hold_cases[] = {
	H("", 0),
	H("M", 1),
	H("ma", 1),
	H("MAI", 1),
	H("MAIL", 1),
	H("mail ", 1),
	H("MAIL FROM:<al", 1),
	H("MAIL FROM:<alice@example.org>", 1),
	H("MAIL FROM:<alice@example.org>\r", 1),
	H("MAIL FROM:<a@b>\r\n", 0),
	H("MAIL FROM:<a@b>\r\nRCPT TO:<", 0),
	H(" ", 1),
	H("  \t ", 1),
	H("\r", 1),
	H("  MA", 1),
	H("EHLO", 0),
	H("EHLO c.example", 0),
	H("RCPT TO:<", 0),
	H("MX", 0),
	H("MAILX", 0),
	H("STARTTLS", 0),
	H("NOOP\r\n", 0),
	H("NOOP\r\nM", 1),
	H("DATA\r\n", 0),
	H("DATA\r\nMAIL FROM:<al", 0),
	H("DATA\r\n.\r\nMAIL FROM:<al", 1),
	H("MAIL FROM:<x@y>\r\nBDAT 100\r\nMAIL FROM:<al", 0),
	H("BDAT 100\r\nMAIL FROM:<al", 1),
};

static void test_holding(void)
{
	struct evlist ev;
	struct tg_cmd p;
	size_t i;

	for (i = 0; i < TG_NELEM(hold_cases); i++) {
		const struct hold_case *h = &hold_cases[i];

		tg_case("holding after \"%s\"", tg_esc(h->in, h->len));
		memset(&ev, 0, sizeof(ev));
		tg_cmd_init(&p);
		feed(&p, (const unsigned char *)h->in, h->len, &ev);
		CHECK_AT(h->line, !!tg_cmd_holding(&p) == h->want,
			 "tg_cmd_holding() is %d, expected %d",
			 tg_cmd_holding(&p), h->want);
	}
}

/* ------------------------------------------------------------------ */

struct rev {
	int type;
	int code;
	int starttls;
	int ends;		/* AMBIGUOUS: Postfix ended the reply there */
};

struct rlist {
	int n;
	struct rev v[MAX_EVENTS];
};

static const char *rev_show(const struct rlist *l)
{
	static char out[2][1024];
	static unsigned next;
	char *o = out[next++ % 2];
	size_t n = 0;
	int i;

	o[0] = 0;
	for (i = 0; i < l->n; i++) {
		const struct rev *e = &l->v[i];
		const char *t = e->type == TG_REPLY_FINAL     ? "F" :
				e->type == TG_REPLY_CONT      ? "C" :
				e->type == TG_REPLY_AMBIGUOUS ? "A" :
				e->type == TG_REPLY_BAD	      ? "BAD" : "?";

		if (e->type == TG_REPLY_BAD)
			n += sprintf(o + n, "%sBAD", i ? " " : "");
		else
			n += sprintf(o + n, "%s%s%s%d", i ? " " : "", t,
				     e->ends ? "!" : "", e->code);
		if (e->starttls)
			n += sprintf(o + n, "/tls");
	}
	return o;
}

static void rfeed(struct tg_reply *r, const unsigned char *s, size_t len,
		  struct rlist *out)
{
	size_t i;
	int ev;

	for (i = 0; i < len; i++) {
		ev = tg_reply_feed(r, s[i]);
		if (ev == TG_REPLY_NONE || out->n == MAX_EVENTS)
			continue;
		out->v[out->n].type = ev;
		out->v[out->n].code = ev == TG_REPLY_BAD ? 0 : r->code;
		out->v[out->n].starttls = r->starttls;
		out->v[out->n].ends = ev == TG_REPLY_AMBIGUOUS && r->new_reply;
		out->n++;
	}
}

static void rfeed_split(const unsigned char *s, size_t len, size_t k,
			struct rlist *out)
{
	struct tg_reply r, saved;

	memset(out, 0, sizeof(*out));
	tg_reply_init(&r);
	rfeed(&r, s, k, out);
	memcpy(&saved, &r, sizeof(r));
	memset(&r, 0x5a, sizeof(r));
	memcpy(&r, &saved, sizeof(r));
	rfeed(&r, s + k, len - k, out);
}

struct reply_case {
	int line;
	const char *name;
	const char *in;
	size_t len;
	/*
	 * Fnnn final, Cnnn continuation, BAD, Annn ambiguous (A!nnn: and
	 * Postfix ended the reply there); "/tls": starttls is set.
	 */
	const char *want;
};

#define R(name, in, want) { __LINE__, name, in, sizeof(in) - 1, want }

static const struct reply_case reply_cases[] = {
	R("greeting", "220 mx.example ESMTP\r\n", "F220"),
	R("EHLO, STARTTLS in the middle",
	  "250-mx.example\r\n250-PIPELINING\r\n250-STARTTLS\r\n"
	  "250 SIZE 10240000\r\n",
	  "C250 C250 C250/tls F250/tls"),
	R("EHLO, STARTTLS at the end",
	  "250-mx.example\r\n250-PIPELINING\r\n250 STARTTLS\r\n",
	  "C250 C250 F250/tls"),
	R("EHLO without STARTTLS", "250-mx.example\r\n250 PIPELINING\r\n",
	  "C250 F250"),
	R("starttls in lower case", "250-mx.example\r\n250-starttls\r\n"
	  "250 8BITMIME\r\n",
	  "C250 C250/tls F250/tls"),
	R("STARTTLSX is not STARTTLS", "250-STARTTLSX\r\n250 OK\r\n",
	  "C250 F250"),
	R("XSTARTTLS is not STARTTLS", "250-XSTARTTLS\r\n250 OK\r\n",
	  "C250 F250"),
	R("STARTTL is not STARTTLS", "250-STARTTL\r\n250 OK\r\n",
	  "C250 F250"),
	R("STARTTLS as a later word is not advertised",
	  "250-HELP STARTTLS\r\n250 OK\r\n", "C250 F250"),
	R("STARTTLS followed by white space",
	  "250-mx.example\r\n250-STARTTLS \r\n250 OK\r\n",
	  "C250 C250/tls F250/tls"),
	R("bare LF", "250-mx.example\n250 STARTTLS\n", "C250 F250/tls"),
	R("flag cleared when the next reply starts",
	  "250 STARTTLS\r\n220 2.0.0 Ready to start TLS\r\n", "F250/tls F220"),
	R("non-digit line", "hello\r\n", "BAD"),
	R("letter in the code", "2x0 ok\r\n", "BAD"),
	/* Postfix: garbage, the reply goes on; OpenSMTPD: the last line */
	R("bad separator", "250xok\r\n", "A250"),
	R("empty line", "\r\n", "BAD"),
	R("two digits, LF", "25\n", "BAD"),
	R("two digits, CRLF", "25\r\n", "BAD"),
	R("code alone", "250\r\n", "F250"),
	R("code values",
	  "354 End data with <CR><LF>.<CR><LF>\r\n421 4.3.2 Bye\r\n"
	  "550-5.7.1 no\r\n550 5.7.1 no\r\n000 x\r\n999 y\r\n",
	  "F354 F421 C550 F550 F0 F999"),
	R("bad line then a reply", "xyz\r\n220 ok\r\n", "BAD F220"),
	/*
	 * Postfix's reading (smtp_get, smtp_chat_resp): every CR before the
	 * LF is dropped, the line ends at a NUL, three digits then the end
	 * of the line or a space end the reply, '-' continues it, anything
	 * else is garbage that Postfix reads as part of the reply.
	 */
	R("CRs before the LF", "250\r\r\n", "F250"),
	R("CRs before the LF of a continuation",
	  "250-STARTTLS\r\r\r\n250 OK\r\n", "C250/tls F250/tls"),
	R("NUL after the code", "250\0garbage\r\n", "F250"),
	R("NUL hides a dash", "250\0-more\r\n220 next\r\n", "F250 F220"),
	R("NUL inside the code", "25\0 ok\r\n", "BAD"),
	R("garbage line inside a reply",
	  "250-mx\r\nxyz\r\n250 OK\r\n", "C250 BAD F250"),
	R("garbage line keeps the reply's flags",
	  "250-STARTTLS\r\nxyz\r\n250 OK\r\n", "C250/tls BAD/tls F250/tls"),
	R("garbage lines are no reply of their own",
	  "xyz\r\n\r\n99\r\n220 ok\r\n", "BAD BAD BAD F220"),
	/* Exim 4.96 strips trailing white space: "250" ends its reply */
	R("tab after the code", "250\t\r\n", "A250"),
	R("VT and space after a 1xx code", "150\v \r\n", "A150"),
	R("tab after a 6xx code", "650\t\r\n", "A650"),
	/* OpenSMTPD: three digits 2..5 and anything but '-' end it */
	R("four digits", "2500 ok\r\n", "A250"),
	R("CR after the code, then text", "250\rX\r\n", "A250"),
	R("CR after the code, then a dash", "250\r-\r\n", "A250"),
	/* nobody but Postfix goes on after these: not ambiguous */
	R("6xx code, bad separator", "650xok\r\n", "BAD"),
	R("0xx code, bad separator", "000-\r\n000\tx\r\n", "C0 BAD"),
	/*
	 * Exim and OpenSMTPD take a reply's class from its first line,
	 * Postfix from its last.
	 */
	R("354 then 250", "354-go ahead\r\n250 OK\r\n", "C354 A!250"),
	R("250 then 550", "250-a\r\n250-b\r\n550 no\r\n", "C250 C250 A!550"),
	R("same class, other codes", "250-a\r\n251 b\r\n", "C250 F251"),
	R("mixed classes after garbage", "xyz\r\n354-a\r\n250 b\r\n",
	  "BAD C354 F250"),
};

static void rlist_parse(const char *spec, struct rlist *l)
{
	const char *s = spec;
	char *end;

	memset(l, 0, sizeof(*l));
	while (*s && l->n < MAX_EVENTS) {
		struct rev *e = &l->v[l->n++];

		while (*s == ' ')
			s++;
		if (!strncmp(s, "BAD", 3)) {
			e->type = TG_REPLY_BAD;
			s += 3;
		} else {
			e->type = *s == 'C' ? TG_REPLY_CONT :
				  *s == 'A' ? TG_REPLY_AMBIGUOUS :
					      TG_REPLY_FINAL;
			if (*++s == '!') {
				e->ends = 1;
				s++;
			}
			e->code = (int)strtol(s, &end, 10);
			s = end;
		}
		if (!strncmp(s, "/tls", 4)) {
			e->starttls = 1;
			s += 4;
		}
		while (*s == ' ')
			s++;
	}
}

static int rlist_same(const struct rlist *a, const struct rlist *b)
{
	int i;

	if (a->n != b->n)
		return 0;
	for (i = 0; i < a->n; i++)
		if (a->v[i].type != b->v[i].type ||
		    a->v[i].code != b->v[i].code ||
		    a->v[i].starttls != b->v[i].starttls ||
		    a->v[i].ends != b->v[i].ends)
			return 0;
	return 1;
}

static void test_reply_table(void)
{
	struct rlist want, got, split;
	size_t i, k;

	for (i = 0; i < TG_NELEM(reply_cases); i++) {
		const struct reply_case *c = &reply_cases[i];
		const unsigned char *s = (const unsigned char *)c->in;

		tg_case("reply: %s", c->name);
		rlist_parse(c->want, &want);
		rfeed_split(s, c->len, c->len, &got);
		CHECK_AT(c->line, rlist_same(&got, &want),
			 "input \"%s\": events [%s], expected [%s]",
			 tg_esc(s, c->len), rev_show(&got), c->want);
		for (k = 0; k <= c->len; k++) {
			rfeed_split(s, c->len, k, &split);
			if (!CHECK_AT(c->line, rlist_same(&split, &got),
				      "split at %zu: events [%s], in one "
				      "piece [%s]",
				      k, rev_show(&split), rev_show(&got)))
				break;
		}
	}
}

/*
 * Lines at the length limits: Postfix reads 2048 bytes of a line
 * (line_length_limit) and drops trailing CRs only from a line that fits;
 * OpenSMTPD refuses a line of LINE_MAX (2048) bytes or more, less one CR.
 */
static void test_reply_lengths(void)
{
	static const struct {
		int line;
		const char *head;	/* then pad bytes up to len */
		char pad;
		size_t len;		/* bytes before the LF */
		const char *tail;	/* the last bytes, within len */
		const char *want;
	} rows[] = {
		{ __LINE__, "250", '\r', 2048, "", "F250" },
		{ __LINE__, "250", '\r', 2049, "", "A250" },
		{ __LINE__, "250x", 'y', 2047, "", "A250" },
		{ __LINE__, "250x", 'y', 2048, "", "BAD" },
		{ __LINE__, "250x", 'y', 2048, "\r", "A250" },
		{ __LINE__, "250x", 'y', 2049, "\r", "BAD" },
		{ __LINE__, "250 ", 'y', 3000, "", "F250" },
		{ __LINE__, "250-", 'y', 3000, "", "C250" },
	};
	static unsigned char buf[4096];
	struct rlist want, got;
	size_t i, h, t;

	for (i = 0; i < TG_NELEM(rows); i++) {
		tg_case("reply: \"%s\" padded to %zu bytes", rows[i].head,
			rows[i].len);
		h = strlen(rows[i].head);
		t = strlen(rows[i].tail);
		memset(buf, rows[i].pad, rows[i].len);
		memcpy(buf, rows[i].head, h);
		memcpy(buf + rows[i].len - t, rows[i].tail, t);
		buf[rows[i].len] = '\n';
		rlist_parse(rows[i].want, &want);
		rfeed_split(buf, rows[i].len + 1, rows[i].len / 2, &got);
		CHECK_AT(rows[i].line, rlist_same(&got, &want),
			 "events [%s], expected [%s]", rev_show(&got),
			 rows[i].want);
	}
}

/*
 * The reply to DATA: whether the client sends the body. Postfix
 * (smtp_proto.c: code / 100 == 3) and Exim (smtp_read_response(..., '3'))
 * send it after any 3xx, OpenSMTPD (mta_session.c, MTA_DATA) after a 2xx
 * or a 3xx.
 */
static void test_reply_data(void)
{
	static const struct {
		int line;
		const char *in;
		int cls, want;
	} rows[] = {
		{ __LINE__, "354 End data with <CR><LF>.<CR><LF>\r\n", 3,
		  TG_DATA_BODY },
		{ __LINE__, "354\r\n", 3, TG_DATA_BODY },
		{ __LINE__, "300 go on\r\n", 3, TG_DATA_BODY },
		{ __LINE__, "399-a\r\n399 b\r\n", 3, TG_DATA_BODY },
		{ __LINE__, "250 ok\r\n", 2, TG_DATA_UNSURE },
		{ __LINE__, "221 bye\r\n", 2, TG_DATA_UNSURE },
		{ __LINE__, "451 4.3.0 later\r\n", 4, TG_DATA_NONE },
		{ __LINE__, "554 5.5.1 no valid recipients\r\n", 5,
		  TG_DATA_NONE },
		{ __LINE__, "199 x\r\n", 1, TG_DATA_NONE },
		{ __LINE__, "099 x\r\n", 0, TG_DATA_NONE },
	};
	struct tg_reply r;
	size_t i, k;
	int ev, last;

	for (i = 0; i < TG_NELEM(rows); i++) {
		tg_case("reply to DATA: \"%s\"",
			tg_esc(rows[i].in, strlen(rows[i].in)));
		tg_reply_init(&r);
		last = TG_REPLY_NONE;
		for (k = 0; rows[i].in[k]; k++) {
			ev = tg_reply_feed(&r, (unsigned char)rows[i].in[k]);
			if (ev != TG_REPLY_NONE)
				last = ev;
		}
		CHECK_EQ_AT(rows[i].line, last, TG_REPLY_FINAL);
		CHECK_EQ_AT(rows[i].line, tg_reply_class(&r), rows[i].cls);
		CHECK_EQ_AT(rows[i].line, tg_reply_data(&r), rows[i].want);
	}
}

static void test_reply_flag(void)
{
	static const char first[] = "250-mx.example\r\n250 STARTTLS\r\n";
	struct tg_reply r;
	struct rlist l = { 0 };

	tg_case("reply: starttls kept until the next reply starts");
	tg_reply_init(&r);
	CHECK_EQ(r.starttls, 0);
	rfeed(&r, (const unsigned char *)first, sizeof(first) - 1, &l);
	CHECK_EQ(r.starttls, 1);
	CHECK_EQ(r.code, 250);
	rfeed(&r, (const unsigned char *)"2", 1, &l);
	CHECK(r.starttls == 0, "starttls still set after the first byte of "
			       "the next reply");
	rfeed(&r, (const unsigned char *)"20 go\r\n", 7, &l);
	CHECK_EQ(r.starttls, 0);
	CHECK_EQ(r.code, 220);
}

/* ------------------------------------------------------------------ */

struct key_case {
	int line;
	const char *in;
	size_t len;
	const char *want;	/* normalized; NULL: malformed, key 0 */
};

#define K(in, want) { __LINE__, in, sizeof(in) - 1, want }

static const struct key_case key_cases[] = {
	K("alice@example.org", "alice@example.org"),
	K("Alice@Example.ORG", "alice@example.org"),
	K("alice+news@example.org", "alice@example.org"),
	K("+alice@example.org", "+alice@example.org"),
	K("\"a b\"@example.org", "a b@example.org"),
	K("\"A\\\"b\"@example.org", "a\"b@example.org"),
	K("\"a>@b\"@example.org", "a>@b@example.org"),
	K("j\xc3\xb6ran@ex\xc3\xa4mple.org", "j\xc3\xb6ran@ex\xc3\xa4mple.org"),
	K("@example.org", "@example.org"),
	K("@Example.ORG", "@example.org"),
	K("alice", "alice"),
	/*
	 * A trailing dot ends the domain (Postfix trivial-rewrite strips it,
	 * but not after a dot or the '@').
	 */
	K("alice@example.org.", "alice@example.org"),
	K("Alice+x@Example.ORG.", "alice@example.org"),
	K("@example.org.", "@example.org"),
	K("alice@example.org.x", "alice@example.org.x"),
	K("alice@example.org..", "alice@example.org.."),
	K("alice@.", "alice@."),
	K("alice.", "alice."),
	/* malformed */
	K("", NULL),
	K("a@b@c", NULL),
	K("<a@b>", NULL),
	K("a@b>", NULL),
	K("a b@c", NULL),
	K("a@b c", NULL),
	K("\"a b@c", NULL),
	K("a\x01@b", NULL),
	K("a\0@b", NULL),
	K("a@b\x7f", NULL),
	K("@relay.example:alice@example.org", NULL),
	K("prvs=0123abcdef=alice@example.org", "alice@example.org"),
	K("btv1==0123abcdef==Alice@example.org", "alice@example.org"),
	K("alice@", NULL),
	K("@", NULL),
};

static void test_addr_key(void)
{
	static char buf[BIG];
	__u64 key, dk, ref, ref_dk, dk_alice;
	size_t i;

	for (i = 0; i < TG_NELEM(key_cases); i++) {
		const struct key_case *c = &key_cases[i];
		const char *at;

		tg_case("tg_addr_key(\"%s\")", tg_esc(c->in, c->len));
		dk = 0x1234;
		key = tg_addr_key(c->in, (__u32)c->len, &dk);
		if (!c->want) {
			CHECK_AT(c->line, key == 0,
				 "key is %#llx, expected 0 (malformed)",
				 (unsigned long long)key);
			continue;
		}
		at = strrchr(c->want, '@');
		ref = ref_fnv(c->want);
		ref_dk = at ? ref_fnv(at) : 0;
		CHECK_AT(c->line, key == ref,
			 "key is %#llx, expected FNV-1a(\"%s\") = %#llx",
			 (unsigned long long)key, c->want,
			 (unsigned long long)ref);
		CHECK_AT(c->line, dk == ref_dk,
			 "domain key is %#llx, expected %#llx",
			 (unsigned long long)dk, (unsigned long long)ref_dk);
	}

	tg_case("tg_addr_key: @domain gives the domain key of its users");
	tg_addr_key("alice@example.org", 17, &dk_alice);
	key = tg_addr_key("@EXAMPLE.org", 12, &dk);
	CHECK(key != 0, "key of @EXAMPLE.org is 0");
	CHECK_EQ(dk, dk_alice);
	key = tg_addr_key("bob@example.org.", 16, &dk);
	CHECK(key != 0, "key of bob@example.org. is 0");
	CHECK_EQ(dk, dk_alice);

	tg_case("tg_addr_key: TG_ADDR_MAX bytes, and one more");
	memset(buf, 'a', TG_ADDR_MAX + 1);
	memcpy(buf + TG_ADDR_MAX - 4, "@b.c", 4);
	CHECK(tg_addr_key(buf, TG_ADDR_MAX, &dk) != 0,
	      "an address of TG_ADDR_MAX bytes is refused");
	memset(buf, 'a', TG_ADDR_MAX + 1);
	memcpy(buf + TG_ADDR_MAX - 3, "@b.c", 4);
	CHECK(tg_addr_key(buf, TG_ADDR_MAX + 1, &dk) == 0,
	      "an address of TG_ADDR_MAX + 1 bytes is accepted");
	CHECK_EQ(dk, 0);
}

/*
 * The delimiters are the process's (tg_delims_set()); the IDN flag says a
 * byte of the domain is not ASCII, for tg_rule().
 */
static void test_delims_idn(void)
{
	__u64 dk, dk2;
	int srs = -1;

	tg_case("delimiters: \"+-\" makes mary-jane mary");
	CHECK(tg_addr_key("mary-jane@example.org", 21, &dk) !=
		      tg_addr_key("mary@example.org", 16, &dk2),
	      "'-' is a delimiter by default");
	CHECK(tg_delims_set("+-") == 0, "tg_delims_set(\"+-\") refused");
	CHECK_EQ(tg_addr_key("mary-jane@example.org", 21, &dk),
		 tg_addr_key("mary@example.org", 16, &dk2));
	CHECK_EQ(tg_addr_key("mary+x-y@example.org", 20, &dk),
		 tg_addr_key("mary@example.org", 16, &dk2));
	CHECK(tg_addr_key("-mary@example.org", 17, &dk) !=
		      tg_addr_key("mary@example.org", 16, &dk2),
	      "a leading delimiter is dropped");
	check_stream(__LINE__, "MAIL FROM:<Alice-List@example.org>\r\n", 36,
		     "mail alice@example.org");
	CHECK(tg_delims_set("") == 0, "tg_delims_set(\"\") refused");
	CHECK(tg_addr_key("alice+x@example.org", 19, &dk) !=
		      tg_addr_key("alice@example.org", 17, &dk2),
	      "'+' is a delimiter with none set");
	CHECK(tg_delims_set("@") == -1 && tg_delims_set("+\x80") == -1,
	      "a delimiter that cannot be one is taken");
	CHECK(tg_delims_set("+") == 0, "tg_delims_set(\"+\") refused");

	tg_case("IDN: a domain that is not ASCII is flagged");
	tg_addr_key_srs("alice@b\xc3\xbc"
			"cher.example",
			20, &dk, &srs);
	CHECK(srs == TG_SENDER_IDN, "srs is %d for a U-label", srs);
	tg_addr_key_srs("alice@xn--bcher-kva.example", 27, &dk, &srs);
	CHECK(srs == 0, "srs is %d for an A-label", srs);
	tg_addr_key_srs("j\xc3\xb6ran@example.org", 18, &dk, &srs);
	CHECK(srs == 0, "srs is %d for a local part not ASCII", srs);
	tg_addr_key_srs("SRS0=h=t=b\xc3\xbc.example=x@fwd.example", 34, &dk,
			&srs);
	CHECK(srs == 1, "srs is %d for SRS0 of an IDN at an ASCII forwarder",
	      srs);
}

int main(void)
{
	test_cmd_table();
	test_cmd_lengths();
	test_no_chunking();
	test_holding();
	test_reply_table();
	test_reply_lengths();
	test_reply_data();
	test_reply_flag();
	test_addr_key();
	test_delims_idn();
	return tg_test_done();
}
