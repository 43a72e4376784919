// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	test_policy - unit tests of the senders file and the senders map
 * SYNOPSIS
 *	build/tests/test_policy
 * DESCRIPTION
 *	Loads senders files written to temporary files and checks the keys
 *	against those the MAIL parser of include/tg_smtp.h computes for the
 *	same senders on the wire: the file and the wire must agree.
 *	Malformed files must fail with "FILE:LINE: ..." naming the line.
 *
 *	lib/tg_policy.c comes from the library the daemon links
 *	(build/libtlsguard.a).
 *
 *	tg_policy_sync() and the senders table (lib/tg_stabmap.c) run
 *	against a real BPF array map; when the kernel refuses to create one
 *	(not root), those cases are skipped.
 * DIAGNOSTICS
 *	One line per failed check on stderr; "N passed, M failed" on stdout.
 *	The exit status is non-zero when a case failed.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <bpf/bpf.h>

#include "tlsguard.h"
#include "tg_hostport.h"
#include "tg_policy.h"
#include "tg_rule.h"
#include "tg_stabmap.h"
#include "tg_smtp.h"

#include "tg_test.h"

static char tmpdir[] = "/tmp/tg_policy_test.XXXXXX";

/* Writes a senders file; returns its path in a static buffer. */
static const char *senders_file(const char *body, size_t len)
{
	static char path[2][sizeof(tmpdir) + 32];
	static unsigned seq;
	char *p = path[seq % 2];
	FILE *fp;

	snprintf(p, sizeof(path[0]), "%s/senders.%u", tmpdir, seq++);
	fp = fopen(p, "w");
	if (!fp || fwrite(body, 1, len, fp) != len || fclose(fp)) {
		perror(p);
		exit(2);
	}
	return p;
}

/* Keys of a sender as the MAIL parser computes them on the wire. */
static int wire_srs;	/* tg_cmd_srs() of the last wire_keys() */

static int wire_keys(const char *addr, __u64 *addr_key, __u64 *domain_key)
{
	char line[600];
	struct tg_cmd p;
	int n, i, ev = TG_CMD_NONE;

	n = snprintf(line, sizeof(line), "MAIL FROM:<%s>\r\n", addr);
	tg_cmd_init(&p);
	for (i = 0; i < n; i++)
		ev = tg_cmd_feed(&p, (unsigned char)line[i]);
	*addr_key = p.addr_key;
	*domain_key = p.domain_key;
	wire_srs = tg_cmd_srs(&p) | tg_cmd_idn(&p);
	return ev == TG_CMD_MAIL;
}

static int wire_match(const struct tg_policy *pol, const char *addr)
{
	__u64 ak, dk;

	if (!wire_keys(addr, &ak, &dk))
		return -1;
	return tg_policy_match(pol, ak, dk, wire_srs);
}

static int sorted_unique(const struct tg_policy *pol)
{
	size_t i;

	for (i = 1; i < pol->n; i++)
		if (pol->keys[i - 1] >= pol->keys[i])
			return 0;
	return 1;
}

/* ------------------------------------------------------------------ */

static const char sample[] =
	"# guaranteed senders\n"			/* 1 */
	"\n"						/* 2 */
	"alice@example.org\r\n"				/* 3 */
	"  bob@example.net  \t\n"			/* 4 */
	"\tcarol+ignored@example.com   # comment\n"	/* 5 */
	"@example.edu\n"				/* 6 */
	"\r\n"						/* 7 */
	"alice@example.org\n"				/* 8: duplicate */
	"ALICE@EXAMPLE.ORG\n"				/* 9: same, folded */
	"alice+other@example.org\n"			/* 10: same, +ext */
	"   # indented comment\n"			/* 11 */
	"@EXAMPLE.EDU\r\n"				/* 12: duplicate */
	"j\xc3\xb6ran@ex\xc3\xa4mple.org\n"		/* 13: SMTPUTF8 */
	"last@example.org";				/* 14: no newline */

/* line 13's domain is internationalized: two keys (A-label, U-label) */
#define SAMPLE_KEYS 7

struct match_case {
	int line;
	const char *addr;	/* as on the wire, in MAIL FROM:<...> */
	int want;
};

#define M(addr, want) { __LINE__, addr, want }

static const struct match_case match_cases[] = {
	M("alice@example.org", 1),
	M("Alice@Example.ORG", 1),
	M("alice+news@example.org", 1),
	M("ALICE+News@EXAMPLE.org", 1),
	M("@relay.example:alice@example.org", 1),
	M("+alice@example.org", 0),
	M("lice@example.org", 0),
	M("alice@example.org.evil", 0),
	M("alice@example.net", 0),
	M("bob@example.net", 1),
	M("bob@example.org", 0),
	M("carol@example.com", 1),
	M("carol+ignored@example.com", 1),
	M("Carol+x@Example.COM", 1),
	M("anyone@example.edu", 1),
	M("Anyone+x@EXAMPLE.EDU", 1),
	M("user@sub.example.edu", 0),
	M("user@example.edu.evil", 0),
	M("user@xexample.edu", 0),
	M("j\xc3\xb6ran@ex\xc3\xa4mple.org", 1),
	M("J\xc3\xb6ran@EX\xc3\xa4mple.org", 1),
	M("last@example.org", 1),
	M("mallory@example.org", 0),
	M("alice", 0),
};

static void test_sample(void)
{
	struct tg_policy pol;
	char err[512] = "";
	const char *path;
	size_t i;
	int rc;

	tg_case("load: comments, blank lines, CRLF, spaces, duplicates");
	path = senders_file(sample, sizeof(sample) - 1);
	rc = tg_policy_load(path, &pol, err, sizeof(err));
	CHECK(rc == 0, "tg_policy_load() is %d: %s", rc, err);
	CHECK_EQ(pol.n, SAMPLE_KEYS);
	CHECK(sorted_unique(&pol), "keys are not sorted and unique");

	for (i = 0; i < TG_NELEM(match_cases); i++) {
		const struct match_case *c = &match_cases[i];
		int got = wire_match(&pol, c->addr);

		tg_case("match: MAIL FROM:<%s>", tg_esc(c->addr, strlen(c->addr)));
		CHECK_AT(c->line, got == c->want, "match is %d, expected %d%s",
			 got, c->want,
			 got < 0 ? " (the MAIL line did not parse)" : "");
	}
	tg_policy_free(&pol);
	CHECK(pol.n == 0 && pol.keys == NULL, "tg_policy_free() left keys");
}

static void test_empty(void)
{
	static const struct {
		int line;
		const char *name, *body;
	} empties[] = {
		{ __LINE__, "empty file", "" },
		{ __LINE__, "comments and blank lines only",
		  "# none yet\n\n  \t\r\n#alice@example.org\n" },
	};
	struct tg_policy pol;
	char err[512] = "";
	__u64 ak, dk;
	size_t i;
	int rc;

	for (i = 0; i < TG_NELEM(empties); i++) {
		tg_case("load: %s", empties[i].name);
		rc = tg_policy_load(senders_file(empties[i].body,
						 strlen(empties[i].body)),
				    &pol, err, sizeof(err));
		CHECK_AT(empties[i].line, rc == 0,
			 "tg_policy_load() is %d: %s", rc, err);
		CHECK_EQ_AT(empties[i].line, pol.n, 0);
		wire_keys("alice@example.org", &ak, &dk);
		CHECK_AT(empties[i].line, !tg_policy_match(&pol, ak, dk, 0),
			 "an empty policy matches");
		tg_policy_free(&pol);
	}
}

