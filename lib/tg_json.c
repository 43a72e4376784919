// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_json - JSON strings (see tg_json.h)
 */
#include <string.h>

#include "tg_json.h"

/* RFC 3629's table of well-formed sequences (section 4). */
size_t tg_utf8_valid(const unsigned char *p, size_t n)
{
	unsigned char c = p[0], lo = 0x80, hi = 0xbf;
	size_t len, i;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		len = 2;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4;
	else
		return 0;	/* 0x80-0xc1 (continuations, overlong), 0xf5-0xff */
	if (c == 0xe0)
		lo = 0xa0;	/* overlong */
	else if (c == 0xed)
		hi = 0x9f;	/* surrogates */
	else if (c == 0xf0)
		lo = 0x90;	/* overlong */
	else if (c == 0xf4)
		hi = 0x8f;	/* above U+10FFFF */
	if (n < len || p[1] < lo || p[1] > hi)
		return 0;
	for (i = 2; i < len; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return len;
}

void tg_json_strn(FILE *fp, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + n;
	size_t k;

	fputc('"', fp);
	while (p < end) {
		if (*p == '"' || *p == '\\') {
			fprintf(fp, "\\%c", *p++);
		} else if (*p < 0x20 || *p == 0x7f) {
			fprintf(fp, "\\u%04x", *p++);
		} else if ((k = tg_utf8_valid(p, (size_t)(end - p))) != 0) {
			fwrite(p, 1, k, fp);
			p += k;
		} else {
			fprintf(fp, "\\u%04x", *p++);
		}
	}
	fputc('"', fp);
}

void tg_json_str(FILE *fp, const char *s)
{
	tg_json_strn(fp, s, strlen(s));
}
