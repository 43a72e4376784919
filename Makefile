# tlsguard - build, test and run. See README.md.
#
#   make            BPF objects, skeleton, build/tlsguardd, build/tlsguardctl
#   make deps       install every Debian package the build and tests need
#   make deps-build install only what building needs (a mail host)
#   make deb        build/deb/tlsguard_VERSION_amd64.deb, lintian-checked
#   make check      the verifier check, unit tests, fuzz regressions, the
#                   end-to-end suite (root)
#   make verifier-check  load the BPF programs on the running kernel (root),
#                   attach nothing; fail when one is refused or processes
#                   more than tlsguardd --check-verifier's budget
#   make fuzz       libFuzzer on the parsers, FUZZ_SECONDS each (default 30)
#   make demo       real Postfix, simulated MX hosts, tlsguardd (as root)
#   make native-table  Postfix's own settings beside tlsguard, the same cases
#                   through both (as root): the README's table, in Markdown
#   make soak       SOAK_MESSAGES (default 100000) through a real Postfix (as root)
#   make vmlinux    regenerate vmlinux.h from the running kernel's BTF
#   make install    tlsguardd, tlsguardctl, manuals, systemd units, the
#                   Postfix drop-in, the logrotate snippet, the log
#                   directory (mode 0750) and (if absent) /etc/tlsguard;
#                   DESTDIR, PREFIX, SBINDIR, MANDIR, SYSCONFDIR, UNITDIR,
#                   LOGDIR as usual

.DELETE_ON_ERROR:
.SUFFIXES:

BUILD     ?= build
CC        ?= cc
CLANG     ?= clang
BPFTOOL   ?= bpftool
PYTHON    ?= /usr/bin/python3
ARCH      := $(shell uname -m | sed 's/x86_64/x86/; s/aarch64/arm64/')

CFLAGS    ?= -O2 -g
WARNINGS  := -Wall -Wextra -Werror -Wno-unused-parameter
INCLUDES  := -D_GNU_SOURCE -Iinclude -I$(BUILD) $(EXTRA_CFLAGS)
PKGS      := libbpf libelf zlib openssl libnl-3.0 libnl-idiag-3.0 libidn2
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lresolv -lpthread
# libpq: tlsguardd only (senders_file = pgsql:FILE)
PQ_CFLAGS  = -I$(shell pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)
PQ_LIBS    = -lpq

ifeq ($(SANITIZE),1)
CFLAGS    += -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
LDFLAGS   += -fsanitize=address,undefined
endif