/* More entries than the first allocation holds. */
static void test_many(void)
{
	static char body[64 * 3000];
	struct tg_policy pol;
	char err[512] = "", addr[64];
	size_t n = 0;
	int i, rc, missing = 0;

	tg_case("load: 1000 entries");
	for (i = 0; i < 1000; i++)
		n += (size_t)sprintf(body + n, "user%d@example.org\n", i);
	rc = tg_policy_load(senders_file(body, n), &pol, err, sizeof(err));
	CHECK(rc == 0, "tg_policy_load() is %d: %s", rc, err);
	CHECK_EQ(pol.n, 1000);
	CHECK(sorted_unique(&pol), "keys are not sorted and unique");
	for (i = 0; i < 1000; i++) {
		snprintf(addr, sizeof(addr), "User%d+x@Example.org", i);
		missing += wire_match(&pol, addr) != 1;
	}
	CHECK(missing == 0, "%d of 1000 senders do not match", missing);
	CHECK(wire_match(&pol, "user1000@example.org") == 0,
	      "a sender not in the file matches");
	tg_policy_free(&pol);

	/* The in-place sort with runs of equal keys, in three orders. */
	tg_case("load: 1000 entries, each three times");
	for (n = 0, i = 0; i < 3000; i++)
		n += (size_t)sprintf(body + n, "u%d@e.org\n",
				     i < 1000 ? i : i < 2000 ? 1999 - i :
				     (i * 7) % 1000);
	rc = tg_policy_load(senders_file(body, n), &pol, err, sizeof(err));
	CHECK(rc == 0, "tg_policy_load() is %d: %s", rc, err);
	CHECK_EQ(pol.n, 1000);
	CHECK(sorted_unique(&pol), "keys are not sorted and unique");
	tg_policy_free(&pol);
}

/* ------------------------------------------------------------------ */

struct entry_case {
	int line;
	const char *entry;
	const char *wire;	/* sender whose key it must be */
};

#define E(entry, wire) { __LINE__, entry, wire }

static const struct entry_case entry_cases[] = {
	E("alice@example.org", "alice@example.org"),
	E("Alice+News@Example.ORG", "alice@example.org"),
	E("Alice+News@Example.ORG", "ALICE+other@example.ORG"),
	E("+alice@example.org", "+alice@example.org"),
	E("\"ab\"@example.org", "\"ab\"@example.org"),
	E("j\xc3\xb6ran@ex\xc3\xa4mple.org", "j\xc3\xb6ran@ex\xc3\xa4mple.org"),
	E("alice@192.0.2.1", "alice@192.0.2.1"),
	/*
	 * The domain rule of tg_domain_valid(TG_DOMAIN_UTF8) is "letters, digits, '-', '.',
	 * UTF-8, no empty label": "-" passes it, although RFC 5321 would not
	 * take a label that starts or ends with '-'.
	 */
	E("alice@-", "alice@-"),
	/* "@domain": the domain key of every sender there */
	E("@example.org", "anyone@example.org"),
	E("@Example.ORG", "Someone+x@EXAMPLE.org"),
	/* an internationalized domain: either form on the wire */
	E("alice@b\xc3\xbc"
	  "cher.example",
	  "alice@xn--bcher-kva.example"),
	E("alice@b\xc3\xbc"
	  "cher.example",
	  "alice@b\xc3\xbc"
	  "cher.example"),
	E("alice@xn--bcher-kva.example", "alice@b\xc3\xbc"
					 "cher.example"),
	E("@XN--BCHER-KVA.example", "x@b\xc3\xbc"
				    "cher.example"),
	E("@B\xc3\x9c"
	  "CHER.example",
	  "x@b\xc3\xbc"
	  "cher.example"),
	E("@bu\xcc\x88"
	  "cher.example",
	  "x@xn--bcher-kva.example"),
	/* BATV: the tag is not part of the mailbox */
	E("alice@example.org", "prvs=0123abcdef=alice@example.org"),
};

/*
 * IDN: an entry in one form matches a sender in the other; a spelling the
 * kernel cannot map (upper case, NFD) is held for the agent when the
 * senders name an internationalized domain, and the agent maps it.
 */
static const __u8 *marked_look(void *ctx, const __u64 *key)
{
	static const __u8 one = 1, two = 2;
	const struct tg_policy *pol = ctx;
	int v;

	if (*key == TG_KEY_IDN)
		return pol->idn ? &one : NULL;
	v = tg_policy_key_value(pol, *key);
	return v == TG_POL_GUARANTEED ? &one : v == TG_POL_EXEMPT ? &two : NULL;
}

static void test_idn(void)
{
	static const char body[] = "alice@b\xc3\xbc"
				   "cher.example\n"
				   "@xn--caf-dma.example\n";
	static const struct {
		const char *wire;
		int direct; /* the kernel's keys match */
		int agent;  /* tg_policy_lookup_addr() guarantees it */
	} cases[] = {
		{ "alice@b\xc3\xbc"
		  "cher.example",
		  1, 1 },
		{ "alice@xn--bcher-kva.example", 1, 1 },
		{ "Alice+x@XN--BCHER-KVA.EXAMPLE", 1, 1 },
		{ "alice@B\xc3\x9c"
		  "CHER.example",
		  0, 1 }, /* upper case */
		{ "alice@bu\xcc\x88"
		  "cher.example",
		  0, 1 }, /* NFD */
		{ "bob@b\xc3\xbc"
		  "cher.example",
		  0, 0 },
		{ "x@caf\xc3\xa9.example", 1, 1 },
		{ "x@CAF\xc3\x89.example", 0, 1 },
		{ "x@caf\xc3\xa9.example.", 1, 1 },
		{ "x@xn--caf-dma.example", 1, 1 },
		{ "x@caf\xc3\xa8.example", 0, 0 }, /* another domain */
	};
	struct tg_policy pol;
	char err[512] = "";
	__u64 ak, dk;
	size_t i;
	int rc, srs, rule;

	tg_case("IDN: load an entry in each form");
	rc = tg_policy_load(senders_file(body, sizeof(body) - 1), &pol, err,
			    sizeof(err));
	CHECK(rc == 0, "tg_policy_load() is %d: %s", rc, err);
	CHECK_EQ(pol.n, 4);
	CHECK(pol.idn, "pol.idn is not set");
	for (i = 0; i < TG_NELEM(cases); i++) {
		tg_case("IDN: MAIL FROM:<%s>",
			tg_esc(cases[i].wire, strlen(cases[i].wire)));
		if (!CHECK(wire_keys(cases[i].wire, &ak, &dk),
			   "does not parse"))
			continue;
		srs = wire_srs;
		CHECK(tg_policy_match(&pol, ak, dk, srs) == cases[i].direct,
		      "direct match is not %d", cases[i].direct);
		rule = tg_rule(marked_look, &pol, &ak, &dk, srs);
		CHECK(tg_rule_holds(rule),
		      "the kernel's rule does not hold it (%d)", rule);
		CHECK(rule == (cases[i].direct ? (cases[i].wire[0] == 'x' ?
							  TG_RULE_DOMAIN :
							  TG_RULE_ADDR) :
						 TG_RULE_AGENT),
		      "the kernel's rule is %d", rule);
		CHECK(tg_policy_lookup_addr(&pol, cases[i].wire, NULL) ==
			      (cases[i].agent ? TG_POL_GUARANTEED : 0),
		      "the agent's lookup is not %d", cases[i].agent);
	}
	tg_case("IDN: a domain IDNA2008 refuses keeps the key of its bytes");
	tg_policy_free(&pol);
	rc = tg_policy_load(senders_file("@\xe2\x98\x83.example\n", 13), &pol,
			    err, sizeof(err));
	CHECK(rc == 0, "tg_policy_load() is %d: %s", rc, err);
	CHECK(pol.n == 1 && pol.idn, "pol.n is %zu, pol.idn %d", pol.n,
	      pol.idn);
	wire_keys("x@\xe2\x98\x83.example", &ak, &dk);
	CHECK(tg_policy_match(&pol, ak, dk, wire_srs), "no direct match");
	tg_case("IDN: no IDN entry, no hold for a domain that is not ASCII");
	tg_policy_free(&pol);
	rc = tg_policy_load(senders_file("alice@example.org\n", 18), &pol, err,
			    sizeof(err));
	CHECK(rc == 0 && !pol.idn, "pol.idn is set");
	wire_keys("alice@b\xc3\x9c"
		  "cher.example",
		  &ak, &dk);
	rule = tg_rule(marked_look, &pol, &ak, &dk, TG_SENDER_IDN);
	CHECK(rule == TG_RULE_NONE, "the kernel's rule is %d", rule);
	tg_policy_free(&pol);
}

