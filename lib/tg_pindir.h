/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_pindir - is a directory fit to hold tlsguard's pins, and their
 *	removal
 * SYNOPSIS
 *	#include "tg_pindir.h"
 *
 *	int	tg_pindir_check(const char *dir, char *err, size_t errlen);
 *	int	tg_pindir_empty(const char *dir, int links, char *err,
 *				size_t errlen);
 *	int	tg_pindir_remove(const char *dir, char *err, size_t errlen);
 * DESCRIPTION
 *	tg_pindir_check() returns 0 when dir is a directory on a bpf file
 *	system and not the root of one (a root is shared with other
 *	programs' pins, which tlsguardctl detach must never touch); -ENOENT
 *	when dir does not exist; otherwise -1 with the reason, naming dir,
 *	in err. tlsguardd checks its pin_dir with it, tlsguardctl detach
 *	the directory it is to empty.
 *
 *	A pin_dir holds, all named tg_*, the three cgroup links
 *	(tg_*_link) at its top and the maps in one generation directory
 *	per layout, TG_PINDIR_GEN followed by 16 hex digits (the agent's
 *	tg_pin.c); a version before generations pinned its maps at the
 *	top. Nothing else in it is tlsguard's, and nothing else is removed.
 *
 *	tg_pindir_empty() unlinks dir's tg_* pins, the tg_*_link ones only
 *	when links is set; tg_pindir_remove() removes every pin of dir:
 *	the links first (no new connection is tracked from then on), then
 *	each generation directory's pins and the directory, the maps at
 *	the top, and dir itself. Both return 0, -ENOENT when dir does not
 *	exist, or -1 with the first failure, naming its path, in err (they
 *	go on with the rest); something not tlsguard's left in dir is such
 *	a failure of tg_pindir_remove().
 */
#ifndef TG_PINDIR_H
#define TG_PINDIR_H

#include <stddef.h>

#define TG_PINDIR_GEN	'L'	/* a generation directory: L<16 hex> */

int tg_pindir_check(const char *dir, char *err, size_t errlen);
int tg_pindir_empty(const char *dir, int links, char *err, size_t errlen);
int tg_pindir_remove(const char *dir, char *err, size_t errlen);

#endif /* TG_PINDIR_H */
