/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	fuzz_common - what the libFuzzer targets of tlsguard's parsers share
 * SYNOPSIS
 *	#include "fuzz_common.h"
 *
 *	FUZZ_FAIL(fmt, ...)
 *	FUZZ_CHECK(cond, fmt, ...)
 *	const char *fz_esc(const void *buf, size_t len);
 *
 *	__u64	fz_fnv(const void *buf, size_t len);
 *	__u32	fz_rand(__u32 *state);
 *	size_t	fz_cuts(const unsigned char *s, size_t len, __u32 seed,
 *			int many, size_t *cuts, size_t max);
 * DESCRIPTION
 *	Each target includes a parser header of include/, the very source
 *	the BPF programs compile, feeds it the fuzzer's bytes, and checks
 *	invariants and an independent reference written plainly in the
 *	target. A failed check prints what was fed, what was expected and
 *	what the parser gave, then aborts: libFuzzer keeps the input as
 *	crash-<sha1> and the minimizer (-minimize_crash=1) shortens it.
 *
 *	fz_fnv() is FNV-1a written out again here, so that a bug shared by
 *	the parser's hash and the unit tests' shows.
 *
 *	fz_cuts() derives cut points from the input and a seed: one cut
 *	(many == 0) or a cut before about one byte in four (many != 0).
 *	The parsers keep all of their state in one small structure, as a
 *	BPF program keeps it in a map between two writes or segments; a
 *	target feeds the input in the pieces between the cuts, moving the
 *	state to a fresh heap block at each cut (the old one is scribbled
 *	over), and expects the same events as from one piece.
 * DIAGNOSTICS
 *	"fuzz_x: invariant failed: ..." on stderr, then abort().
 */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <linux/types.h>

#include "../unit/tg_esc.h"

/* The parsers' sub-address delimiters (include/tg_smtp.h): "+". */
__u64 tg_delims[2] = { 1ULL << '+', 0 };

#define FZ_NELEM(a) (sizeof(a) / sizeof((a)[0]))

static inline __attribute__((format(printf, 3, 4), noreturn)) void
fz_fail(const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "\n%s:%d: invariant failed: ", file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
	abort();
}

#define FUZZ_FAIL(...) fz_fail(__FILE__, __LINE__, __VA_ARGS__)
#define FUZZ_CHECK(cond, ...)              \
	do {                               \
		if (!(cond))               \
			FUZZ_FAIL(__VA_ARGS__); \
	} while (0)

/* Bytes as a C string literal, truncated; a few static buffers. */
static inline const char *fz_esc(const void *buf, size_t len)
{
	static char out[4][1200];
	static unsigned next;

	return tg_esc_buf(out[next++ % 4], sizeof(out[0]), buf, len);
}

static inline __u64 fz_fnv(const void *buf, size_t len)
{
	const unsigned char *s = buf;
	__u64 h = 0xcbf29ce484222325ULL;
	size_t i;

	for (i = 0; i < len; i++)
		h = (h ^ s[i]) * 0x100000001b3ULL;
	return h;
}

static inline __u32 fz_rand(__u32 *state)
{
	*state = *state * 1103515245u + 12345u;
	return *state >> 16;
}

static inline size_t fz_cuts(const unsigned char *s, size_t len, __u32 seed,
			     int many, size_t *cuts, size_t max)
{
	__u32 r = seed ^ (__u32)fz_fnv(s, len);
	size_t i, n = 0;

	if (len < 2 || max == 0)
		return 0;
	if (!many) {
		cuts[0] = 1 + fz_rand(&r) % (len - 1);
		return 1;
	}
	for (i = 1; i < len && n < max; i++)
		if (fz_rand(&r) % 4 == 0)
			cuts[n++] = i;
	return n;
}

/*
 * Moves a parser state to a fresh heap block, as it would be read back
 * from a map: the old block is scribbled over and freed, so that any
 * state kept outside the structure shows (ASan reports a use after free).
 */
static inline void *fz_move_state(void *old, size_t size)
{
	void *p = malloc(size);

	if (!p)
		abort();
	memcpy(p, old, size);
	memset(old, 0xa5, size);
	free(old);
	return p;
}

#endif /* FUZZ_COMMON_H */
