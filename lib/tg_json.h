/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_json - JSON strings that are valid UTF-8 whatever the bytes
 * SYNOPSIS
 *	#include "tg_json.h"
 *
 *	void	tg_json_strn(FILE *fp, const char *s, size_t n);
 *	void	tg_json_str(FILE *fp, const char *s);
 *	size_t	tg_utf8_valid(const unsigned char *p, size_t n);
 * DESCRIPTION
 *	tg_json_strn() writes the n bytes at s as one JSON string, quotes
 *	included. Well-formed UTF-8 (RFC 3629: no overlong forms, no
 *	surrogates, nothing above U+10FFFF) is written as it is, but for
 *	'"', '\\' and the control characters U+0000-U+001F and U+007F,
 *	which are escaped. Every other byte (a remote host's greeting in
 *	Latin-1, a truncated sequence) is written as "\u00XX", XX its
 *	value: the output is always valid UTF-8 and valid JSON, and the
 *	original byte can be told from the escape. tg_json_str() does the
 *	same up to a NUL.
 *
 *	tg_utf8_valid() is the length of the well-formed UTF-8 sequence at
 *	p (1 to 4), or 0 when the byte at p does not begin one within n.
 */
#ifndef TG_JSON_H
#define TG_JSON_H

#include <stddef.h>
#include <stdio.h>

void tg_json_strn(FILE *fp, const char *s, size_t n);
void tg_json_str(FILE *fp, const char *s);
size_t tg_utf8_valid(const unsigned char *p, size_t n);

#endif /* TG_JSON_H */
