// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_weak - hosts seen negotiating TLS below 1.2, to name the cause
 *	in the replies of held flows (see tg_inject.h)
 */
#include <string.h>
#include <time.h>

#include "tg_inject.h"

#define TG_WEAK_TTL	3600	/* seconds a weak host is remembered */

static long long tg_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

void tg_inject_note_weak(struct tg_inject *ij, __u16 family, const __u8 *addr,
			 __u16 version)
{
	struct tg_weak_host *w, *oldest = &ij->weak[0];
	unsigned i;

	for (i = 0; i < TG_WEAK_HOSTS; i++) {
		w = &ij->weak[i];
		if (w->seen && w->family == family &&
		    memcmp(w->addr, addr, 16) == 0)
			break;
		if (w->seen < oldest->seen)
			oldest = w;
	}
	if (i == TG_WEAK_HOSTS)
		w = oldest;
	w->family = family;
	memcpy(w->addr, addr, 16);
	w->version = version;
	w->seen = tg_now();
}

/* The version a host negotiated lately, if below TLS 1.2; else 0. */
__u16 tg_inject_weak_version(const struct tg_inject *ij,
			     const struct tg_flow *f)
{
	long long now = tg_now();
	unsigned i;

	for (i = 0; f && i < TG_WEAK_HOSTS; i++) {
		const struct tg_weak_host *w = &ij->weak[i];

		if (w->seen && now - w->seen < TG_WEAK_TTL &&
		    w->family == f->family && memcmp(w->addr, f->raddr, 16) == 0)
			return w->version;
	}
	return 0;
}