static void test_entry_key(void)
{
	__u64 key, ak, dk, keys[2];
	size_t i;
	int rc;

	for (i = 0; i < TG_NELEM(entry_cases); i++) {
		const struct entry_case *c = &entry_cases[i];
		__u64 want;

		tg_case("entry: %s = MAIL FROM:<%s>",
			tg_esc(c->entry, strlen(c->entry)),
			tg_esc(c->wire, strlen(c->wire)));
		keys[0] = keys[1] = 0;
		rc = tg_policy_entry_keys(c->entry, keys);
		if (!CHECK_AT(c->line, rc == 1 || rc == 2,
			      "tg_policy_entry_keys() is %d", rc))
			continue;
		tg_policy_entry_key(c->entry, &key);
		CHECK_AT(c->line, key == keys[0],
			 "tg_policy_entry_key() is not the first key");
		if (!CHECK_AT(c->line, wire_keys(c->wire, &ak, &dk),
			      "table: MAIL FROM:<%s> does not parse", c->wire))
			continue;
		want = c->entry[0] == '@' ? dk : ak;
		CHECK_AT(c->line,
			 keys[0] == want || (rc == 2 && keys[1] == want),
			 "keys are %#llx/%#llx, the wire's is %#llx",
			 (unsigned long long)keys[0],
			 (unsigned long long)keys[1], (unsigned long long)want);
	}
}

/* ------------------------------------------------------------------ */

struct bad_case {
	int line;
	const char *entry;	/* written as line 4 of a file */
	size_t len;
	const char *want;	/* in the message, after "FILE:4: " */
};

#define B(entry, want) { __LINE__, entry, sizeof(entry) - 1, want }

static const struct bad_case bad_cases[] = {
	B("alice", "malformed sender \"alice\""),
	B("alice@", "malformed sender \"alice@\""),
	B("@", "malformed sender \"@\""),
	B("a b@c", "one sender a line, found \"a b@c\""),
	B("alice@exa mple.org", "one sender a line"),
	B("alice@example.org bob@example.org", "one sender a line"),
	B("\"a b\"@example.org", "one sender a line"),
	B("<alice@x>", "malformed sender \"<alice@x>\""),
	B("alice@x>", "malformed sender"),
	B("a@b@c", "malformed sender"),
	B("@@example.org", "malformed sender"),
	B("alice@example..org", "malformed sender"),
	B("alice@.example.org", "malformed sender"),
	B("alice@example.org.", "malformed sender"),
	B("alice@exa_mple.org", "malformed sender"),
	B("alice@[192.0.2.1]", "malformed sender"),
	B("@relay.example:alice@example.org", "malformed sender"),
	B("alice\x01@example.org", "malformed sender"),
	B("alice@example.org\rbob@example.org", "malformed sender"),
	B("\"alice@example.org", "malformed sender"),
	B("alice@example.org\0", "NUL byte"),
};

/* The senders file BODY is refused with a message that names its line LINE. */
static void refused_at(const char *body, size_t n, int line)
{
	struct tg_policy pol;
	char err[512], where[256];
	const char *path = senders_file(body, n);
	int rc = tg_policy_load(path, &pol, err, sizeof(err));

	CHECK(rc == -1, "tg_policy_load() is %d", rc);
	snprintf(where, sizeof(where), "%s:%d: ", path, line);
	CHECK_STR(err, where);
	tg_policy_free(&pol);
}

static void test_bad_lines(void)
{
	static char body[TG_ADDR_MAX + 64], entry[TG_ADDR_MAX + 16];
	struct tg_policy pol;
	char err[512], where[256];
	const char *path;
	size_t i, n;
	__u64 key;
	int rc;

	for (i = 0; i < TG_NELEM(bad_cases); i++) {
		const struct bad_case *c = &bad_cases[i];

		tg_case("bad line \"%s\"", tg_esc(c->entry, c->len));
		n = (size_t)sprintf(body, "# senders\r\n\r\nok@example.org\n");
		memcpy(body + n, c->entry, c->len);
		n += c->len;
		n += (size_t)sprintf(body + n, "\nbob@example.org\n");
		path = senders_file(body, n);
		memset(&pol, 0xff, sizeof(pol));
		err[0] = 0;
		rc = tg_policy_load(path, &pol, err, sizeof(err));
		CHECK_AT(c->line, rc == -1, "tg_policy_load() is %d", rc);
		snprintf(where, sizeof(where), "%s:4: ", path);
		CHECK_AT(c->line, !strncmp(err, where, strlen(where)),
			 "message \"%s\" does not start with \"%s\"", err,
			 where);
		CHECK_AT(c->line, strstr(err, c->want),
			 "message \"%s\" does not say \"%s\"", err, c->want);
		CHECK_AT(c->line, pol.n == 0 && pol.keys == NULL,
			 "the policy is not left empty");
		if (memchr(c->entry, 0, c->len) == NULL)
			CHECK_AT(c->line,
				 tg_policy_entry_key(c->entry, &key) == -1,
				 "tg_policy_entry_key() accepts it");
		tg_policy_free(&pol);
	}

	tg_case("bad line: address of TG_ADDR_MAX bytes, and one more");
	memset(entry, 'a', TG_ADDR_MAX);
	memcpy(entry + TG_ADDR_MAX - 4, "@b.c", 5);
	CHECK(tg_policy_entry_key(entry, &key) == 0,
	      "an entry of TG_ADDR_MAX bytes is refused");
	memset(entry, 'a', TG_ADDR_MAX + 1);
	memcpy(entry + TG_ADDR_MAX - 3, "@b.c", 5);
	n = (size_t)sprintf(body, "%s\n", entry);
	refused_at(body, n, 1);

	tg_case("bad line: the last one, without a newline");
	n = (size_t)sprintf(body, "a@b.c\n\n#\n\r\n  \n\nalice");
	refused_at(body, n, 7);
}

