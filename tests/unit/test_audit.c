// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	test_audit - the audit trail's verdicts on held flows, and the
 *	typed replies they come from
 * SYNOPSIS
 *	build/tests/test_audit
 * DESCRIPTION
 *	A held flow's conversation is fed to agent/tg_audit.c as tg_inject
 *	feeds it (the commands by tg_audit_line(), tlsguardd's replies by
 *	tg_audit_held()), with reply texts that an administrator set in
 *	tlsguard.conf, and the record written is checked: its verdict must
 *	follow the reply's kind, never the words of its text. A weak-TLS
 *	text without the word "negotiated" is still held-weak-tls, a no-TLS
 *	text with it is still held-no-tls, and a reject code of 554 is a
 *	reject.
 *
 *	The replies of lib/tg_resp.c are checked as the wire sees them:
 *	"CODE DSN TEXT\r\n", $tls_version replaced. Last, the address
 *	reader both the audit trail and the replies use (lib/tg_mailaddr.c,
 *	the kernel's parser through tg_path()) on MAIL and RCPT lines.
 * DIAGNOSTICS
 *	One line per failed check on stderr; "N passed, M failed" on stdout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tlsguard.h"
#include "tg_audit.h"
#include "tg_json.h"
#include "tg_mailaddr.h"
#include "tg_policy.h"
#include "tg_resp.h"
#include "tg_smtp.h"
#include "tg_test.h"

static char path[] = "/tmp/tg_audit_test.XXXXXX";

static void feed(struct tg_audit *au, __u64 cookie, __u32 flags,
		 const char *text)
{
	tg_audit_line(au, cookie, flags, text, strlen(text));
}

/* The last record of the file, whole. */
static char *last_record(void)
{
	static char line[8192];
	char buf[8192];
	FILE *fp = fopen(path, "r");

	line[0] = 0;
	while (fp && fgets(buf, sizeof(buf), fp))
		snprintf(line, sizeof(line), "%s", buf);
	if (fp)
		fclose(fp);
	return line;
}

/*
 * One held message on a fresh flow: greeting and EHLO from the kernel,
 * then MAIL, RCPT and QUIT answered by tlsguardd, the MAIL with r.
 */
static void held_flow(struct tg_audit *au, __u64 cookie,
		      const struct tg_resp *r)
{
	struct tg_resp seq = { TG_RK_PROTOCOL, 503, "5.5.1",
			       "Error: need MAIL command" };
	struct tg_resp bye = { TG_RK_PROTOCOL, 221, "2.0.0", "Bye" };

	feed(au, cookie, TG_LINE_REPLY, "220 mx.test ESMTP");
	feed(au, cookie, 0, "EHLO client.test");
	feed(au, cookie, TG_LINE_REPLY, "250 mx.test");
	feed(au, cookie, 0, "MAIL FROM:<joe@guarded.test> SIZE=100");
	tg_audit_held(au, cookie, r);
	feed(au, cookie, 0, "RCPT TO:<u@remote.test>");
	tg_audit_held(au, cookie, &seq);
	feed(au, cookie, 0, "QUIT");
	tg_audit_held(au, cookie, &bye);
	tg_audit_closed(au, cookie);
}

/*
 * held_flow() with the reply tg_resp_held() makes of RS for DEFER and
 * VERSION, which must be of KIND: the record it leaves.
 */
static char *held_record(struct tg_audit *au, __u64 cookie,
			 const struct tg_replies *rs, int defer,
			 const char *version, int kind)
{
	struct tg_resp r;

	tg_resp_held(&r, rs, defer, version);
	CHECK_EQ(r.kind, kind);
	held_flow(au, cookie, &r);
	return last_record();
}

static void test_verdicts(struct tg_audit *au)
{
	struct tg_replies rs;
	char *rec;

	tg_replies_defaults(&rs);
	rs.reject_code = 554;
	snprintf(rs.weak_text, sizeof(rs.weak_text),
		 "TLS too old ($tls_version); 1.2 or higher wanted");
	snprintf(rs.notls_text, sizeof(rs.notls_text),
		 "no TLS was negotiated with this host");

	tg_case("weak_tls_text without \"negotiated\": held-weak-tls");
	rec = held_record(au, 1, &rs, 0, "TLSv1.0", TG_RK_HELD_WEAK_TLS);
	CHECK_STR(rec, "\"verdict\":\"held-weak-tls\"");
	CHECK_STR(rec, "\"mail_reply\":\"554 5.7.10 TLS too old (TLSv1.0); "
		       "1.2 or higher wanted\"");
	CHECK_STR(rec, "\"sender\":\"joe@guarded.test\"");
	CHECK_STR(rec, "\"guaranteed\":true");

	tg_case("notls_text with \"negotiated\": held-no-tls");
	rec = held_record(au, 2, &rs, 0, NULL, TG_RK_HELD_NO_TLS);
	CHECK_STR(rec, "\"verdict\":\"held-no-tls\"");
	CHECK_STR(rec, "\"mail_reply\":\"554 5.7.10 no TLS was negotiated "
		       "with this host\"");
	CHECK_STR(rec, "\"recipients\":[{\"address\":\"u@remote.test\","
		       "\"reply\":\"503 5.5.1 Error: need MAIL command\"}]");

	tg_case("defer (another MX host offers TLS): deferred");
	CHECK_STR(held_record(au, 3, &rs, 1, "TLSv1.1", TG_RK_DEFER_MX),
		  "\"verdict\":\"deferred\"");
}

/*
 * A hostile host's greeting in Latin-1, with a control character and a
 * truncated sequence: the record stays valid UTF-8 and valid JSON, each
 * stray byte as \u00XX, well-formed UTF-8 as it came; the host is the
 * "remote" object, never a top-level "host" string.
 */
static void test_utf8(struct tg_audit *au)
{
	struct tg_resp bye = { TG_RK_PROTOCOL, 221, "2.0.0", "Bye" };
	const unsigned char *p;
	char *rec;
	size_t n;

	tg_case("8-bit greeting: a valid UTF-8 record, stray bytes escaped");
	feed(au, 9, TG_LINE_REPLY, "220 mx\xe9\x01\xc3\xa9\xe2\x82 ESMTP");
	feed(au, 9, 0, "MAIL FROM:<joe@guarded.test>");
	feed(au, 9, TG_LINE_REPLY, "250 2.1.0 \xff\xfe Ok");
	feed(au, 9, 0, "QUIT");
	tg_audit_held(au, 9, &bye);
	tg_audit_closed(au, 9);
	rec = last_record();
	CHECK_STR(rec, "\"remote\":{\"name\":\"mx\\u00e9\\u0001\xc3\xa9"
		       "\\u00e2\\u0082\",");
	CHECK_STR(rec, "\"mail_reply\":\"250 2.1.0 \\u00ff\\u00fe Ok\"");
	CHECK(strstr(rec, "\"host\":") == NULL, "a top-level host: %s", rec);
	CHECK(strncmp(rec, "{\"schema_version\":2,\"time\":\"", 28) == 0,
	      "record begins %.40s", rec);
	for (p = (const unsigned char *)rec; *p; p += n) {
		n = tg_utf8_valid(p, strlen((const char *)p));
		if (!n) {
			CHECK(0, "invalid UTF-8 at byte %zu",
			      (size_t)(p - (const unsigned char *)rec));
			break;
		}
	}

	tg_case("tg_utf8_valid: RFC 3629's ill-formed sequences");
	CHECK_EQ(tg_utf8_valid((const unsigned char *)"\xc0\xaf", 2), 0);
	CHECK_EQ(tg_utf8_valid((const unsigned char *)"\xe0\x80\xaf", 3), 0);
	CHECK_EQ(tg_utf8_valid((const unsigned char *)"\xed\xa0\x80", 3), 0);
	CHECK_EQ(tg_utf8_valid((const unsigned char *)"\xf4\x90\x80\x80", 4),
		 0);
	CHECK_EQ(tg_utf8_valid((const unsigned char *)"\xf0\x9f\x98\x80", 4),
		 4);
	CHECK_EQ(tg_utf8_valid((const unsigned char *)"\xe2\x82\xac", 2), 0);
}

static void test_lines(void)
{
	struct tg_replies rs;
	struct tg_resp r;
	char line[TG_RESP_LINE];
	size_t n;

	tg_case("the default replies on the wire");
	tg_replies_defaults(&rs);
	tg_resp_held(&r, &rs, 0, NULL);
	n = tg_resp_line(&r, line, sizeof(line));
	CHECK(strcmp(line, "550 5.7.10 TLS is required, but was not offered "
			   "by host\r\n") == 0, "got \"%s\"", tg_esc(line, n));
	CHECK_EQ(n, strlen(line));
	tg_resp_held(&r, &rs, 0, "TLSv1.0");
	tg_resp_line(&r, line, sizeof(line));
	CHECK(strcmp(line, "550 5.7.10 TLS 1.2 or higher is required, but "
			   "host negotiated TLSv1.0\r\n") == 0, "got \"%s\"",
	      line);
	tg_resp_held(&r, &rs, 1, NULL);
	tg_resp_line(&r, line, sizeof(line));
	CHECK(strncmp(line, "450 4.7.10 TLS is required", 26) == 0,
	      "got \"%s\"", line);

	tg_case("a reply line is cut, never overrun");
	n = tg_resp_line(&r, line, 12);
	CHECK_EQ(n, 11);
	CHECK_EQ(strlen(line), 11);
}

static const struct addr_case {
	const char *line;
	int ev;
	__u64 verb;
	const char *addr, *domain;
} addr_cases[] = {
	{ "MAIL FROM:<Joe+x@Example.ORG> SIZE=10\r\n", TG_CMD_MAIL,
	  TG_VERB_MAIL, "Joe+x@Example.ORG", "example.org" },
	{ "RCPT TO:<u@b.test>", TG_CMD_MAIL, TG_VERB_RCPT, "u@b.test",
	  "b.test" },
	{ "rcpt to: <@r1,@r2:u@B.Test>\r\n", TG_CMD_MAIL, TG_VERB_RCPT,
	  "u@B.Test", "b.test" },
	{ "RCPT TO:u@c.test NOTIFY=NEVER", TG_CMD_MAIL, TG_VERB_RCPT,
	  "u@c.test", "c.test" },
	{ "MAIL FROM:<\"a b\"@q.test>", TG_CMD_MAIL, TG_VERB_MAIL,
	  "\"a b\"@q.test", "q.test" },
	{ "RCPT TO:<Postmaster>", TG_CMD_MAIL, TG_VERB_RCPT, "Postmaster", "" },
	{ "MAIL FROM:<>", TG_CMD_MAIL_NULL, TG_VERB_MAIL, "", "" },
	{ "RCPT TO:<a(b)@c.test>", TG_CMD_MAIL_BAD, TG_VERB_RCPT, "", "" },
	{ "RCPT TO:<u@c.test", TG_CMD_MAIL_BAD, TG_VERB_RCPT, "", "" },
	{ "RCPT FROM:<u@c.test>", TG_CMD_MAIL_BAD, TG_VERB_RCPT, "", "" },
	{ "DATA\r\n", TG_CMD_LINE, TG_VERB_DATA, "", "" },
	{ " quit", TG_CMD_LINE, TG_VERB_QUIT, "", "" },
};

static void test_addr(void)
{
	char addr[TG_ADDR_MAX + 1], dom[TG_ADDR_MAX + 1];
	__u64 verb;
	size_t i;
	int ev;

	for (i = 0; i < TG_NELEM(addr_cases); i++) {
		const struct addr_case *c = &addr_cases[i];

		tg_case("tg_line_addr \"%s\"", tg_esc(c->line, strlen(c->line)));
		ev = tg_line_addr(c->line, strlen(c->line), &verb, addr,
				  sizeof(addr));
		CHECK_EQ(ev, c->ev);
		CHECK_EQ(verb, c->verb);
		CHECK(strcmp(addr, c->addr) == 0, "address \"%s\", want \"%s\"",
		      addr, c->addr);
		tg_addr_domain(addr, dom, sizeof(dom));
		CHECK(strcmp(dom, c->domain) == 0, "domain \"%s\", want \"%s\"",
		      dom, c->domain);
	}
	tg_case("tg_line_addr cuts to the buffer");
	tg_line_addr("RCPT TO:<abcdef@g.test>", 23, &verb, addr, 4);
	CHECK(strcmp(addr, "abc") == 0, "got \"%s\"", addr);
}

static unsigned count_lines(const char *file)
{
	FILE *fp = fopen(file, "r");
	unsigned n = 0;
	int c;

	while (fp && (c = getc(fp)) != EOF)
		n += c == '\n';
	if (fp)
		fclose(fp);
	return n;
}

/*
 * The syncer: records written before a reopen (the file renamed, as
 * logrotate does) are all in the renamed file, the later ones in the new
 * one; after tg_audit_close() every record written is counted flushed
 * and none lost. Closes au.
 */
static void test_sync(struct tg_audit *au)
{
	struct tg_resp bye = { TG_RK_PROTOCOL, 221, "2.0.0", "Bye" };
	char rotated[sizeof(path) + 8];
	unsigned i, before, n = 200;

	tg_case("reopen and close: every record flushed, none lost");
	snprintf(rotated, sizeof(rotated), "%s.1", path);
	before = count_lines(path);
	for (i = 0; i < 2 * n; i++) {
		if (i == n) {
			CHECK(rename(path, rotated) == 0, "rename: %m");
			CHECK(tg_audit_reopen(au) == 0, "reopen: %m");
		}
		feed(au, 100 + i, 0, "MAIL FROM:<joe@guarded.test>");
		feed(au, 100 + i, 0, "QUIT");
		tg_audit_held(au, 100 + i, &bye);
		tg_audit_closed(au, 100 + i);
	}
	/* Two open attempts: their records are written by the close. */
	feed(au, 1000, 0, "MAIL FROM:<joe@guarded.test>");
	feed(au, 1001, 0, "MAIL FROM:<joe@guarded.test>");
	tg_audit_close(au);
	CHECK_EQ(count_lines(rotated), before + n);
	CHECK_EQ(count_lines(path), n + 2);
	CHECK_EQ(au->written, before + 2 * n + 2);
	CHECK_EQ(au->write_failed, 0);
	unlink(rotated);
}

int main(void)
{
	struct tg_policy pol = { 0 }, *pp = &pol;
	const struct tg_policy *const *polp = (const struct tg_policy *const *)&pp;
	struct tg_audit au;
	__u64 key;
	int fd;

	fd = mkstemp(path);
	if (fd < 0) {
		perror(path);
		return 2;
	}
	close(fd);
	if (tg_policy_entry_key("@guarded.test", &key) < 0 ||
	    tg_policy_insert(&pol, key) < 0) {
		fprintf(stderr, "cannot make the policy\n");
		return 2;
	}
	/* No flow table: the addresses stay "?", which is not checked. */
	if (tg_audit_open(&au, path, -1, polp) < 0) {
		perror(path);
		return 2;
	}
	test_verdicts(&au);
	test_utf8(&au);
	test_sync(&au);
	test_lines();
	test_addr();
	tg_policy_free(&pol);
	unlink(path);
	return tg_test_done();
}
