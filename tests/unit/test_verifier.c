// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	test_verifier - table-driven tests of the verifier log reader
 *	(agent/tg_verifier_log.c)
 * DESCRIPTION
 *	The logs in tests/unit/data/verifier_*.log are real, each captured
 *	on the kernel its first lines name: tg_smtp_msg refused for
 *	complexity (at log_level 4, and the end of its log at 1|4, as
 *	tlsguardd -v and -vv ask for them), two programs accepted, and an
 *	sk_msg program the verifier refused for a helper it may not call.
 *	Each is parsed, and the one line tlsguardd would print for it is
 *	compared with the expected text whole.
 *
 *	The constructed logs after them are the shapes a real one takes
 *	when cut short, on older kernels, or with bytes a person should not
 *	get raw. Last, two programs are loaded on the running kernel, one
 *	refused and one accepted, so that a kernel that changes how its
 *	verifier writes is found here first; they are skipped where bpf()
 *	is not permitted.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/bpf.h>
#include <bpf/bpf.h>

#include "tg_test.h"
#include "tg_verifier_log.h"

#ifndef TG_TEST_DATA
#define TG_TEST_DATA "tests/unit/data"
#endif

struct logcase {
	int line;
	const char *file;		/* under TG_TEST_DATA, or NULL */
	const char *text;		/* when file is NULL */
	int parsed;			/* what tg_verifier_parse() returns */
	long long processed, limit, max_states, total, peak;
	int too_large;
	const char *error;		/* NULL: none */
	const char *reason;		/* tg_verifier_reason(), brief 0 */
	const char *brief;		/* tg_verifier_reason(), brief 1 */
};

#define TOO_COMPLEX "too complex for this kernel's verifier: "
#define REFUSED "refused by this kernel's verifier: "
#define COOKIE "program of this type cannot use helper " \
	       "bpf_get_socket_cookie#46"

static const struct logcase cases[] = {
	{ __LINE__, "verifier_too_large.log", NULL, 0,
	  1000001, 1000000, 87, 86966, 120126, 1,
	  "BPF program is too large. Processed 1000001 insn",
	  TOO_COMPLEX "1,000,001 instructions processed (limit 1,000,000)",
	  "too complex (limit 1,000,000)" },
	{ __LINE__, "verifier_too_large_vv.log", NULL, 0,
	  1000001, 1000000, 87, 86966, 120126, 1,
	  "BPF program is too large. Processed 1000001 insn",
	  TOO_COMPLEX "1,000,001 instructions processed (limit 1,000,000)",
	  "too complex (limit 1,000,000)" },
	{ __LINE__, "verifier_accepted.log", NULL, 0,
	  196972, 1000000, 55, 13723, 34394, 0, NULL,
	  "refused by this kernel's verifier, which logged no reason",
	  "no reason in the verifier's log" },
	{ __LINE__, "verifier_accepted_vv.log", NULL, 0,
	  376, 1000000, 0, 20, 20, 0, NULL,
	  "refused by this kernel's verifier, which logged no reason",
	  "no reason in the verifier's log" },
	{ __LINE__, "verifier_helper.log", NULL, 0,
	  1, 1000000, 0, 0, 0, 0, COOKIE, REFUSED COOKIE, COOKIE },
	{ __LINE__, "verifier_helper_vv.log", NULL, 0,
	  1, 1000000, 0, 0, 0, 0, COOKIE, REFUSED COOKIE, COOKIE },

	/* Constructed. */
	{ __LINE__, NULL, "", -1, -1, -1, -1, -1, -1, 0, NULL,
	  "refused by this kernel's verifier, which logged no reason",
	  "no reason in the verifier's log" },
	/* Cut short before the statistics: no limit to quote. */
	{ __LINE__, NULL, "BPF program is too large. Processed 1000001 insn\n",
	  0, 1000001, -1, -1, -1, -1, 1,
	  "BPF program is too large. Processed 1000001 insn",
	  TOO_COMPLEX "1,000,001 instructions processed", "too complex" },
	/* Over the limit without the line that says so. */
	{ __LINE__, NULL, "processed 131073 insns (limit 131072)\n", 0,
	  131073, 131072, -1, -1, -1, 0, NULL,
	  TOO_COMPLEX "131,073 instructions processed (limit 131,072)",
	  "too complex (limit 131,072)" },
	/* A kernel without mark_read, fields in another order. */
	{ __LINE__, NULL, "R1 type=scalar expected=fp\n"
	  "processed 12 insns (limit 1000000) peak_states 3 total_states 4 "
	  "max_states_per_insn 1\n", 0,
	  12, 1000000, 1, 4, 3, 0, "R1 type=scalar expected=fp",
	  REFUSED "R1 type=scalar expected=fp", "R1 type=scalar expected=fp" },
	/* No newline at the end; blank lines and statistics skipped. */
	{ __LINE__, NULL, "0: (bf) r0 = r2\nR2 !read_ok\n\n  \n"
	  "verification time 13 usec\nstack depth 0\n"
	  "processed 1 insns (limit 1000000) max_states_per_insn 0 "
	  "total_states 0 peak_states 0 mark_read 0", 0,
	  1, 1000000, 0, 0, 0, 0, "R2 !read_ok", REFUSED "R2 !read_ok",
	  "R2 !read_ok" },
	/* Bytes from the object are not printed raw. */
	{ __LINE__, NULL, "unknown func \033[31mred\t\xff\n", -1,
	  -1, -1, -1, -1, -1, 0, "unknown func ?[31mred??",
	  REFUSED "unknown func ?[31mred??", "unknown func ?[31mred??" },
	/* A number that is not one. */
	{ __LINE__, NULL, "processed x insns (limit -5) total_states 7\n", 0,
	  -1, -1, -1, 7, -1, 0, NULL,
	  "refused by this kernel's verifier, which logged no reason",
	  "no reason in the verifier's log" },
};