static void test_no_file(void)
{
	struct tg_policy pol;
	char err[512] = "", path[sizeof(tmpdir) + 32];
	int rc;

	tg_case("load: missing file");
	snprintf(path, sizeof(path), "%s/no-such-senders", tmpdir);
	memset(&pol, 0xff, sizeof(pol));
	rc = tg_policy_load(path, &pol, err, sizeof(err));
	CHECK(rc == -1, "tg_policy_load() is %d", rc);
	CHECK(!strncmp(err, path, strlen(path)) && err[strlen(path)] == ':',
	      "message \"%s\" does not start with \"%s:\"", err, path);
	CHECK_STR(err, strerror(ENOENT));
	CHECK(pol.n == 0 && pol.keys == NULL, "the policy is not left empty");

	tg_case("load: a directory");
	rc = tg_policy_load(tmpdir, &pol, err, sizeof(err));
	CHECK(rc == -1, "tg_policy_load() is %d", rc);
	CHECK(!strncmp(err, tmpdir, strlen(tmpdir)),
	      "message \"%s\" does not start with \"%s\"", err, tmpdir);
	tg_policy_free(&pol);
}

/* ------------------------------------------------------------------ */

/* Writes body to path (created or truncated in place); exits on failure. */
static void write_at(const char *path, const char *body, size_t len,
		     const char *mode)
{
	FILE *fp = fopen(path, mode);

	if (!fp || fwrite(body, 1, len, fp) != len || fclose(fp)) {
		perror(path);
		exit(2);
	}
}

static int same_keys(const struct tg_policy *a, const struct tg_policy *b)
{
	return a->n == b->n && a->idn == b->idn &&
	       (a->n == 0 || !memcmp(a->keys, b->keys, a->n * sizeof(__u64)));
}

/*
 * A senders file of the senders base .. base + n - 1 (every seventh an
 * address of an internationalized domain: two keys), each given twice
 * when dup, after a comment and a blank line. *nkeys: the keys of its
 * lines.
 */
static size_t gen_body(char *body, size_t room, int base, int n, int dup,
		       size_t *nkeys)
{
	size_t len = (size_t)snprintf(body, room, "# generated\n\n");
	int i, r;

	*nkeys = 0;
	for (i = base; i < base + n; i++)
		for (r = 0; r <= dup; r++) {
			len += (size_t)snprintf(body + len, room - len,
						i % 7 ? "u%d@example.org\n" :
						"u%d@b\xc3\xbc" "cher%d.example\n",
						i, i);
			*nkeys += i % 7 ? 1 : 2;
		}
	return len;
}

/*
 * Pass 1 against the list in force, then the list made the file's in
 * place: the same keys as tg_policy_load() of that file gives, for
 * files that keep, drop and add senders, and gain or lose the IDN mark.
 */
static void test_update(void)
{
	static char a[64 * 12000], b[64 * 12000];
	static const struct {
		int line;
		int base, n, dup;	/* the new file */
		int full;		/* too many added: pass 2 */
	} cases[] = {
		{ __LINE__, 0, 600, 0, 0 },	/* unchanged */
		{ __LINE__, 0, 600, 1, 0 },	/* each twice */
		{ __LINE__, 50, 500, 0, 0 },	/* 50 fewer at each end */
		{ __LINE__, 100, 600, 0, 0 },	/* 100 gone, 100 new */
		{ __LINE__, 1, 6, 0, 0 },	/* no IDN entry left */
		{ __LINE__, 0, 0, 0, 0 },	/* empty */
		{ __LINE__, 0, 5000, 0, 1 },	/* 4400 new: over 4096 */
	};
	struct tg_policy pol, want;
	struct tg_senders_scan s;
	char err[512], path[sizeof(tmpdir) + 32];
	size_t i, la, lb, nkeys;
	int rc;

	snprintf(path, sizeof(path), "%s/update", tmpdir);
	la = gen_body(a, sizeof(a), 0, 600, 0, &nkeys);
	for (i = 0; i < TG_NELEM(cases); i++) {
		tg_case("update: 600 senders to %d from %d%s",
			cases[i].n, cases[i].base,
			cases[i].dup ? ", each twice" : "");
		write_at(path, a, la, "w");
		rc = tg_policy_load(path, &pol, err, sizeof(err));
		if (!CHECK_AT(cases[i].line, rc == 0, "load: %s", err))
			continue;
		CHECK_EQ_AT(cases[i].line, pol.cap, pol.n);
		lb = gen_body(b, sizeof(b), cases[i].base, cases[i].n,
			      cases[i].dup, &nkeys);
		write_at(path, b, lb, "w");
		rc = tg_policy_load(path, &want, err, sizeof(err));
		CHECK_AT(cases[i].line, rc == 0, "load of the new file: %s",
			 err);
		rc = tg_policy_scan(path, &pol, &s, err, sizeof(err));
		if (!CHECK_AT(cases[i].line, rc == 0, "scan: %d %s", rc, err))
			goto next;
		CHECK_EQ_AT(cases[i].line, s.full, cases[i].full);
		CHECK_EQ_AT(cases[i].line, s.nkeys, nkeys);
		if (!s.full) {
			rc = tg_policy_update(&pol, &s);
			CHECK_AT(cases[i].line, rc == 0, "update is %d", rc);
		} else {
			tg_policy_clear(&pol);
			rc = tg_policy_read(&s, &pol, err, sizeof(err));
			CHECK_AT(cases[i].line, rc == 0, "read: %d %s", rc,
				 err);
		}
		CHECK_AT(cases[i].line, same_keys(&pol, &want),
			 "%zu keys (idn %d), the file has %zu (idn %d)",
			 pol.n, pol.idn, want.n, want.idn);
		CHECK_EQ_AT(cases[i].line, pol.cap, pol.n);
		CHECK_AT(cases[i].line, s.fp == NULL && s.seen == NULL,
			 "the scan is not freed");
next:
		tg_policy_free(&pol);
		tg_policy_free(&want);
	}

	/* The merge's ends: new keys below and above every kept one. */
	tg_case("update: the new keys sort before and after all the others");
	lb = gen_body(b, sizeof(b), 0, 300, 0, &nkeys);
	write_at(path, b, lb, "w");
	if (!CHECK(tg_policy_load(path, &want, err, sizeof(err)) == 0 &&
		   tg_policy_load(path, &pol, err, sizeof(err)) == 0,
		   "load: %s", err))
		return;
	for (i = 0; i < 10; i++) {
		tg_policy_remove(&pol, want.keys[i]);
		tg_policy_remove(&pol, want.keys[want.n - 1 - i]);
	}
	rc = tg_policy_scan(path, &pol, &s, err, sizeof(err));
	CHECK(rc == 0 && !s.full && s.nadded == 20, "scan: %d, %zu added",
	      rc, s.nadded);
	if (rc == 0)
		CHECK(tg_policy_update(&pol, &s) == 0 && same_keys(&pol, &want),
		      "%zu keys after the update, the file has %zu", pol.n,
		      want.n);
	tg_policy_free(&pol);
	tg_policy_free(&want);
}

