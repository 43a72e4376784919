/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_test - the smallest harness the native unit tests need
 * SYNOPSIS
 *	#include "tg_test.h"
 *
 *	void	tg_case(const char *fmt, ...);
 *	void	tg_skip(const char *fmt, ...);
 *	int	tg_test_done(void);
 *
 *	CHECK(cond, fmt, ...)
 *	CHECK_AT(line, cond, fmt, ...)
 *	CHECK_EQ(got, want)
 *	CHECK_EQ_AT(line, got, want)
 *	CHECK_STR(haystack, needle)
 *
 *	const char *tg_esc(const void *buf, size_t len);
 *	TG_NELEM(array)
 * DESCRIPTION
 *	A test case runs from tg_case() to the next tg_case(), tg_skip() or
 *	tg_test_done(); it passes when none of its checks failed. Tables are
 *	the intended style: one row is one case, and a row that records its
 *	own __LINE__ passes it to CHECK_AT() so that a failure names the row,
 *	not the loop that ran it.
 *
 *	Each failed check prints "FILE:LINE: case: what failed" on stderr
 *	and the run goes on: one bad row must not hide the others.
 *
 *	CHECK_EQ() compares two integers as unsigned 64-bit values and shows
 *	both. CHECK_STR() checks that a string contains another.
 *
 *	tg_skip() ends the current case and names a case that cannot run on
 *	this machine; it is counted neither as passed nor as failed.
 *
 *	tg_esc() renders bytes for a message (C escapes, truncated) in one
 *	of a few static buffers, so that a message may use two of them.
 *
 *	tg_test_done() closes the last case, prints "N passed, M failed"
 *	alone on a line (N and M count cases, not checks) and returns the
 *	exit status: 0 when no case failed and at least one passed.
 * DIAGNOSTICS
 *	On stderr, one line per failed check; the summary goes to stdout.
 */
#ifndef TG_TEST_H
#define TG_TEST_H

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "tg_esc.h"

#define TG_NELEM(a) (sizeof(a) / sizeof((a)[0]))

struct tg_test {
	char name[200];		/* case in progress */
	int open;		/* a case is in progress */
	int case_failed;	/* one of its checks failed */
	int passed, failed, skipped;
};

static struct tg_test tg_t;

static inline void tg_case_close(void)
{
	if (!tg_t.open)
		return;
	if (tg_t.case_failed)
		tg_t.failed++;
	else
		tg_t.passed++;
	tg_t.open = 0;
}

static inline __attribute__((format(printf, 1, 2))) void
tg_case(const char *fmt, ...)
{
	va_list ap;

	tg_case_close();
	va_start(ap, fmt);
	vsnprintf(tg_t.name, sizeof(tg_t.name), fmt, ap);
	va_end(ap);
	tg_t.open = 1;
	tg_t.case_failed = 0;
}

static inline __attribute__((format(printf, 1, 2))) void
tg_skip(const char *fmt, ...)
{
	va_list ap;

	tg_case_close();
	fflush(stdout);
	fprintf(stderr, "skipped: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	tg_t.skipped++;
}

/* Returns ok, so that a caller may stop a case after a failed check. */
static inline __attribute__((format(printf, 5, 6))) int
tg_check(const char *file, int line, int ok, const char *expr,
	 const char *fmt, ...)
{
	va_list ap;

	if (!tg_t.open)
		tg_case("(outside any case)");
	if (ok)
		return 1;
	tg_t.case_failed = 1;
	fflush(stdout);
	fprintf(stderr, "%s:%d: %s: ", file, line, tg_t.name);
	if (fmt && *fmt) {
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
	} else {
		fprintf(stderr, "check failed: %s", expr);
	}
	fputc('\n', stderr);
	return 0;
}

static inline int tg_check_eq(const char *file, int line,
			      unsigned long long got, unsigned long long want,
			      const char *gexpr, const char *wexpr)
{
	return tg_check(file, line, got == want, gexpr,
			"%s is %llu (%#llx), expected %s = %llu (%#llx)",
			gexpr, got, got, wexpr, want, want);
}

static inline int tg_check_str(const char *file, int line, const char *hay,
			       const char *needle, const char *hexpr)
{
	return tg_check(file, line, hay && strstr(hay, needle), hexpr,
			"%s is \"%s\", expected it to contain \"%s\"", hexpr,
			hay ? hay : "(null)", needle);
}

#define CHECK_AT(line, cond, ...) \
	tg_check(__FILE__, (line), !!(cond), #cond, __VA_ARGS__)
#define CHECK(cond, ...) CHECK_AT(__LINE__, cond, __VA_ARGS__)
#define CHECK_EQ_AT(line, got, want)                                      \
	tg_check_eq(__FILE__, (line), (unsigned long long)(got),           \
		    (unsigned long long)(want), #got, #want)
#define CHECK_EQ(got, want) CHECK_EQ_AT(__LINE__, got, want)
#define CHECK_STR(hay, needle) \
	tg_check_str(__FILE__, __LINE__, (hay), (needle), #hay)

static inline const char *tg_esc(const void *buf, size_t len)
{
	static char out[4][400];
	static unsigned next;

	return tg_esc_buf(out[next++ % 4], sizeof(out[0]), buf, len);
}

static inline int tg_test_done(void)
{
	tg_case_close();
	fflush(stderr);
	printf("%d passed, %d failed\n", tg_t.passed, tg_t.failed);
	fflush(stdout);
	return tg_t.failed || !tg_t.passed;
}

#endif /* TG_TEST_H */
