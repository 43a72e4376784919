# tests/fuzz/fuzz.mk - libFuzzer targets for the parsers in include/, built
# from the very headers the BPF programs compile. Included by the top-level
# Makefile (include tests/fuzz/fuzz.mk); see tests/fuzz/README.md.
#
#   make fuzz [FUZZ_SECONDS=30]  build the targets into $(BUILD)/fuzz/, run
#                                each for FUZZ_SECONDS, print executions and
#                                coverage per target; fails if one crashed
#   make fuzz-regress            run each target once over the checked-in
#                                corpus and tests/fuzz/crashes/ (fast; CI)
#
# Uses BUILD and CLANG from the top-level Makefile. FUZZ_INCLUDES may point
# at another copy of the headers (e.g. to try a fix) ahead of include/.

BUILD         ?= build
CLANG         ?= clang
FUZZ_SECONDS  ?= 30
FUZZ_DIR      := $(BUILD)/fuzz
FUZZ_TARGETS  := fuzz_smtp_cmd fuzz_smtp_reply fuzz_tls
FUZZ_BINS     := $(addprefix $(FUZZ_DIR)/,$(FUZZ_TARGETS))
FUZZ_CAPTURES := $(sort $(wildcard tests/unit/data/serverhello_tls1*.hex))
# libFuzzer and its sanitizers come from libclang-rt-14-dev: clang 14 only.
FUZZ_CC       ?= $(CLANG)
FUZZ_CFLAGS   ?= -g -O1 -fno-omit-frame-pointer \
		 -fsanitize=fuzzer,address,undefined \
		 -fno-sanitize-recover=undefined
FUZZ_INCLUDES ?=
# Options for every run: inputs up to 4 KiB (room for lines beyond
# TG_LINE_MAX and many records), a run of one input over 10 s is a hang.
FUZZ_OPTS     ?= -max_len=4096 -timeout=10 -rss_limit_mb=2048

.PHONY: fuzz fuzz-build fuzz-regress fuzz-deps

fuzz-deps:
	@dpkg -s libclang-rt-14-dev >/dev/null 2>&1 || \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-rt-14-dev || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq libclang-rt-14-dev; }

$(FUZZ_DIR)/serverhello_data.h: $(FUZZ_CAPTURES) tests/fuzz/hex2c.awk
	@mkdir -p $(@D)
	awk -f tests/fuzz/hex2c.awk $(FUZZ_CAPTURES) > $@

$(FUZZ_BINS): $(FUZZ_DIR)/%: tests/fuzz/%.c tests/fuzz/fuzz_common.h \
		$(wildcard include/*.h) $(FUZZ_DIR)/serverhello_data.h | fuzz-deps
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Wall -Wextra -Werror -D_GNU_SOURCE \
		$(FUZZ_INCLUDES) -Iinclude -I$(FUZZ_DIR) -o $@ $<

fuzz-build: $(FUZZ_BINS)

# Each target fuzzes for FUZZ_SECONDS: new inputs go to the working corpus
# $(FUZZ_DIR)/corpus-T (the first directory, the only one libFuzzer writes),
# seeded from tests/fuzz/corpus/T and the regression inputs of
# tests/fuzz/crashes/T. A crash leaves its input in $(FUZZ_DIR)/artifacts-T/.
fuzz: $(FUZZ_BINS)
	@rc=0; summary=""; \
	for t in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_DIR)/corpus-$$t $(FUZZ_DIR)/artifacts-$$t; \
		seeds=tests/fuzz/corpus/$$t; \
		[ -d tests/fuzz/crashes/$$t ] && seeds="$$seeds tests/fuzz/crashes/$$t"; \
		dict=; [ -f tests/fuzz/dict/$$t.dict ] && dict=-dict=tests/fuzz/dict/$$t.dict; \
		echo "== $$t: fuzzing for $(FUZZ_SECONDS) s (log: $(FUZZ_DIR)/$$t.log)"; \
		$(FUZZ_DIR)/$$t $(FUZZ_OPTS) $$dict -max_total_time=$(FUZZ_SECONDS) \
			-print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/artifacts-$$t/ \
			$(FUZZ_DIR)/corpus-$$t $$seeds > $(FUZZ_DIR)/$$t.log 2>&1; \
		st=$$?; \
		execs=$$(sed -n 's/^stat::number_of_executed_units: *//p' $(FUZZ_DIR)/$$t.log | tail -1); \
		cov=$$(grep -E '^#[0-9]+' $(FUZZ_DIR)/$$t.log | grep -o 'cov: [0-9]* ft: [0-9]* corp: [0-9]*' | tail -1); \
		if [ $$st -ne 0 ]; then \
			rc=1; \
			art=$$(sed -n 's/.*Test unit written to //p' $(FUZZ_DIR)/$$t.log | tail -1); \
			echo "$$t: FAILED (exit $$st), input: $${art:-none}"; \
			grep -E 'invariant failed|ERROR: |runtime error' $(FUZZ_DIR)/$$t.log | head -5; \
			echo "   reproduce: $(FUZZ_DIR)/$$t $$art"; \
			echo "   minimize:  $(FUZZ_DIR)/$$t -minimize_crash=1 -runs=20000 -exact_artifact_path=$(FUZZ_DIR)/$$t.min $$art"; \
			res="FAILED"; \
		else \
			res="ok"; \
		fi; \
		summary="$$summary$$(printf '%-16s %-4s executions %-10s %s' $$t "$$res" "$${execs:-?}" "$$cov")\n"; \
	done; \
	printf "\nfuzz summary (FUZZ_SECONDS=$(FUZZ_SECONDS)):\n$$summary"; \
	exit $$rc

# Every checked-in input once: the seed corpus in one run per target, then
# each regression input on its own, so that every failure is reported.
fuzz-regress: $(FUZZ_BINS)
	@rc=0; \
	for t in $(FUZZ_TARGETS); do \
		echo "== $$t"; \
		n=$$(find tests/fuzz/corpus/$$t -type f | wc -l); \
		if $(FUZZ_DIR)/$$t $(FUZZ_OPTS) -runs=0 tests/fuzz/corpus/$$t \
			> $(FUZZ_DIR)/$$t.regress.log 2>&1; then \
			echo "   corpus: $$n inputs ok"; \
		else \
			rc=1; echo "   corpus: FAILED"; \
			grep -E 'invariant failed|ERROR: |runtime error' $(FUZZ_DIR)/$$t.regress.log | head -5; \
		fi; \
		for f in $$(find tests/fuzz/crashes/$$t -type f 2>/dev/null | sort); do \
			if $(FUZZ_DIR)/$$t $(FUZZ_OPTS) $$f > $(FUZZ_DIR)/$$t.regress.log 2>&1; then \
				echo "   ok      $$f"; \
			else \
				rc=1; echo "   FAILED  $$f"; \
				grep -E 'invariant failed|ERROR: |runtime error' $(FUZZ_DIR)/$$t.regress.log | head -3 | cut -c1-400 | sed 's/^/           /'; \
			fi; \
		done; \
	done; \
	exit $$rc