BPF_SRCS  := $(wildcard bpf/*.bpf.c)
BPF_OBJS  := $(patsubst bpf/%.bpf.c,$(BUILD)/bpf/%.bpf.o,$(BPF_SRCS))
HEADERS   := $(wildcard include/*.h) VERSION

# The project's one version number: tlsguardd --version, tlsguardctl
# --version and status, and tlsguard_build_info on the metrics page.
TG_VERSION := $(shell cat VERSION)
INCLUDES   += -DTG_VERSION='"$(TG_VERSION)"'

# lib/: the user-space code the daemon, tlsguardctl and the unit tests
# share, linked as one archive (bcc libbpf-tools' COMMON_OBJ).
LIB_SRCS   := $(wildcard lib/*.c)
LIB_OBJS   := $(patsubst lib/%.c,$(BUILD)/lib/%.o,$(LIB_SRCS))
LIB        := $(BUILD)/libtlsguard.a

AGENT_SRCS := $(wildcard agent/*.c)
AGENT_OBJS := $(patsubst agent/%.c,$(BUILD)/agent/%.o,$(AGENT_SRCS))
CTL_OBJS   := $(patsubst tools/%.c,$(BUILD)/tools/%.o,$(wildcard tools/*.c))

UNIT_TESTS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/test_*.c))

# Debian packages, by what they are for: building tlsguard, running it (the
# shared libraries only: the .deb depends on those), testing it, packaging it.
# A mail host needs only the .deb, or BUILD_PKGS to build it there.
BUILD_PKGS  := clang libbpf-dev bpftool libelf-dev zlib1g-dev libssl-dev \
	libnl-3-dev libnl-genl-3-dev libnl-idiag-3-dev libidn2-dev libpq-dev pkg-config make gcc
TEST_PKGS   := postfix python3 iproute2 procps openssl man-db groff-base \
	systemd ldnsutils strace util-linux python3-prometheus-client logrotate \
	postgresql-15
DEB_PKGS    := debhelper lintian dpkg-dev fakeroot
DEBIAN_PKGS := $(BUILD_PKGS) $(TEST_PKGS) $(DEB_PKGS)
# (postgresql-15: pgsql_run.py runs a cluster of its own with initdb and
# pg_ctl; a mail host needs only libpq, which libpq-dev pulls in.
# python3-prometheus-client: the tests read the metrics page with
# Prometheus' own text parser; logrotate checks the shipped snippet.
# unbound, for mx_run.py, probe_run.py and native_compare.py, is installed by
# tests/e2e/fixtures/dns_env.py so that its package cannot start the system's
# resolver service; ldnsutils signs probe_run.py's test zone.)

.PHONY: all deps deps-build deb check unit e2e demo soak clean vmlinux format install uninstall \
	verifier-check native-table layout2

PREFIX     ?= /usr/local
SBINDIR    ?= $(PREFIX)/sbin
MANDIR     ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
UNITDIR    ?= /etc/systemd/system
LOGDIR     ?= /var/log/tlsguard
MANPAGES   := man/tlsguardd.8 man/tlsguardctl.8 man/tlsguard.conf.5
# The system's library directory, where the Postfix drop-in binds tlsguardd's
# copies of libssl (tls_library_copies).
MULTIARCH ?= $(shell $(CC) -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
SUBST      = sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
	-e 's|@LOGDIR@|$(LOGDIR)|g' -e 's|@MULTIARCH@|$(MULTIARCH)|g'

all: $(BUILD)/tlsguardd $(BUILD)/tlsguardctl

include tests/fuzz/fuzz.mk
include tests/e2e/fixtures/mta.mk
include vm.mk

$(BUILD)/bpf/%.bpf.o: bpf/%.bpf.c $(wildcard bpf/*.bpf.h) $(HEADERS) vmlinux.h
	@mkdir -p $(@D)
	$(CLANG) -g -O2 -target bpf -D__TARGET_ARCH_$(ARCH) -Wall -Werror \
		-I. -Iinclude $(EXTRA_CFLAGS) -c $< -o $@

# tg_maps first: libbpf's linker cannot relocate a static subprogram's
# reference to a map that an object later on the line defines.
$(BUILD)/tlsguard.bpf.o: $(BPF_OBJS)
	$(BPFTOOL) gen object $@ $(filter %/tg_maps.bpf.o,$^) $(filter-out %/tg_maps.bpf.o,$^)

$(BUILD)/tlsguard.skel.h: $(BUILD)/tlsguard.bpf.o
	$(BPFTOOL) gen skeleton $< name tlsguard > $@

$(BUILD)/lib/%.o: lib/%.c $(HEADERS) $(wildcard lib/*.h)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARNINGS) $(INCLUDES) -Ilib $(PKG_CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJS)
	$(AR) rcs $@ $^

$(BUILD)/agent/%.o: agent/%.c $(HEADERS) $(wildcard agent/*.h lib/*.h) $(BUILD)/tlsguard.skel.h
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARNINGS) $(INCLUDES) -Iagent -Ilib $(PKG_CFLAGS) $(PQ_CFLAGS) -c $< -o $@

$(BUILD)/tlsguardd: $(AGENT_OBJS) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(PQ_LIBS)

CTL_LIBS  = $(shell pkg-config --libs openssl libidn2 2>/dev/null) -lresolv

$(BUILD)/tools/%.o: tools/%.c $(wildcard tools/*.h lib/*.h) $(HEADERS)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARNINGS) $(INCLUDES) -Ilib -Itools $(PKG_CFLAGS) -c $< -o $@

$(BUILD)/tlsguardctl: $(CTL_OBJS) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(CTL_LIBS)

# The unit tests link the library, and the agent objects they test.
$(BUILD)/tests/test_verifier: $(BUILD)/agent/tg_verifier_log.o
$(BUILD)/tests/test_audit: $(BUILD)/agent/tg_audit.o $(BUILD)/agent/tg_log.o
$(BUILD)/tests/test_sts: $(BUILD)/tools/tg_sts.o

$(BUILD)/tests/%: tests/unit/%.c $(LIB) $(HEADERS) $(wildcard tests/unit/*.h lib/*.h)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARNINGS) $(INCLUDES) -Iagent -Ilib -Itools $(LDFLAGS) -o $@ $< \
		$(filter %.o,$^) $(LIB) $(PKG_LIBS)

# $(call apt_install,PACKAGES): install those not installed yet.
apt_install = @if ! dpkg -s $(1) >/dev/null 2>&1; then \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1); \
	fi

# make deps-build: what building (and make install) needs, nothing more.
deps-build:
	$(call apt_install,$(BUILD_PKGS))

# make deps: everything the tests and make deb need too (a test machine:
# Postfix, and the Exim and OpenSMTPD trees of make mta-deps).
deps: deps-build
	@echo "postfix postfix/main_mailer_type select Local only" | debconf-set-selections
	@echo "postfix postfix/mailname string mta.test" | debconf-set-selections
	$(call apt_install,$(TEST_PKGS) $(DEB_PKGS))

unit: $(UNIT_TESTS)
	@rc=0; for t in $(UNIT_TESTS); do echo "== $$t"; $$t || rc=1; done; exit $$rc

# The end-to-end suites: the list in tests/e2e/SUITES, run by tests/e2e/runner.py
# (make vmtest reads the same list). E2E_SUITES=NAME... runs only those.
E2E_SUITES ?=
e2e: all layout2
	$(PYTHON) tests/e2e/runner.py --tlsguardd $(BUILD)/tlsguardd --tlsguardctl $(BUILD)/tlsguardctl \
		--build $(BUILD) --mta-deps $(MTA_DEPS) $(E2E_SUITES)

# A test hook: the same tree built again in $(BUILD)-layout2 with
# TG_LAYOUT_PAD, so that one of its maps (tg_stats) has another layout.
# upgrade_run installs one build over the other while Postfix sends.
# EXTRA_CFLAGS reaches the BPF objects and the C alike; a release sets
# neither.
LAYOUT2_PAD ?= 64
layout2:
	$(MAKE) BUILD=$(BUILD)-layout2 EXTRA_CFLAGS=-DTG_LAYOUT_PAD=$(LAYOUT2_PAD) all

# First, so that a kernel that refuses a program fails make check at once,
# with the table that says which and why.
verifier-check: $(BUILD)/tlsguardd
	$(BUILD)/tlsguardd --check-verifier

check: verifier-check
	$(MAKE) unit fuzz-regress e2e

demo: all
	$(PYTHON) tools/demo.py --tlsguardd $(BUILD)/tlsguardd --tlsguardctl $(BUILD)/tlsguardctl

# README "Postfix's own settings, compared": its table is this output.
native-table: all
	$(PYTHON) tests/e2e/suites/native_compare.py --tlsguardd $(BUILD)/tlsguardd \
		--tlsguardctl $(BUILD)/tlsguardctl --deps $(MTA_DEPS)/root --table

# The configuration and the senders file are the administrator's: an
# existing one is never replaced.
install: all
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man5 \
		$(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(UNITDIR)/postfix@.service.d
	install -m 0755 $(BUILD)/tlsguardd $(BUILD)/tlsguardctl $(DESTDIR)$(SBINDIR)/
	install -m 0644 man/tlsguard.conf.5 $(DESTDIR)$(MANDIR)/man5/
	install -m 0644 man/tlsguardd.8 man/tlsguardctl.8 $(DESTDIR)$(MANDIR)/man8/
	install -d $(DESTDIR)$(PREFIX)/share/tlsguard/pgsql
	install -m 0644 dist/pgsql/schema.sql $(DESTDIR)$(PREFIX)/share/tlsguard/pgsql/
	$(SUBST) dist/systemd/tlsguardd.service.in > $(DESTDIR)$(UNITDIR)/tlsguardd.service
	install -m 0644 dist/systemd/tlsguarded.slice dist/systemd/tlsguardd-pins.service \
		$(DESTDIR)$(UNITDIR)/
	$(SUBST) dist/postfix/tlsguard.conf.in \
		> $(DESTDIR)$(UNITDIR)/postfix@.service.d/tlsguard.conf
	chmod 0644 $(DESTDIR)$(UNITDIR)/tlsguardd.service \
		$(DESTDIR)$(UNITDIR)/postfix@.service.d/tlsguard.conf
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/tlsguard $(DESTDIR)$(SYSCONFDIR)/logrotate.d
	install -d -m 0750 $(DESTDIR)$(LOGDIR)
	$(SUBST) dist/logrotate/tlsguard.in > $(DESTDIR)$(SYSCONFDIR)/logrotate.d/tlsguard
	chmod 0644 $(DESTDIR)$(SYSCONFDIR)/logrotate.d/tlsguard
	test -e $(DESTDIR)$(SYSCONFDIR)/tlsguard/tlsguard.conf || \
		$(SUBST) dist/tlsguard.conf > $(DESTDIR)$(SYSCONFDIR)/tlsguard/tlsguard.conf
	test "$(SENDERS_FILE)" = no || test -e $(DESTDIR)$(SYSCONFDIR)/tlsguard/senders || \
		install -m 0640 /dev/null $(DESTDIR)$(SYSCONFDIR)/tlsguard/senders

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/tlsguardd $(DESTDIR)$(SBINDIR)/tlsguardctl \
		$(DESTDIR)$(MANDIR)/man5/tlsguard.conf.5 \
		$(DESTDIR)$(MANDIR)/man8/tlsguardd.8 $(DESTDIR)$(MANDIR)/man8/tlsguardctl.8 \
		$(DESTDIR)$(UNITDIR)/tlsguardd.service $(DESTDIR)$(UNITDIR)/tlsguarded.slice \
		$(DESTDIR)$(UNITDIR)/tlsguardd-pins.service \
		$(DESTDIR)$(UNITDIR)/postfix@.service.d/tlsguard.conf \
		$(DESTDIR)$(SYSCONFDIR)/logrotate.d/tlsguard \
		$(DESTDIR)$(PREFIX)/share/tlsguard/pgsql/schema.sql
	-rmdir $(DESTDIR)$(UNITDIR)/postfix@.service.d 2>/dev/null
	-rmdir $(DESTDIR)$(PREFIX)/share/tlsguard/pgsql $(DESTDIR)$(PREFIX)/share/tlsguard 2>/dev/null
# make deb: build/deb/tlsguard_VERSION_amd64.deb with Debian's tools, from a
# copy of this tree (nothing is written beside it), then lintian on it;
# fails on a lintian error, or when debian/changelog and VERSION differ.
# DEB_VERSION=V (with DEB_DIR=another directory) builds the same tree as
# version V: the copy's VERSION says V and its debian/changelog gets an
# entry for V on top, so the programs, status and the package all say V
# (make vmtest-systemd upgrades to such a build). This tree is not changed.
VERSION := $(shell cat VERSION)
DEB_VERSION ?= $(VERSION)
DEB_DIR ?= $(BUILD)/deb
DEB_SRC := $(DEB_DIR)/tlsguard-$(DEB_VERSION)
deb:
	@v=$$(dpkg-parsechangelog -S Version); test "$$v" = "$(VERSION)" || \
		{ echo "debian/changelog is at $$v, VERSION at $(VERSION)" >&2; exit 1; }
	rm -rf $(DEB_DIR) && mkdir -p $(DEB_SRC)
	tar -cf - --exclude=./.git --exclude='./build*' --exclude=./bench/build \
		--exclude=./tests/vm/cache . | tar -C $(DEB_SRC) -xf -
	@if [ "$(DEB_VERSION)" != "$(VERSION)" ]; then \
		echo "$(DEB_VERSION)" > $(DEB_SRC)/VERSION && \
		{ printf 'tlsguard (%s) bookworm; urgency=medium\n\n  * %s built as %s.\n\n -- %s  %s\n\n' \
			"$(DEB_VERSION)" "$(VERSION)" "$(DEB_VERSION)" \
			"$$(dpkg-parsechangelog -S Maintainer)" "$$(date -R)"; \
		  cat debian/changelog; } > $(DEB_SRC)/debian/changelog; fi
	cd $(DEB_SRC) && dpkg-buildpackage -b -us -uc
	lintian --fail-on error --fail-on warning \
		$(DEB_DIR)/tlsguard_$(DEB_VERSION)_amd64.deb

# Not in make check: it takes about half an hour for 100,000 messages.
SOAK_MESSAGES ?= 100000
soak: all
	$(PYTHON) tests/soak/soak_run.py --messages $(SOAK_MESSAGES) \
		--tlsguardd $(BUILD)/tlsguardd --tlsguardctl $(BUILD)/tlsguardctl

vmlinux:
	$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > vmlinux.h

format:
	clang-format -i $(wildcard include/*.h lib/*.[ch] agent/*.[ch] bpf/*.[ch] tools/*.[ch] tests/unit/*.[ch])

clean:
	rm -rf $(BUILD) $(BUILD)-layout2

# ---- bench ----------------------------------------------------------------
# make bench    (as root) what tlsguard costs an MTA and how it scales: builds
#               tlsguard and bench/'s C programs, installs what it needs, runs
#               bench/run.py, writes bench/RESULTS.md and bench/throughput.png.
#               Not a test: it never fails on a figure, and CI does not run it.

BENCH_BUILD := bench/build
BENCH_BINS  := $(addprefix $(BENCH_BUILD)/,tls_source tls_sink held_latency flow_hold null_hooks)
BENCH_PKGS  := gnuplot-nox postfix openssl libssl-dev bpftool gcc
BENCH_ARGS  ?=

.PHONY: bench bench-deps bench-bins

bench:
	$(MAKE) deps
	$(MAKE) bench-deps
	$(MAKE) all
	$(MAKE) bench-bins
	$(PYTHON) bench/run.py --tlsguardd $(BUILD)/tlsguardd --tlsguardctl $(BUILD)/tlsguardctl \
		--bin $(BENCH_BUILD) $(BENCH_ARGS)

bench-deps:
	@if ! dpkg -s $(BENCH_PKGS) >/dev/null 2>&1; then \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BENCH_PKGS); \
	fi

bench-bins: $(BENCH_BINS)

$(BENCH_BUILD)/%: bench/%.c bench/bench_util.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Wall -Wextra -Werror -D_GNU_SOURCE -o $@ $< -lssl -lcrypto -lpthread

# The floor: tlsguard's hooks with programs that do nothing (bench/run.py).
$(BENCH_BUILD)/null_hooks.bpf.o: bench/null_hooks.bpf.c vmlinux.h
	@mkdir -p $(@D)
	$(CLANG) -g -O2 -target bpf -D__TARGET_ARCH_$(ARCH) -Wall -Werror -I. -c $< -o $@

$(BENCH_BUILD)/null_hooks.skel.h: $(BENCH_BUILD)/null_hooks.bpf.o
	$(BPFTOOL) gen skeleton $< name null_hooks > $@

$(BENCH_BUILD)/null_hooks: bench/null_hooks.c bench/bench_util.h $(BENCH_BUILD)/null_hooks.skel.h
	$(CC) $(CFLAGS) -Wall -Wextra -Werror -D_GNU_SOURCE -I$(BENCH_BUILD) -o $@ $< \
		$$(pkg-config --cflags --libs libbpf)
# ---- end of bench ----------------------------------------------------------