/*
 * Pass 1 of a file that cannot be put in force leaves the list in force
 * as it was, with the message tg_policy_load() gives; so does one that
 * is not a regular file.
 */
static void test_scan_refused(void)
{
	static char body[64 * 700];
	struct tg_policy pol, copy = { 0 }, other;
	struct tg_senders_scan s;
	char err[512], err2[512], path[sizeof(tmpdir) + 32];
	size_t n, nkeys;
	int rc;

	tg_case("scan: a bad line leaves the list in force");
	snprintf(path, sizeof(path), "%s/refused", tmpdir);
	n = gen_body(body, sizeof(body), 0, 600, 0, &nkeys);
	write_at(path, body, n, "w");
	if (!CHECK(tg_policy_load(path, &pol, err, sizeof(err)) == 0,
		   "load: %s", err))
		return;
	copy.keys = malloc(pol.n * sizeof(__u64));
	if (!copy.keys)
		exit(2);
	memcpy(copy.keys, pol.keys, pol.n * sizeof(__u64));
	copy.n = pol.n;
	copy.idn = pol.idn;
	write_at(path, "extra@example.org\nnot-an-address\n", 33, "a");
	rc = tg_policy_scan(path, &pol, &s, err, sizeof(err));
	CHECK(rc == -1, "scan is %d", rc);
	snprintf(err2, sizeof(err2), "%s:%d: malformed sender "
		 "\"not-an-address\"", path, 2 + 600 + 2);
	CHECK_STR(err, err2);
	CHECK(tg_policy_load(path, &other, err2, sizeof(err2)) == -1 &&
	      !strcmp(err, err2), "load says \"%s\", scan \"%s\"", err2, err);
	CHECK(s.fp == NULL && s.seen == NULL && s.added == NULL,
	      "a refused scan holds something");
	CHECK(same_keys(&pol, &copy), "the list in force changed");
	tg_policy_free(&pol);
	tg_policy_free(&copy);

	tg_case("scan: not a regular file");
	rc = tg_policy_scan("/dev/null", NULL, &s, err, sizeof(err));
	CHECK(rc == -1, "scan of /dev/null is %d", rc);
	CHECK_STR(err, "/dev/null: not a regular file");
}

/*
 * Pass 2 reads the file pass 1 read, or says it changed: appended to,
 * rewritten in place, truncated. A file renamed over it is another
 * file: pass 2 reads the one pass 1 opened, whole.
 */
static void test_changed(void)
{
	static const char one[] = "a@x.org\nb@x.org\n@c.org\n";
	static const struct {
		int line;
		const char *how;
		const char *body;	/* written after pass 1 */
		const char *mode;	/* "a", "w", or "r" for a rename */
		int want;
	} cases[] = {
		{ __LINE__, "appended", "d@x.org\n", "a", TG_POLICY_CHANGED },
		{ __LINE__, "rewritten, same size", "a@x.org\nb@x.org\n@d.org\n",
		  "w", TG_POLICY_CHANGED },
		{ __LINE__, "truncated", "a@x.org\n", "w", TG_POLICY_CHANGED },
		{ __LINE__, "rewritten, its mtime put back",
		  "a@x.org\nb@x.org\n#c.org\n", "t", TG_POLICY_CHANGED },
		{ __LINE__, "emptied", "", "w", TG_POLICY_CHANGED },
		{ __LINE__, "a new file renamed over it", "z@x.org\n", "r", 0 },
	};
	struct tg_policy pol, want;
	struct tg_senders_scan s;
	char err[512], path[sizeof(tmpdir) + 32], tmp[sizeof(tmpdir) + 32];
	size_t i;
	int rc;

	snprintf(path, sizeof(path), "%s/changed", tmpdir);
	snprintf(tmp, sizeof(tmp), "%s/changed.new", tmpdir);
	write_at(path, one, sizeof(one) - 1, "w");
	tg_policy_load(path, &want, err, sizeof(err));
	for (i = 0; i < TG_NELEM(cases); i++) {
		tg_case("pass 2: the file %s between the passes",
			cases[i].how);
		write_at(path, one, sizeof(one) - 1, "w");
		rc = tg_policy_scan(path, NULL, &s, err, sizeof(err));
		if (!CHECK_AT(cases[i].line, rc == 0 && s.full,
			      "scan: %d %s", rc, err)) {
			tg_policy_scan_free(&s);
			continue;
		}
		/* A new mtime even on a file system with coarse times. */
		usleep(10000);
		if (cases[i].mode[0] == 'r') {
			write_at(tmp, cases[i].body, strlen(cases[i].body),
				 "w");
			if (rename(tmp, path) < 0)
				perror(tmp);
		} else if (cases[i].mode[0] == 't') {
			struct timespec ts[2] = { s.st.st_atim, s.st.st_mtim };

			write_at(path, cases[i].body, strlen(cases[i].body),
				 "w");
			if (utimensat(AT_FDCWD, path, ts, 0) < 0)
				perror(path);
		} else {
			write_at(path, cases[i].body, strlen(cases[i].body),
				 cases[i].mode);
		}
		memset(&pol, 0, sizeof(pol));
		err[0] = 0;
		rc = tg_policy_read(&s, &pol, err, sizeof(err));
		CHECK_EQ_AT(cases[i].line, rc, cases[i].want);
		if (rc == TG_POLICY_CHANGED) {
			CHECK_STR(err, "changed while it was read");
			CHECK_AT(cases[i].line, pol.n == 0 && !pol.keys,
				 "a changed file left keys");
		} else {
			CHECK_AT(cases[i].line, same_keys(&pol, &want),
				 "pass 2 did not read the file pass 1 read");
		}
		CHECK_AT(cases[i].line, s.fp == NULL, "the file is left open");
		tg_policy_free(&pol);
	}
	tg_policy_free(&want);
}

/* ------------------------------------------------------------------ */

/* A senders table of 2^bits homes in a new BPF array, or -errno. */
static int table_new(struct tg_stab *t, __u32 bits)
{
	int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "tg_test", sizeof(__u32),
				sizeof(struct tg_sbucket),
				tg_stab_buckets(bits), NULL);

	if (fd < 0)
		return -errno;
	tg_stab_init(t, fd, bits);
	return 0;
}

/* Every key the table holds, through the callback of tg_stab_prune(). */
struct census {
	const struct tg_policy *pol;
	size_t n, wrong;
	__u64 bad;
};

static int census_key(void *ctx, __u64 key)
{
	struct census *c = ctx;
	int v = tg_policy_key_value(c->pol, key);

	if (key == TG_KEY_IDN && c->pol->idn)
		return 1;	/* the mark a list with an IDN entry needs */

	c->n++;
	if (!v && !c->wrong++)
		c->bad = key;
	return v ? v : TG_POL_GUARANTEED;	/* change nothing it holds */
}