/* The file without its leading "#" lines, which say where it came from. */
static char *slurp(const char *name)
{
	char path[512], *buf, *p;
	size_t len = 0, cap = 1 << 16, n;
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s", TG_TEST_DATA, name);
	fp = fopen(path, "r");
	if (!fp)
		return NULL;
	buf = malloc(cap);
	while (buf && (n = fread(buf + len, 1, cap - len - 1, fp)) > 0) {
		len += n;
		if (len + 1 == cap) {
			p = realloc(buf, cap * 2);
			if (!p) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = p;
			cap *= 2;
		}
	}
	fclose(fp);
	if (!buf)
		return NULL;
	buf[len] = 0;
	for (p = buf; *p == '#';) {
		p = strchr(p, '\n');
		p = p ? p + 1 : buf + len;
	}
	memmove(buf, p, strlen(p) + 1);
	return buf;
}

static void run_case(const struct logcase *c)
{
	char out[TG_VLINE_MAX], *text = NULL;
	const char *log = c->text;
	struct tg_vstats st;
	char *err;

	tg_case("log %s (line %d)", c->file ? c->file : "constructed",
		c->line);
	if (c->file) {
		log = text = slurp(c->file);
		if (!CHECK_AT(c->line, text != NULL, "cannot read %s/%s",
			      TG_TEST_DATA, c->file))
			return;
	}
	CHECK_EQ_AT(c->line, tg_verifier_parse(log, &st), c->parsed);
	CHECK_EQ_AT(c->line, st.processed, c->processed);
	CHECK_EQ_AT(c->line, st.limit, c->limit);
	CHECK_EQ_AT(c->line, st.max_states_per_insn, c->max_states);
	CHECK_EQ_AT(c->line, st.total_states, c->total);
	CHECK_EQ_AT(c->line, st.peak_states, c->peak);
	CHECK_EQ_AT(c->line, st.too_large, c->too_large);

	err = tg_verifier_error(log, out, sizeof(out));
	if (c->error)
		CHECK_AT(c->line, err && strcmp(err, c->error) == 0,
			 "error line \"%s\", expected \"%s\"",
			 err ? tg_esc(err, strlen(err)) : "(none)", c->error);
	else
		CHECK_AT(c->line, err == NULL, "error line \"%s\", expected "
			 "none", err ? tg_esc(err, strlen(err)) : "");

	tg_verifier_reason(log, &st, 0, out, sizeof(out));
	CHECK_AT(c->line, strcmp(out, c->reason) == 0,
		 "reason \"%s\", expected \"%s\"", out, c->reason);
	tg_verifier_reason(log, &st, 1, out, sizeof(out));
	CHECK_AT(c->line, strcmp(out, c->brief) == 0,
		 "brief reason \"%s\", expected \"%s\"", out, c->brief);
	free(text);
}

