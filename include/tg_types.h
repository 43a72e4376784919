/* SPDX-License-Identifier: GPL-2.0 */
/*
 * NAME
 *	tg_types - fixed-width types for headers shared by the BPF programs
 *	and the native code
 * DESCRIPTION
 *	BPF objects get their types from vmlinux.h, which the .bpf.c file
 *	includes first; native code gets the same names from <linux/types.h>.
 *	TG_INLINE forces inlining: BPF subprograms would otherwise need their
 *	own verification, and the parsers are small.
 */
#ifndef TG_TYPES_H
#define TG_TYPES_H

#ifndef __bpf__
#include <linux/types.h>
#endif

#define TG_INLINE inline __attribute__((always_inline))

#endif /* TG_TYPES_H */