/* Does the table hold exactly the keys of pol, each with its value? */
static int map_holds(struct tg_stab *t, const struct tg_policy *pol,
		     char *why, size_t whylen)
{
	struct census c = { .pol = pol };
	size_t i, want;
	int v;

	if (tg_stab_prune(t, census_key, &c) < 0) {
		snprintf(why, whylen, "cannot read the table");
		return 0;
	}
	if (c.wrong) {
		snprintf(why, whylen, "map holds %#llx, not in the policy",
			 (unsigned long long)c.bad);
		return 0;
	}
	for (i = 0; i < pol->n; i++) {
		v = tg_stab_get(t, pol->keys[i]);
		if (v != tg_policy_key_value(pol, pol->keys[i])) {
			snprintf(why, whylen, "map has %d for %#llx", v,
				 (unsigned long long)pol->keys[i]);
			return 0;
		}
	}
	/* A key both guaranteed and exempt is in the map once. */
	for (i = 0, want = pol->n; i < pol->nexempt; i++)
		want += !tg_policy_has_key(pol, pol->exempt[i]);
	if (c.n != want) {
		snprintf(why, whylen, "map holds %zu keys, policy %zu", c.n,
			 want);
		return 0;
	}
	return 1;
}

static void test_sync(void)
{
	static const char one[] = "a@x.org\nb@x.org\n@c.org\n";
	static const char two[] = "b@x.org\n@c.org\nd@x.org\n@e.org\n";
	struct tg_policy p1 = { 0 }, p2 = { 0 }, none = { 0 };
	char err[512] = "", why[256] = "";
	struct tg_stab t;
	int rc;

	rc = table_new(&t, TG_STAB_MINBITS);
	if (rc < 0) {
		tg_skip("tg_policy_sync: cannot create a BPF map: %s",
			strerror(-rc));
		return;
	}
	tg_case("sync: into an empty map, then to another policy");
	if (!CHECK(tg_policy_load(senders_file(one, sizeof(one) - 1), &p1,
				  err, sizeof(err)) == 0 &&
		   tg_policy_load(senders_file(two, sizeof(two) - 1), &p2,
				  err, sizeof(err)) == 0,
		   "tg_policy_load(): %s", err))
		goto out;
	rc = tg_policy_sync(&t, NULL, &p1);
	CHECK(rc == 0, "tg_policy_sync(NULL, one) is %d", rc);
	CHECK(map_holds(&t, &p1, why, sizeof(why)), "after one: %s", why);
	rc = tg_policy_sync(&t, &p1, &p2);
	CHECK(rc == 0, "tg_policy_sync(one, two) is %d", rc);
	CHECK(map_holds(&t, &p2, why, sizeof(why)), "after two: %s", why);
	/* A table left by another agent: what the new policy lacks goes. */
	tg_case("sync: a table of unknown content, as a pinned one is");
	rc = tg_policy_sync(&t, NULL, &p1);
	CHECK(rc == 0, "tg_policy_sync(NULL, one) over two is %d", rc);
	CHECK(map_holds(&t, &p1, why, sizeof(why)), "after one again: %s",
	      why);
	rc = tg_policy_sync(&t, &p1, &none);
	CHECK(rc == 0, "tg_policy_sync(one, none) is %d", rc);
	CHECK(map_holds(&t, &none, why, sizeof(why)), "after none: %s", why);
out:
	tg_policy_free(&p1);
	tg_policy_free(&p2);
	close(t.fd);
}

/*
 * The sync of a reload (old NULL): the walk that prunes the table notes
 * which of the new list's keys it holds, and only the others are
 * written. Over a table of another list (3000 keys, buckets spilled,
 * an exempt key that is guaranteed too, the IDN mark), the table ends
 * as the new list says; then the list is read back from the table.
 */
static void test_sync_walk(void)
{
	static char a[64 * 3200], b[64 * 3200];
	struct tg_policy pa, pb, back = { 0 }, none = { 0 };
	char err[512], why[256] = "", path[sizeof(tmpdir) + 32];
	__u64 ex[2];
	struct tg_stab t;
	size_t la, lb, nkeys, i, lacking;
	int rc, inc;

	rc = table_new(&t, tg_stab_bits(4000));
	if (rc < 0) {
		tg_skip("sync walk: cannot create a BPF map: %s",
			strerror(-rc));
		return;
	}
	tg_case("sync walk: 3000 senders, then 200 gone and 200 new");
	snprintf(path, sizeof(path), "%s/walk", tmpdir);
	la = gen_body(a, sizeof(a), 0, 2600, 0, &nkeys);
	lb = gen_body(b, sizeof(b), 200, 2600, 0, &nkeys);
	write_at(path, a, la, "w");
	rc = tg_policy_load(path, &pa, err, sizeof(err));
	write_at(path, b, lb, "w");
	rc |= tg_policy_load(path, &pb, err, sizeof(err));
	if (!CHECK(rc == 0, "load: %s", err))
		goto out;
	/* exempt: one key of both lists, and SRS0= */
	ex[0] = pb.keys[pb.n / 2];
	ex[1] = TG_KEY_SRS0;
	CHECK(tg_policy_set_exempt(&pa, ex, 2) == 0 &&
	      tg_policy_set_exempt(&pb, ex, 2) == 0, "set_exempt");
	rc = tg_policy_sync_within(&t, NULL, &pa, UINT_MAX, &inc);
	CHECK(rc == (int)pa.n && !inc, "sync into an empty table is %d", rc);
	CHECK(map_holds(&t, &pa, why, sizeof(why)), "after a: %s", why);
	rc = tg_policy_sync_within(&t, NULL, &pb, UINT_MAX, &inc);
	CHECK(rc == (int)pb.n && !inc, "sync to b is %d, want %zu", rc, pb.n);
	CHECK(map_holds(&t, &pb, why, sizeof(why)), "after b: %s", why);
	CHECK(tg_stab_get(&t, ex[0]) == TG_POL_EXEMPT,
	      "a guaranteed key that is exempt is not exempt in the map");
	CHECK(tg_stab_get(&t, TG_KEY_IDN) == 1, "no IDN mark");

	tg_case("sync walk: the same list again");
	rc = tg_policy_sync_within(&t, NULL, &pb, UINT_MAX, &inc);
	CHECK(rc == (int)pb.n, "sync of b over b is %d", rc);
	CHECK(map_holds(&t, &pb, why, sizeof(why)), "after b again: %s", why);

	tg_case("read back: the guaranteed keys and the IDN mark");
	back.keys = malloc(8);	/* replaced, not leaked */
	back.n = back.cap = 1;
	rc = tg_policy_from_map(&t, &back);
	CHECK(rc == 0, "tg_policy_from_map() is %d", rc);
	/* ex[0], exempt in the map, comes back as exempt only */
	for (i = 0, lacking = 0; i < pb.n; i++)
		lacking += !tg_policy_has_key(&back, pb.keys[i]);
	CHECK(back.n == pb.n - 1 && lacking == 1 &&
	      !tg_policy_has_key(&back, ex[0]) && back.idn && sorted_unique(&back),
	      "%zu keys read back of %zu, %zu lacking, idn %d", back.n, pb.n,
	      lacking, back.idn);
	CHECK_EQ(back.cap, back.n);
	CHECK(tg_stab_put(&t, TG_SENDERS_INCOMPLETE, 1) == 0 &&
	      tg_policy_from_map(&t, &back) == 1,
	      "a table marked incomplete is not said to be");
	tg_stab_del(&t, TG_SENDERS_INCOMPLETE);

	tg_case("sync walk: to an empty list");
	rc = tg_policy_sync_within(&t, NULL, &none, UINT_MAX, &inc);
	CHECK(rc == 0, "sync to none is %d", rc);
	CHECK(map_holds(&t, &none, why, sizeof(why)), "after none: %s", why);
	rc = tg_policy_from_map(&t, &back);
	CHECK(rc == 0 && back.n == 0 && back.keys == NULL && !back.idn,
	      "read back from an empty table: %d, %zu keys", rc, back.n);
out:
	tg_policy_free(&pa);
	tg_policy_free(&pb);
	tg_policy_free(&back);
	close(t.fd);
}