static void test_commas(void)
{
	static const struct {
		int line;
		unsigned long long n;
		size_t len;
		const char *want;
	} rows[] = {
		{ __LINE__, 0, 32, "0" },
		{ __LINE__, 999, 32, "999" },
		{ __LINE__, 1000, 32, "1,000" },
		{ __LINE__, 150000, 32, "150,000" },
		{ __LINE__, 1000000, 32, "1,000,000" },
		{ __LINE__, 1000001, 32, "1,000,001" },
		{ __LINE__, 18446744073709551615ULL, 32,
		  "18,446,744,073,709,551,615" },
		{ __LINE__, 1000000, 6, "1,000" },	/* cut to the buffer */
	};
	char out[32];
	size_t i;

	tg_case("thousands separators");
	for (i = 0; i < TG_NELEM(rows); i++) {
		memset(out, 'x', sizeof(out));
		tg_verifier_commas(rows[i].n, out, rows[i].len);
		CHECK_AT(rows[i].line, strcmp(out, rows[i].want) == 0,
			 "%llu gave \"%s\", expected \"%s\"", rows[i].n, out,
			 rows[i].want);
	}
}

static void test_long_error(void)
{
	char log[1000], out[40];

	tg_case("an error line longer than the buffer is cut");
	memset(log, 'a', sizeof(log) - 1);
	log[sizeof(log) - 1] = 0;
	CHECK(tg_verifier_error(log, out, sizeof(out)) == out, "no line");
	CHECK_EQ(strlen(out), sizeof(out) - 1);
	CHECK(tg_verifier_error(log, out, 0) == NULL, "a zero-size buffer "
	      "was written");
}

/* Loads insns on this kernel at log_level 4; the fd or -errno. */
static int live_load(enum bpf_prog_type type, const struct bpf_insn *insns,
		     size_t n, char *log, size_t len)
{
	LIBBPF_OPTS(bpf_prog_load_opts, o, .log_buf = log, .log_size = len,
		    .log_level = 4);
	int fd;

	log[0] = 0;
	fd = bpf_prog_load(type, "tg_test", "GPL", insns, n, &o);
	return fd < 0 ? -errno : fd;
}

static void test_live(void)
{
	static char log[1 << 20];
	const struct bpf_insn cookie[] = {	/* refused in sk_msg */
		{ .code = BPF_JMP | BPF_CALL,
		  .imm = BPF_FUNC_get_socket_cookie },
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 1 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	const struct bpf_insn ret0[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 0 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	struct tg_vstats st;
	char out[TG_VLINE_MAX];
	int fd;

	fd = live_load(BPF_PROG_TYPE_SK_MSG, cookie, TG_NELEM(cookie), log,
		       sizeof(log));
	if (fd >= 0)
		close(fd);
	if (fd == -EPERM || fd == -ENOSYS || (fd < 0 && !log[0])) {
		tg_skip("live verifier logs: bpf() not permitted here (%s)",
			strerror(-fd));
		return;
	}
	tg_case("live: this kernel refuses bpf_get_socket_cookie in sk_msg");
	CHECK(fd < 0, "the kernel accepted it");
	CHECK_EQ(tg_verifier_parse(log, &st), 0);
	CHECK(st.processed >= 1 && st.limit > 0 && !st.too_large,
	      "processed %lld limit %lld too_large %d", st.processed, st.limit,
	      st.too_large);
	tg_verifier_reason(log, &st, 0, out, sizeof(out));
	CHECK_STR(out, REFUSED);
	CHECK_STR(out, "bpf_get_socket_cookie");

	tg_case("live: this kernel accepts \"return 0\"");
	fd = live_load(BPF_PROG_TYPE_SOCKET_FILTER, ret0, TG_NELEM(ret0), log,
		       sizeof(log));
	CHECK(fd >= 0, "refused: %s", strerror(-fd));
	if (fd >= 0)
		close(fd);
	CHECK_EQ(tg_verifier_parse(log, &st), 0);
	CHECK_EQ(st.processed, 2);
	CHECK(st.total_states >= 0 && st.peak_states >= 0,
	      "no states in \"%s\"", tg_esc(log, strlen(log)));
	CHECK(tg_verifier_error(log, out, sizeof(out)) == NULL,
	      "an error line in an accepted program's log: \"%s\"", out);
}

int main(void)
{
	size_t i;

	for (i = 0; i < TG_NELEM(cases); i++)
		run_case(&cases[i]);
	test_commas();
	test_long_error();
	test_live();
	return tg_test_done();
}
