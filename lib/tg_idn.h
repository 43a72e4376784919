/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_idn - one key for a domain written as U-label or as A-label
 * SYNOPSIS
 *	#include "tg_idn.h"
 *
 *	int	tg_idn_forms(const char *domain, char *alabel, size_t alen,
 *			     char *ulabel, size_t ulen);
 *	int	tg_idn_keys(const char *addr, __u64 *keys,
 *			    __u64 *domain_keys);
 * DESCRIPTION
 *	"bücher.example" and "xn--bcher-kva.example" are one domain; so
 *	are "BÜCHER.example" and its NFD spelling. The kernel cannot map
 *	one to the other (punycode and Unicode normalization do not fit a
 *	BPF program), so the senders map holds every internationalized
 *	entry twice, under the key of its A-label form and under that of
 *	its U-label form (lower case, NFC), and a MAIL whose domain is not
 *	ASCII and matches neither is held for the agent, which maps it here
 *	(include/tg_rule.h).
 *
 *	tg_idn_forms() writes the A-label form ("xn--...", ASCII) and the
 *	U-label form (UTF-8, NFC, lower case) of domain, a trailing dot
 *	dropped, and returns 1; it returns 0 (and writes nothing) for a
 *	domain that is ASCII and has no "xn--" label: no other form; and -1
 *	when libidn2 refuses the domain (not valid IDNA2008/UTS #46) or a
 *	form does not fit.
 *
 *	tg_idn_keys() computes the policy keys (tg_addr_key_srs()) of addr
 *	("user@domain" or "@domain"): keys[0] and domain_keys[0] those of
 *	its A-label form (or of addr itself when it has no other form),
 *	keys[1] and domain_keys[1] those of its U-label form. A domain
 *	libidn2 refuses has only the key of its bytes. It returns how many
 *	it wrote (1 or 2), or -1 when addr is malformed.
 * SEE ALSO
 *	libidn2 (idn2_to_ascii_8z, idn2_to_unicode_8z8z)
 */
#ifndef TG_IDN_H
#define TG_IDN_H

#include <stddef.h>
#include <linux/types.h>

#define TG_IDN_MAX 1024 /* bytes of a domain in either form */

int tg_idn_forms(const char *domain, char *alabel, size_t alen, char *ulabel,
		 size_t ulen);
int tg_idn_keys(const char *addr, __u64 *keys, __u64 *domain_keys);

#endif /* TG_IDN_H */
