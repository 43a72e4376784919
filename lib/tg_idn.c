// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_idn - internationalized domain names of senders (see tg_idn.h)
 * DESCRIPTION
 *	IDNA is libidn2's job (IDNA2008 with the UTS #46 mapping, as
 *	Postfix's smtputf8 support uses it): nothing of it is written here.
 */
#include <string.h>
#include <strings.h>
#include <idn2.h>

#include "tg_smtp.h"
#include "tg_idn.h"

#define TG_IDN_FLAGS (IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL)

/* Whether domain needs IDNA: a byte that is not ASCII, or an "xn--" label. */
static int tg_idn_is(const char *domain)
{
	const unsigned char *s;

	for (s = (const unsigned char *)domain; *s; s++)
		if (*s >= 0x80)
			return 1;
	for (s = (const unsigned char *)domain; *s; s++)
		if ((s == (const unsigned char *)domain || s[-1] == '.') &&
		    strncasecmp((const char *)s, "xn--", 4) == 0)
			return 1;
	return 0;
}

int tg_idn_forms(const char *domain, char *alabel, size_t alen, char *ulabel,
		 size_t ulen)
{
	char *a = NULL, *u = NULL, buf[TG_IDN_MAX];
	size_t n = strlen(domain);
	int rc = -1;

	if (!tg_idn_is(domain))
		return 0;
	if (n >= sizeof(buf) || domain[0] == '[')
		return -1;
	/* A trailing dot is not part of the domain (tg_smtp.h). */
	memcpy(buf, domain, n + 1);
	if (n > 1 && buf[n - 1] == '.' && buf[n - 2] != '.')
		buf[n - 1] = 0;
	if (idn2_to_ascii_8z(buf, &a, TG_IDN_FLAGS) != IDN2_OK)
		goto out;
	if (idn2_to_unicode_8z8z(a, &u, 0) != IDN2_OK)
		goto out;
	if (strlen(a) >= alen || strlen(u) >= ulen)
		goto out;
	memcpy(alabel, a, strlen(a) + 1);
	memcpy(ulabel, u, strlen(u) + 1);
	rc = 1;
out:
	idn2_free(a);
	idn2_free(u);
	return rc;
}

/* The key of local@domain (or of "@domain" when local is empty). */
static __u64 tg_idn_key(const char *local, size_t llen, const char *domain,
			__u64 *domain_key, int *srs)
{
	char buf[TG_ADDR_MAX + 1];
	size_t dlen = strlen(domain);

	if (llen + 1 + dlen > TG_ADDR_MAX)
		return 0;
	memcpy(buf, local, llen);
	buf[llen] = '@';
	memcpy(buf + llen + 1, domain, dlen);
	return tg_addr_key_srs(buf, (__u32)(llen + 1 + dlen), domain_key, srs);
}

int tg_idn_keys(const char *addr, __u64 *keys, __u64 *domain_keys)
{
	char alabel[TG_IDN_MAX], ulabel[TG_IDN_MAX];
	const char *at = strrchr(addr, '@');
	int srs, r;

	if (!at)
		return -1;
	/*
	 * A domain libidn2 refuses (not IDNA2008) keeps the one key of its
	 * bytes: the MTA cannot map it either.
	 */
	r = tg_idn_forms(at + 1, alabel, sizeof(alabel), ulabel,
			 sizeof(ulabel));
	if (r <= 0) {
		keys[0] = tg_addr_key_srs(addr, (__u32)strlen(addr),
					  &domain_keys[0], &srs);
		return keys[0] ? 1 : -1;
	}
	keys[0] = tg_idn_key(addr, (size_t)(at - addr), alabel, &domain_keys[0],
			     &srs);
	keys[1] = tg_idn_key(addr, (size_t)(at - addr), ulabel, &domain_keys[1],
			     &srs);
	if (!keys[0] || !keys[1])
		return -1;
	return keys[0] == keys[1] ? 1 : 2;
}