/* A key whose home is bucket home of a table of 2^bits homes. */
static __u64 key_at(__u32 home, __u32 bits, __u64 salt)
{
	return ((__u64)home << (64 - bits)) |
	       ((salt * 0x9e3779b97f4a7c15ULL) >> bits) | 1;
}

/*
 * The table under load: keys crowded into one home spill into the next
 * buckets and are found there; a key beyond reach is refused (-ENOSPC),
 * never lost; removing keys leaves the others findable; random puts and
 * removes agree with a plain list at every step.
 */
static void test_table(void)
{
	enum { BITS = 6, N = 400 };
	static __u64 keys[N];
	static int in[N];
	struct tg_stab t;
	int rc, i, j, bad = 0, v;
	unsigned seed = 12345;

	rc = table_new(&t, BITS);
	if (rc < 0) {
		tg_skip("senders table: cannot create a BPF map: %s",
			strerror(-rc));
		return;
	}
	tg_case("table: keys of one home spill over, within reach");
	for (i = 0; i < TG_STAB_WAYS * TG_STAB_REACH; i++) {
		rc = tg_stab_put(&t, key_at(5, BITS, (__u64)i + 1),
				 TG_POL_GUARANTEED);
		if (rc) {
			CHECK(0, "put #%d of home 5 is %d", i, rc);
			break;
		}
	}
	rc = tg_stab_put(&t, key_at(5, BITS, 1000), TG_POL_GUARANTEED);
	CHECK(rc == -ENOSPC, "a key beyond reach: put is %d, not -ENOSPC", rc);
	CHECK(tg_stab_get(&t, key_at(5, BITS, 1000)) == 0,
	      "a refused key is found");
	for (i = 0; i < TG_STAB_WAYS * TG_STAB_REACH; i++)
		if (tg_stab_get(&t, key_at(5, BITS, (__u64)i + 1)) !=
		    TG_POL_GUARANTEED)
			bad++;
	CHECK(bad == 0, "%d spilled keys not found", bad);
	/* Emptying the home bucket leaves the spilled keys found. */
	for (i = 0; i < TG_STAB_WAYS; i++)
		CHECK(tg_stab_del(&t, key_at(5, BITS, (__u64)i + 1)) == 0,
		      "del #%d fails", i);
	for (bad = 0, i = TG_STAB_WAYS; i < TG_STAB_WAYS * TG_STAB_REACH; i++)
		if (tg_stab_get(&t, key_at(5, BITS, (__u64)i + 1)) !=
		    TG_POL_GUARANTEED)
			bad++;
	CHECK(bad == 0, "%d keys lost after the home bucket emptied", bad);
	CHECK(tg_stab_put(&t, key_at(5, BITS, 1000), TG_POL_EXEMPT) == 0 &&
	      tg_stab_get(&t, key_at(5, BITS, 1000)) == TG_POL_EXEMPT,
	      "a freed slot is not used again");
	CHECK(tg_stab_put(&t, key_at(5, BITS, 1000), TG_POL_GUARANTEED) == 0 &&
	      tg_stab_get(&t, key_at(5, BITS, 1000)) == TG_POL_GUARANTEED,
	      "a policy is not changed in place");
	CHECK(tg_stab_put(&t, 0, TG_POL_GUARANTEED) == -EINVAL &&
	      tg_stab_get(&t, 0) == 0, "key 0 is taken");
	close(t.fd);

	tg_case("table: random puts and removes agree with a list");
	if (table_new(&t, BITS) < 0)
		return;
	for (i = 0; i < N; i++)
		keys[i] = key_at((unsigned)rand_r(&seed) % (1U << BITS), BITS,
				 (__u64)rand_r(&seed) << 20 | (unsigned)i);
	for (bad = 0, j = 0; j < 4000 && !bad; j++) {
		i = rand_r(&seed) % N;
		if (in[i]) {
			bad |= tg_stab_del(&t, keys[i]) != 0;
			in[i] = 0;
		} else {
			rc = tg_stab_put(&t, keys[i], TG_POL_GUARANTEED);
			bad |= rc != 0 && rc != -ENOSPC;
			in[i] = rc == 0;
		}
		for (i = 0; i < N && !bad; i++) {
			v = tg_stab_get(&t, keys[i]);
			if (v != (in[i] ? TG_POL_GUARANTEED : 0))
				bad = 1;
		}
	}
	CHECK(!bad, "after %d steps the table and the list differ", j);
	close(t.fd);
}

/* tg_senders_add(): a line of its own, also after a last line without LF. */
static void test_append(void)
{
	static const char body[] = "a@x.org\n# note\nb@x.org";
	struct tg_policy pol = { 0 };
	char err[512] = "";
	const char *path = senders_file(body, sizeof(body) - 1);

	tg_case("add: appended after a last line without a newline");
	CHECK(tg_senders_add(path, "c@x.org", err, sizeof(err)) == 0 &&
	      tg_senders_add(path, "@y.org", err, sizeof(err)) == 0,
	      "tg_senders_add(): %s", err);
	CHECK(tg_policy_load(path, &pol, err, sizeof(err)) == 0,
	      "tg_policy_load() after add: %s", err);
	CHECK_EQ(pol.n, 4);
	CHECK(wire_match(&pol, "b@x.org") == 1 &&
	      wire_match(&pol, "c@x.org") == 1 &&
	      wire_match(&pol, "z@y.org") == 1, "an added sender is missing");
	tg_policy_free(&pol);
	CHECK(tg_senders_add("/nonexistent/senders", "c@x.org", err,
			     sizeof(err)) == -1 &&
	      strstr(err, "/nonexistent/senders"),
	      "a missing file: \"%s\" does not name it", err);
}

/*
 * The exempt list wins over the senders, on the wire as in the kernel
 * map: an exempt address inside a guaranteed domain, an exempt domain,
 * and SRS-rewritten senders of a guaranteed domain.
 */
