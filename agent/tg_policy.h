/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_policy - the guaranteed senders: senders file and kernel map
 * SYNOPSIS
 *	#include "tg_policy.h"
 *
 *	int	tg_policy_load(const char *path, struct tg_policy *pol,
 *			       char *err, size_t errlen);
 *	int	tg_policy_entry_key(const char *entry, __u64 *key);
 *	int	tg_policy_sync(int map_fd, const struct tg_policy *old,
 *			       const struct tg_policy *pol);
 *	int	tg_policy_match(const struct tg_policy *pol,
 *				__u64 addr_key, __u64 domain_key);
 *	void	tg_policy_free(struct tg_policy *pol);
 * DESCRIPTION
 *	A senders file holds one entry a line: "user@domain" (one address)
 *	or "@domain" (every address of that domain). '#' starts a comment;
 *	blank lines are ignored. Entries are matched without regard to ASCII
 *	case and without a "+extension" in the local part, by the keys of
 *	tg_addr_key(), the function the kernel's MAIL parser uses too.
 *
 *	tg_policy_load() reads a file into a sorted set of keys. On error it
 *	returns -1 with a message "FILE:LINE: ..." (or "FILE: ...") in err,
 *	and pol is left empty.
 *
 *	tg_policy_entry_key() computes the key of one entry; it returns -1
 *	when the entry is malformed.
 *
 *	tg_policy_sync() makes the kernel map hold exactly the keys of pol:
 *	it adds the new keys first, then deletes those only in old (which
 *	may be NULL), so that a sender present in both is never absent.
 *
 *	tg_policy_sync_within() does the same for a map of max entries, and
 *	fails closed when pol does not fit: it sets TG_SENDERS_INCOMPLETE
 *	(see tlsguard.h: the kernel then holds every MAIL without TLS and
 *	the agent answers from pol) before any sender can be missing,
 *	removes the senders only in old, writes as many of pol as fit, and
 *	clears the marker only when all of pol is in. It returns how many
 *	senders it wrote, or a negative errno, and sets *incomplete.
 *	tg_policy_match() says whether either key is in pol.
 */
#ifndef TG_POLICY_H
#define TG_POLICY_H

#include <stddef.h>
#include <linux/types.h>

struct tg_policy {
	__u64 *keys;		/* sorted, unique */
	size_t n;
	size_t cap;
};

int tg_policy_load(const char *path, struct tg_policy *pol, char *err,
		   size_t errlen);
int tg_policy_entry_key(const char *entry, __u64 *key);
int tg_policy_sync(int map_fd, const struct tg_policy *old,
		   const struct tg_policy *pol);
int tg_policy_sync_within(int map_fd, const struct tg_policy *old,
			  const struct tg_policy *pol, unsigned max,
			  int *incomplete);
int tg_policy_match(const struct tg_policy *pol, __u64 addr_key,
		    __u64 domain_key);
void tg_policy_free(struct tg_policy *pol);

#endif /* TG_POLICY_H */
