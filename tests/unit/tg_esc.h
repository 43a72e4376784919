/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_esc - bytes as a C string literal, for test failure messages
 * SYNOPSIS
 *	#include "tg_esc.h"
 *
 *	const char *tg_esc_buf(char *out, size_t cap, const void *buf,
 *			       size_t len);
 * DESCRIPTION
 *	tg_esc_buf() writes the len bytes at buf into out (cap bytes, at
 *	least 48) as they would be written in C: \r, \n, \t, \\, \" and
 *	\xNN for the rest that is not printable ASCII; what does not fit is
 *	cut and "...(N bytes in all)" says how long the whole was. It returns out.
 *	The unit tests (tg_test.h) and the fuzz targets (fuzz_common.h) both
 *	use it.
 */
#ifndef TG_ESC_H
#define TG_ESC_H

#include <stddef.h>
#include <stdio.h>

static inline const char *tg_esc_buf(char *o, size_t cap, const void *buf,
				     size_t len)
{
	const unsigned char *s = buf;
	size_t n = 0, i;

	for (i = 0; i < len && n < cap - 32; i++) {
		unsigned char c = s[i];

		if (c == '\r')
			n += (size_t)sprintf(o + n, "\\r");
		else if (c == '\n')
			n += (size_t)sprintf(o + n, "\\n");
		else if (c == '\t')
			n += (size_t)sprintf(o + n, "\\t");
		else if (c == '\\' || c == '"')
			n += (size_t)sprintf(o + n, "\\%c", c);
		else if (c < ' ' || c >= 0x7f)
			n += (size_t)sprintf(o + n, "\\x%02x", c);
		else
			o[n++] = (char)c;
	}
	if (i < len)
		n += (size_t)snprintf(o + n, cap - n, "...(%zu bytes in all)", len);
	o[n] = 0;
	return o;
}

#endif /* TG_ESC_H */