static void test_exempt(void)
{
	static const char body[] = "@example.org\nbob@other.org\n"
				   "carol@lists.example.org\n";
	static const char *const exempt[] = { "lists@example.org",
					      "@lists.example.org", "SRS0=",
					      "srs1=" };
	static const struct {
		const char *addr;
		int want;	/* TG_POL_* or 0 */
	} cases[] = {
		{ "alice@example.org", TG_POL_GUARANTEED },
		{ "Lists+x@EXAMPLE.org", TG_POL_EXEMPT },
		{ "carol@lists.example.org", TG_POL_EXEMPT },
		{ "SRS0=HHH=TT=other.test=joe@example.org", TG_POL_EXEMPT },
		{ "srs0=hhh=tt=other.test=joe@example.org", TG_POL_EXEMPT },
		{ "SRS1=X=other.test==HHH=TT=b.test=joe@example.org",
		  TG_POL_EXEMPT },
		{ "\"SRS0=HHH=TT=o.test=joe\"@example.org", TG_POL_EXEMPT },
		{ "SRS2=HHH=TT=other.test=joe@example.org", TG_POL_GUARANTEED },
		{ "SRS0@example.org", TG_POL_GUARANTEED },
		{ "xSRS0=a@example.org", TG_POL_GUARANTEED },
		{ "SRS0=a@nobody.test", 0 },
		{ "bob@other.org", TG_POL_GUARANTEED },
	};
	struct tg_policy pol = { 0 };
	__u64 keys[4], ak, dk;
	char err[512] = "";
	const char *by;
	struct tg_stab t;
	size_t i;

	tg_case("exempt: addresses, domains and SRS win over the senders");
	for (i = 0; i < 4; i++)
		if (!CHECK(tg_policy_exempt_key(exempt[i], &keys[i]) == 0,
			   "tg_policy_exempt_key(%s) fails", exempt[i]))
			return;
	CHECK(tg_policy_exempt_key("SRS0", &ak) == -1 &&
	      tg_policy_exempt_key("SRS0=x", &ak) == -1 &&
	      tg_policy_exempt_key("@", &ak) == -1,
	      "tg_policy_exempt_key() accepts a malformed entry");
	if (!CHECK(tg_policy_load(senders_file(body, sizeof(body) - 1), &pol,
				  err, sizeof(err)) == 0,
		   "tg_policy_load(): %s", err))
		return;
	CHECK(tg_policy_set_exempt(&pol, keys, 4) == 0, "set_exempt fails");
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (!CHECK(wire_keys(cases[i].addr, &ak, &dk),
			   "%s: not a MAIL command", cases[i].addr))
			continue;
		CHECK(tg_policy_lookup(&pol, ak, dk, wire_srs, &by) ==
			      cases[i].want,
		      "%s: tg_policy_lookup() is not %d (srs %d)",
		      cases[i].addr, cases[i].want, wire_srs);
	}
	if (table_new(&t, TG_STAB_MINBITS) == 0) {
		CHECK(tg_policy_sync(&t, NULL, &pol) == 0, "sync fails");
		CHECK(tg_stab_get(&t, keys[2]) == TG_POL_EXEMPT,
		      "SRS0= is not exempt in the map");
		/*
		 * "carol@lists.example.org" is listed; her domain is exempt,
		 * which the kernel finds by the domain's key.
		 */
		ak = tg_addr_key("carol@lists.example.org", 23, &dk);
		CHECK(tg_stab_get(&t, ak) == TG_POL_GUARANTEED,
		      "carol is not guaranteed in the map");
		CHECK(tg_stab_get(&t, dk) == TG_POL_EXEMPT,
		      "@lists.example.org is not exempt in the map");
		ak = tg_addr_key("bob@other.org", 13, &dk);
		CHECK(tg_stab_get(&t, ak) == TG_POL_GUARANTEED,
		      "bob is not guaranteed in the map");
		CHECK(tg_policy_map_rule(&t, ak, dk, 0) == TG_RULE_ADDR,
		      "the rule on the map does not find bob");
		close(t.fd);
	}
	tg_policy_free(&pol);
}

/*
 * A policy built key by key (the PostgreSQL source): appended unsorted
 * with duplicates, then finished; exempt keys in and out one at a time;
 * an entry's keys and IDN mark, as an exempt entry or not.
 */
static void test_built(void)
{
	static const __u64 in[] = { 9, 3, 7, 3, 1, 9, 5 };
	static const __u64 want[] = { 1, 3, 5, 7, 9 };
	struct tg_policy pol = { 0 };
	__u64 keys[2];
	size_t i;
	int idn = -1, n;

	tg_case("policy built by append, finish");
	for (i = 0; i < TG_NELEM(in); i++)
		CHECK_EQ(tg_policy_append(&pol, in[i]), 0);
	tg_policy_finish(&pol);
	CHECK_EQ(pol.n, TG_NELEM(want));
	for (i = 0; i < pol.n && i < TG_NELEM(want); i++)
		CHECK_EQ(pol.keys[i], want[i]);
	CHECK(tg_policy_has_key(&pol, 7) && !tg_policy_has_key(&pol, 4),
	      "has_key of 7 and 4");
	CHECK_EQ(tg_policy_insert(&pol, 4), 0);
	CHECK_EQ(tg_policy_insert(&pol, 4), 1);
	CHECK_EQ(tg_policy_remove(&pol, 1), 0);
	CHECK_EQ(tg_policy_remove(&pol, 1), 1);
	CHECK(pol.n == 5 && pol.keys[0] == 3 && pol.keys[1] == 4 &&
	      pol.keys[4] == 9, "insert 4, remove 1: n %zu", pol.n);

	tg_case("exempt keys in and out, in place");
	CHECK_EQ(tg_policy_exempt_insert(&pol, 20), 0);
	CHECK_EQ(tg_policy_exempt_insert(&pol, 10), 0);
	CHECK_EQ(tg_policy_exempt_insert(&pol, 10), 1);
	CHECK(pol.nexempt == 2 && pol.exempt[0] == 10 && pol.exempt[1] == 20,
	      "exempt sorted: %zu", pol.nexempt);
	CHECK_EQ(tg_policy_key_value(&pol, 10), TG_POL_EXEMPT);
	CHECK_EQ(tg_policy_exempt_remove(&pol, 10), 0);
	CHECK_EQ(tg_policy_exempt_remove(&pol, 10), 1);
	CHECK_EQ(tg_policy_key_value(&pol, 10), 0);
	CHECK_EQ(pol.nexempt, 1);
	tg_policy_free(&pol);

	tg_case("entry_parse: kinds and the IDN mark");
	n = tg_policy_entry_parse("SRS0=", 1, keys, &idn);
	CHECK(n == 1 && keys[0] == TG_KEY_SRS0 && idn == 0, "SRS0= exempt: %d",
	      n);
	CHECK_EQ(tg_policy_entry_parse("SRS0=", 0, keys, &idn), (__u64)-1);
	n = tg_policy_entry_parse("@b\xc3\xbc" "cher.example", 0, keys, &idn);
	CHECK(n == 2 && idn == 1, "U-label domain: %d keys, idn %d", n, idn);
	n = tg_policy_entry_parse("Alice@Example.org", 0, keys, &idn);
	CHECK(n == 1 && idn == 0, "ASCII address: %d keys, idn %d", n, idn);
}

static void cleanup(void)
{
	char path[sizeof(tmpdir) + 300];
	struct dirent *d;
	DIR *dir = opendir(tmpdir);

	while (dir && (d = readdir(dir)) != NULL) {
		if (d->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", tmpdir, d->d_name);
		unlink(path);
	}
	if (dir)
		closedir(dir);
	if (rmdir(tmpdir) < 0)
		fprintf(stderr, "warning: cannot remove %s: %s\n", tmpdir,
			strerror(errno));
}

int main(void)
{
	int status;

	if (!mkdtemp(tmpdir)) {
		perror(tmpdir);
		return 2;
	}
	test_sample();
	test_empty();
	test_many();
	test_entry_key();
	test_idn();
	test_bad_lines();
	test_no_file();
	test_update();
	test_scan_refused();
	test_changed();
	test_sync();
	test_sync_walk();
	test_table();
	test_append();
	test_exempt();
	test_built();
	status = tg_test_done();
	cleanup();
	return status;
}
