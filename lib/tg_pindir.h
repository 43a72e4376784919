/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_pindir - is a directory fit to hold tlsguard's pins
 * SYNOPSIS
 *	#include "tg_pindir.h"
 *
 *	int	tg_pindir_check(const char *dir, char *err, size_t errlen);
 * DESCRIPTION
 *	tg_pindir_check() returns 0 when dir is a directory on a bpf file
 *	system and not the root of one (a root is shared with other
 *	programs' pins, which tlsguardctl detach must never touch); -ENOENT
 *	when dir does not exist; otherwise -1 with the reason, naming dir,
 *	in err. tlsguardd checks its pin_dir with it, tlsguardctl detach
 *	the directory it is to empty.
 */
#ifndef TG_PINDIR_H
#define TG_PINDIR_H

#include <stddef.h>

int tg_pindir_check(const char *dir, char *err, size_t errlen);

#endif /* TG_PINDIR_H */
