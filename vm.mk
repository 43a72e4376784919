# ---- vmtest -----------------------------------------------------------------
# Runs the tests under other kernels: tools/vmtest boots each in QEMU with
# this machine's root file system shared read-only (9p) under a tmpfs
# overlay, and runs one command inside as root. See README.md, "Kernels".
#
#   make vm-deps        QEMU, busybox-static, kmod, e2fsprogs; the kernels of the matrix
#                       unpacked (not installed) in build/vm
#   make vmtest         on each kernel in turn: the verifier check, the unit
#                       tests and the suites of tests/e2e/SUITES tagged vm
#   make vmtest-smoke   on each kernel in turn: the verifier check, and the
#                       suites tagged smoke (hold_run: tlsguardd loads and holds)
#   make verifier-table the verifier check on this machine's kernel, then
#                       the table of every build/verifier-*.txt into README.md
#
#   VM_KERNELS=...      the matrix (default: Debian 12's 6.1, and 6.12 from
#                       bookworm-security)
#   VM_KERNEL=K         one kernel instead: a name above or a bzImage (modules:
#                       see tools/vmtest)
#   VM_ARGS=...         more tools/vmtest options (--memory, --cpus, --accel)
#   VM_SUITES=...       what make vmtest runs after the verifier check:
#                       tests/e2e/runner.py's arguments (default: the unit
#                       tests, then --tag vm; e.g. "--tag vm tls_run")
#
# Nothing is built in the VM: the host builds, the VM runs what was built.
# Each suite in the VM binds its usual loopback addresses and pins, but in the
# VM's own kernel: no lock against the host's suites is needed.
#
# The first suite of every VM run is the verifier check: it writes
# build/verifier-RELEASE.txt through a directory shared with the host
# (tools/vmtest --share), which the VM's overlay would otherwise lose.

VM_KERNELS ?= debian-6.1 debian-6.12
VM_KERNEL  ?=
VM_ARGS    ?=
VM_RUN     := $(or $(VM_KERNEL),$(VM_KERNELS))
VM_PKGS    := qemu-system-x86 busybox-static kmod e2fsprogs
VM_OUT     := $(BUILD)/vm-out
VMTEST     := $(PYTHON) tools/vmtest $(VM_ARGS)
VM_TOOLS   := --tlsguardd $(BUILD)/tlsguardd --tlsguardctl $(BUILD)/tlsguardctl

# Loads every BPF program of the object, attaches nothing, prints a table
# of verifier costs and "N passed, M failed"; fails when one is over the
# budget (tlsguardd(8)).
VERIFIER_CHECK ?= $(BUILD)/tlsguardd --check-verifier

# tests/e2e/runner.py runs the name=command pairs first, then the suites of
# tests/e2e/SUITES with the tag given (one VM boot runs them all).
VM_VERIFIER := verifier='f=$(VM_OUT)/verifier-$$(uname -r).txt; \
	$(VERIFIER_CHECK) > $$f; rc=$$?; cat $$f; exit $$rc'
VM_UNIT   := unit='rc=0; for t in $(UNIT_TESTS); do $$t || rc=1; done; exit $$rc'
VM_RUNNER := tests/e2e/runner.py $(VM_TOOLS) --build $(BUILD) --mta-deps $(MTA_DEPS)
VM_SUITES ?= $(VM_UNIT) --tag vm
VM_SMOKE  := --tag smoke

# $(call vm_matrix,TIMEOUT,SUITES): one VM per kernel of VM_RUN, one after
# the other, each running SUITES; every kernel runs even when one fails.
# Then one line per kernel: its result and wall time (boot included).
define vm_matrix
	@mkdir -p $(VM_OUT); rm -f $(VM_OUT)/verifier-*.txt; rc=0; sum=; \
	for k in $(VM_RUN); do \
		echo "== kernel $$k"; t0=$$(date +%s); \
		$(VMTEST) --kernel $$k --share $(VM_OUT) --timeout $(1) -- \
			$(PYTHON) $(VM_RUNNER) $(2); s=$$?; \
		for f in $(VM_OUT)/verifier-*.txt; do \
			[ ! -e "$$f" ] || mv -f "$$f" $(BUILD)/; done; \
		if [ $$s -eq 0 ]; then r=pass; else r="FAIL (exit $$s)"; rc=1; fi; \
		sum="$$sum$$(printf '%-32s %-14s %8d' "$$k" "$$r" $$(($$(date +%s) - t0)))\n"; \
	done; \
	printf '\n%-32s %-14s %8s\n%b' kernel result seconds "$$sum"; exit $$rc
endef

.PHONY: vm-deps vmtest vmtest-smoke vmtest-deb vmtest-systemd verifier-table

# make vmtest-deb: make deb, then install, upgrade and purge the package in
# a VM of the first kernel of VM_RUN (its root is an overlay: nothing stays).
vmtest-deb: vm-deps deb
	$(VMTEST) --kernel $(firstword $(VM_RUN)) --timeout 900 -- \
		$(PYTHON) tests/e2e/suites/package_test.py \
		--deb $(DEB_DIR)/tlsguard_$(VERSION)_amd64.deb

# make vmtest-systemd: make deb, and the same tree built as the next version
# (DEB_VERSION, in $(BUILD)/deb-next); then, in a VM of the first kernel of
# VM_RUN booted with systemd as PID 1 (tools/vmtest --init systemd), the
# package and Postfix as the system runs them: install, send, kill -9,
# restart, the start setting, upgrade, reboot
# (tests/e2e/suites/systemd_test.py). Its disk image goes with the VM.
VM_DEB_NEXT = $(VERSION)+next1
vmtest-systemd: vm-deps deb
	$(MAKE) deb DEB_VERSION=$(VM_DEB_NEXT) DEB_DIR=$(BUILD)/deb-next
	$(VMTEST) --kernel $(firstword $(VM_RUN)) --init systemd --timeout 2400 -- \
		$(PYTHON) tests/e2e/suites/systemd_test.py \
		--deb $(DEB_DIR)/tlsguard_$(VERSION)_amd64.deb \
		--deb-next $(BUILD)/deb-next/tlsguard_$(VM_DEB_NEXT)_amd64.deb

vm-deps:
	@if ! dpkg -s $(VM_PKGS) >/dev/null 2>&1; then \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $(VM_PKGS); \
	fi
	@for k in $(VM_RUN); do $(VMTEST) --kernel $$k --fetch || exit 1; done

vmtest: vm-deps mta-deps all layout2 $(UNIT_TESTS)
	$(call vm_matrix,7200,$(VM_VERIFIER) $(VM_SUITES))

vmtest-smoke: vm-deps all
	$(call vm_matrix,1800,$(VM_VERIFIER) $(VM_SMOKE))

# The check on this machine's kernel (it loads the programs, attaches
# nothing), then the table of all build/verifier-*.txt: those of VM runs
# too. A stale one (a kernel no longer in the matrix) is removed by hand.
verifier-table: all
	@f=$(BUILD)/verifier-$$(uname -r).txt; $(VERIFIER_CHECK) > $$f; \
		echo "$(VERIFIER_CHECK): exit $$? on $$(uname -r)"; cat $$f
	$(PYTHON) tools/verifier_table --readme README.md $(BUILD)/verifier-*.txt
# ---- end of vmtest ------------------------------------------------------------
