// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	test_sts - MTA-STS policies read and mx patterns matched as RFC 8461
 *	says
 * SYNOPSIS
 *	build/tests/test_sts
 * DESCRIPTION
 *	tg_sts_policy() over HTTP answers: a valid policy (CRLF and LF
 *	lines, blanks around values), and each way one is refused (not 200,
 *	a redirect, no version, an unknown mode, no max_age, no mx). Then
 *	tg_sts_match() over names and patterns: exact names in any case and
 *	with a trailing dot, "*." standing for exactly one label.
 * DIAGNOSTICS
 *	One line per failed check on stderr; "N passed, M failed" on stdout.
 */
#include <stdio.h>
#include <string.h>

#include "tg_sts.h"
#include "tg_test.h"

static const struct {
	int line;
	const char *answer;
	int ok;
	const char *mode, *problem;
	int nmx;
} policies[] = {
	{ __LINE__, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"
	  "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\n"
	  "mx: *.example.net\r\nmax_age: 604800\r\n", 0, "enforce", NULL, 2 },
	{ __LINE__, "HTTP/1.0 200 OK\r\n\r\nversion:STSv1\nmode:  testing \n"
	  "mx: MX.Example.COM.\nmax_age: 86400", 0, "testing", NULL, 1 },
	{ __LINE__, "HTTP/1.1 200 OK\r\n\r\nversion: STSv1\nmode: none\n"
	  "max_age: 86400\n", 0, "none", NULL, 0 },
	{ __LINE__, "HTTP/1.1 404 Not Found\r\n\r\nversion: STSv1\n", -1,
	  NULL, "answered \"HTTP/1.1 404 Not Found\"", 0 },
	{ __LINE__, "HTTP/1.1 301 Moved\r\nLocation: https://x/\r\n\r\n", -1,
	  NULL, "redirects are not followed", 0 },
	{ __LINE__, "HTTP/1.1 200 OK\r\n\r\nmode: enforce\nmx: a.b\n"
	  "max_age: 1\n", -1, NULL, "no \"version: STSv1\"", 0 },
	{ __LINE__, "HTTP/1.1 200 OK\r\n\r\nversion: STSv1\nmode: strict\n"
	  "mx: a.b\nmax_age: 1\n", -1, NULL, "mode \"strict\"", 0 },
	{ __LINE__, "HTTP/1.1 200 OK\r\n\r\nversion: STSv1\nmode: enforce\n"
	  "mx: a.b\nmax_age: soon\n", -1, NULL, "no valid max_age", 0 },
	{ __LINE__, "HTTP/1.1 200 OK\r\n\r\nversion: STSv1\nmode: enforce\n"
	  "max_age: 5\n", -1, NULL, "no mx pattern", 0 },
	{ __LINE__, "HTTP/1.1 200 OK\r\nversion: STSv1\n", -1, NULL,
	  "no complete HTTP answer", 0 },
};

static const struct {
	int line;
	const char *pattern, *host;
	int match;
} matches[] = {
	{ __LINE__, "mx1.example.com", "mx1.example.com", 1 },
	{ __LINE__, "mx1.example.com", "MX1.Example.Com.", 1 },
	{ __LINE__, "mx1.example.com", "mx2.example.com", 0 },
	{ __LINE__, "*.example.com", "mx.example.com", 1 },
	{ __LINE__, "*.example.com", "a.mx.example.com", 0 },
	{ __LINE__, "*.example.com", "example.com", 0 },
	{ __LINE__, "*.example.com", "mxexample.com", 0 },
	{ __LINE__, "*.example.com", "mx.example.com.evil", 0 },
};

int main(void)
{
	struct tg_sts s;
	char buf[1024];
	size_t i;

	for (i = 0; i < TG_NELEM(policies); i++) {
		tg_case("policy row %d", policies[i].line);
		memset(&s, 0, sizeof(s));
		snprintf(s.url, sizeof(s.url), "https://mta-sts.x/");
		snprintf(buf, sizeof(buf), "%s", policies[i].answer);
		CHECK_EQ_AT(policies[i].line, tg_sts_policy(&s, buf),
			    (unsigned long long)(long long)policies[i].ok);
		if (policies[i].mode)
			CHECK_AT(policies[i].line,
				 strcmp(s.mode, policies[i].mode) == 0,
				 "mode %s, want %s", s.mode,
				 policies[i].mode);
		if (policies[i].problem)
			CHECK_STR(s.problem, policies[i].problem);
		if (!policies[i].ok)
			CHECK_EQ_AT(policies[i].line, s.nmx, policies[i].nmx);
	}

	tg_case("mx names are kept lowercase without the trailing dot");
	memset(&s, 0, sizeof(s));
	snprintf(buf, sizeof(buf), "%s", policies[1].answer);
	tg_sts_policy(&s, buf);
	CHECK(s.nmx == 1 && strcmp(s.mx[0], "mx.example.com") == 0,
	      "mx[0] \"%s\"", s.mx[0]);

	for (i = 0; i < TG_NELEM(matches); i++) {
		const char *got;

		tg_case("match row %d", matches[i].line);
		memset(&s, 0, sizeof(s));
		s.nmx = 1;
		snprintf(s.mx[0], sizeof(s.mx[0]), "%s", matches[i].pattern);
		got = tg_sts_match(&s, matches[i].host);
		CHECK_AT(matches[i].line, !!got == matches[i].match,
			 "%s against %s: %s", matches[i].host,
			 matches[i].pattern, got ? "matched" : "no match");
	}
	return tg_test_done();
}
