/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_tlscopy - the MTA's own copies of the TLS libraries
 * SYNOPSIS
 *	#include "tg_tlscopy.h"
 *
 *	int	tg_tlscopy_dir(const char *dir, char *err, size_t errlen);
 *	int	tg_tlscopy_make(const char *src, const char *dir, char *dst,
 *				size_t dstlen, char *err, size_t errlen);
 * DESCRIPTION
 *	A uprobe is a breakpoint in the pages of one file (device and
 *	inode): every process that maps the file traps on it, whichever
 *	cgroup it is in. Copies of the TLS libraries that only the MTA maps
 *	(bound over the system's files in the MTA's own mount namespace:
 *	BindReadOnlyPaths= in its unit) carry tlsguard's uprobes, and the
 *	system's files, which every other process maps, carry none.
 *
 *	tg_tlscopy_dir() makes sure that dir can hold such copies: a
 *	directory owned by root that no one else may write to (the copies
 *	are code the MTA runs). A missing dir is made, mode 0755, when its
 *	parent exists. Returns 0, or -1 with the reason, naming dir, in err.
 *
 *	tg_tlscopy_make() makes dir/NAME, NAME being src's last component,
 *	a copy of src: a copy whose bytes are src's already is kept as it
 *	is (the same inode, whose uprobes and bind mounts stay valid);
 *	otherwise the new copy is written beside it, flushed, and renamed
 *	over it, mode 0644. The copy's path goes to dst. Returns 1 when it
 *	wrote a copy, 0 when it kept one, -1 with the reason, naming the
 *	file, in err.
 */
#ifndef TG_TLSCOPY_H
#define TG_TLSCOPY_H

#include <stddef.h>

int tg_tlscopy_dir(const char *dir, char *err, size_t errlen);
int tg_tlscopy_make(const char *src, const char *dir, char *dst, size_t dstlen,
		    char *err, size_t errlen);

#endif /* TG_TLSCOPY_H */
