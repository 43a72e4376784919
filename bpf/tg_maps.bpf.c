// SPDX-License-Identifier: GPL-2.0
/* The one definition of every map (see tg_common.bpf.h). */
#define TG_DEFINE_MAPS
#include "tg_common.bpf.h"

char LICENSE[] SEC("license") = "GPL";
