#!/bin/sh
# tests/e2e/mta_deps.sh DIR - make Exim 4.96 (exim4-daemon-light, GnuTLS) and
# OpenSMTPD 6.8 from Debian runnable beside an installed Postfix, for the
# end-to-end suite (tests/e2e/mta_run.py). Run as root by `make mta-deps`.
#
# Debian's exim4-daemon-light and opensmtpd packages conflict with postfix
# (each provides mail-transport-agent), so apt cannot install them here.
# Instead their .debs are fetched with apt-get download and unpacked with
# dpkg-deb -x into DIR/root, where the tests run the binaries with their own
# configuration (exim4 -C FILE, smtpd -f FILE). Nothing is unpacked outside
# DIR and no maintainer script runs. What those scripts would have set up
# and the binaries need at run time is done here:
#   * the shared libraries the packages depend on (apt-get install of the
#     lib* packages named in their Depends: libgnutls30, libevent, ...);
#   * the system users compiled into the binaries: Debian-exim (exim4's
#     exim_user) and opensmtpd, opensmtpq (smtpd's privilege separation).
# The spool, chroot and helper directories that smtpd has compiled in are
# not created on the host: mta_env.py mounts private ones in a mount
# namespace of its own.
set -eu

dir=${1:?usage: mta_deps.sh DIR}
debs="exim4-base exim4-daemon-light opensmtpd"

mkdir -p "$dir/debs"
cd "$dir/debs"
missing=
for p in $debs; do
	ls "$p"_*.deb >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
	apt-get update -qq
	# As root in a directory _apt cannot write: download unsandboxed.
	apt-get download -q -o APT::Sandbox::User=root $missing
fi

# Library dependencies: every lib* package in Depends/Pre-Depends (first
# alternative, version constraints dropped).
libs=$(for d in *.deb; do dpkg-deb -f "$d" Depends Pre-Depends; done |
	sed 's/^[A-Za-z-]*: //' | tr ',' '\n' | sed 's/|.*//; s/([^)]*)//g' |
	awk '$1 ~ /^lib/ { print $1 }' | sort -u)
if ! dpkg -s $libs >/dev/null 2>&1; then
	[ -n "$missing" ] || apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $libs
fi

nologin=/usr/sbin/nologin
getent group Debian-exim >/dev/null || groupadd --system Debian-exim
getent passwd Debian-exim >/dev/null ||
	useradd --system --gid Debian-exim --home-dir /var/spool/exim4 \
		--no-create-home --shell $nologin Debian-exim
for u in opensmtpd opensmtpq; do
	getent group $u >/dev/null || groupadd --system $u
	getent passwd $u >/dev/null ||
		useradd --system --gid $u --home-dir /var/lib/opensmtpd/empty \
			--no-create-home --shell $nologin $u
done

rm -rf ../root.new
for d in *.deb; do
	dpkg-deb -x "$d" ../root.new
done
# What the package's dpkg-statoverride does: smtpctl's sendmail refuses to
# run unless it is setgid opensmtpq (it writes the offline queue).
chgrp opensmtpq ../root.new/usr/sbin/smtpctl
chmod 2755 ../root.new/usr/sbin/smtpctl
rm -rf ../root
mv ../root.new ../root

echo "mta-deps: $(ls *.deb | tr '\n' ' ')unpacked in $dir/root"
