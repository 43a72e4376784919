// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_verifier_log - read what the kernel's BPF verifier wrote (see
 *	tg_verifier_log.h)
 * DESCRIPTION
 *	A log at -vv can be tens of megabytes: every function here walks it
 *	once, a line at a time, and copies at most one short line. The log
 *	is the kernel's, but it quotes names from the object (BTF, source
 *	lines), so what is copied out for a person is made printable.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tg_verifier_log.h"


/* The line at p: its length without the newline; *next, the one after. */
static size_t tg_vline(const char *p, const char **next)
{
	const char *nl = strchr(p, '\n');

	if (!nl) {
		*next = p + strlen(p);
		return (size_t)(*next - p);
	}
	*next = nl + 1;
	return (size_t)(nl - p);
}

/* Copies a line, cut to the buffer, as a string. */
static void tg_vcopy(char *out, size_t len, const char *p, size_t n)
{
	if (n >= len)
		n = len - 1;
	memcpy(out, p, n);
	out[n] = 0;
}

/* The number after "name " in line, or -1 when it is not there. */
static long long tg_vfield(const char *line, const char *name)
{
	const char *p = strstr(line, name);
	char *end;
	long long v;

	if (!p)
		return -1;
	p += strlen(name);
	if (*p < '0' || *p > '9')
		return -1;
	v = strtoll(p, &end, 10);
	return end == p ? -1 : v;
}

static int tg_vstats_line(const char *line)
{
	return strncmp(line, "processed ", 10) == 0 &&
	       strstr(line, " insns") != NULL;
}

int tg_verifier_parse(const char *log, struct tg_vstats *out)
{
	char line[TG_VLINE_MAX];
	const char *p, *next;
	const char *big;
	int found = 0;
	size_t n;

	out->processed = out->limit = -1;
	out->max_states_per_insn = out->total_states = -1;
	out->peak_states = -1;
	out->too_large = 0;
	if (!log)
		return -1;
	for (p = log; *p; p = next) {
		n = tg_vline(p, &next);
		if (n == 0)
			continue;
		tg_vcopy(line, sizeof(line), p, n);
		if (tg_vstats_line(line)) {
			out->processed = tg_vfield(line, "processed ");
			out->limit = tg_vfield(line, "(limit ");
			out->max_states_per_insn =
				tg_vfield(line, "max_states_per_insn ");
			out->total_states = tg_vfield(line, "total_states ");
			out->peak_states = tg_vfield(line, "peak_states ");
			found = 1;
		} else if ((big = strstr(line, "BPF program is too large.")) !=
			   NULL) {
			out->too_large = 1;
			/* The statistics line, when there is one, has it too. */
			if (out->processed < 0)
				out->processed = tg_vfield(big, "Processed ");
			found = 1;
		}
	}
	return found ? 0 : -1;
}

char *tg_verifier_error(const char *log, char *out, size_t len)
{
	const char *p, *next, *last = NULL;
	size_t n, last_n = 0, i;
	char head[32];

	if (!log || len == 0)
		return NULL;
	for (p = log; *p; p = next) {
		n = tg_vline(p, &next);
		for (i = 0; i < n && (p[i] == ' ' || p[i] == '\t'); i++)
			;
		if (i == n)
			continue;
		tg_vcopy(head, sizeof(head), p, n);
		if (strncmp(head, "verification time ", 18) == 0 ||
		    strncmp(head, "stack depth ", 12) == 0 ||
		    strncmp(head, "processed ", 10) == 0)
			continue;
		last = p;
		last_n = n;
	}
	if (!last)
		return NULL;
	tg_vcopy(out, len, last, last_n);
	for (i = 0; out[i]; i++)
		if (out[i] < ' ' || out[i] > '~')
			out[i] = '?';
	return out;
}

char *tg_verifier_commas(unsigned long long n, char *out, size_t len)
{
	char digits[32], buf[48];
	size_t nd, i, o = 0;

	nd = (size_t)snprintf(digits, sizeof(digits), "%llu", n);
	for (i = 0; i < nd; i++) {
		if (i && (nd - i) % 3 == 0)
			buf[o++] = ',';
		buf[o++] = digits[i];
	}
	buf[o] = 0;
	snprintf(out, len, "%s", buf);
	return out;
}

char *tg_verifier_reason(const char *log, const struct tg_vstats *st,
			 int brief, char *out, size_t len)
{
	char insns[32], limit[32], err[300];
	int too;

	too = st->too_large || (st->processed >= 0 && st->limit > 0 &&
				st->processed > st->limit);
	if (too) {
		if (st->limit > 0)
			tg_verifier_commas((unsigned long long)st->limit, limit,
					   sizeof(limit));
		if (brief && st->limit > 0)
			snprintf(out, len, "too complex (limit %s)", limit);
		else if (brief)
			snprintf(out, len, "too complex");
		else if (st->processed < 0)
			snprintf(out, len, "too complex for this kernel's "
				 "verifier");
		else
			snprintf(out, len, "too complex for this kernel's "
				 "verifier: %s instructions processed%s%s%s",
				 tg_verifier_commas(
					 (unsigned long long)st->processed,
					 insns, sizeof(insns)),
				 st->limit > 0 ? " (limit " : "",
				 st->limit > 0 ? limit : "",
				 st->limit > 0 ? ")" : "");
		return out;
	}
	if (!tg_verifier_error(log, err, sizeof(err)))
		snprintf(out, len, "%s", brief ? "no reason in the verifier's "
			 "log" : "refused by this kernel's verifier, which "
			 "logged no reason");
	else if (brief)
		snprintf(out, len, "%s", err);
	else
		snprintf(out, len, "refused by this kernel's verifier: %s",
			 err);
	return out;
}
