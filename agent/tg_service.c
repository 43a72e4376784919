// SPDX-License-Identifier: GPL-2.0
/*
 * NAME
 *	tg_service - readiness and privileges (see tg_service.h)
 * DESCRIPTION
 *	Both are a few system calls; libsystemd and libcap would add two
 *	libraries for them.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "tg_service.h"

void tg_notify(const char *state)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	socklen_t len;
	int fd;

	if (!path || !*path || strlen(path) >= sizeof(sun.sun_path))
		return;
	memcpy(sun.sun_path, path, strlen(path));
	if (sun.sun_path[0] == '@')
		sun.sun_path[0] = 0;	/* abstract namespace */
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
			  strlen(path));
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return;
	sendto(fd, state, strlen(state), MSG_NOSIGNAL,
	       (struct sockaddr *)&sun, len);
	close(fd);
}

int tg_drop_caps(char *err, size_t errlen)
{
	struct __user_cap_header_struct hdr = {
		.version = _LINUX_CAPABILITY_VERSION_3,
	};
	struct __user_cap_data_struct data[2];
	unsigned long long kept = TG_CAPS_KEPT;
	int cap, setpcap;

	memset(data, 0, sizeof(data));
	if (syscall(SYS_capget, &hdr, data) < 0) {
		snprintf(err, errlen, "capget: %s", strerror(errno));
		return -1;
	}
	kept &= (unsigned long long)data[0].permitted |
		((unsigned long long)data[1].permitted << 32);
	/*
	 * The bounding set first: dropping from it needs CAP_SETPCAP. Under
	 * a unit that bounds the service already (CapabilityBoundingSet=)
	 * and withholds CAP_SETPCAP, what the unit left stays there; it is
	 * out of the permitted set below, and no_new_privs keeps an execve()
	 * from taking it back.
	 */
	setpcap = (data[0].effective >> CAP_SETPCAP) & 1;
	for (cap = 0; cap <= 63; cap++) {
		if (kept & (1ULL << cap))
			continue;
		if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) != 1)
			continue;	/* not there, or unknown to the kernel */
		if (!setpcap)
			continue;
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL) {
			snprintf(err, errlen, "PR_CAPBSET_DROP %d: %s", cap,
				 strerror(errno));
			return -1;
		}
	}
	data[0].permitted = data[0].effective = (__u32)kept;
	data[1].permitted = data[1].effective = (__u32)(kept >> 32);
	data[0].inheritable = data[1].inheritable = 0;
	if (syscall(SYS_capset, &hdr, data) < 0) {
		snprintf(err, errlen, "capset: %s", strerror(errno));
		return -1;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		snprintf(err, errlen, "PR_SET_NO_NEW_PRIVS: %s",
			 strerror(errno));
		return -1;
	}
	return 0;
}
