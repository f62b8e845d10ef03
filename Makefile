# libpfn: build, demo, tests and install. `make help` lists the targets and variables.
#
# `make demo` needs a C compiler, make and Rust, and installs nothing else; `make test` runs
# every test (Rust, lint, header drift, rust-version, C against the shared and the static
# library, C++, sanitizers, valgrind, examples, Python from the tree and installed, install,
# benchmark correctness) and ends with "make test: N passed, M failed". V=1 shows every
# command and every test's output.

CARGO    ?= cargo
CC       ?= cc
CXX      ?= c++
CFLAGS   ?= -O2 -g
WARN     := -std=c11 -Wall -Wextra -Wpedantic -Werror
LIBDIR   := target/release
SHARED   := $(LIBDIR)/libpfn.so
STATIC   := $(LIBDIR)/libpfn.a
# What a Rust static library needs from the system (cargo rustc -- --print native-static-libs).
STATIC_LIBS := -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
OUT      := build
export OUT
# `make demo` on this file (default: /dev/shm/libpfn-demo-<uid>.pmem); KEEP=1 keeps the file
# the demo creates (it removes it otherwise). An existing file that is not a demo pool is
# refused untouched.
PMEM_FILE ?=
KEEP     ?=
VERSION  := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
# The soname (set in build.rs) carries the major version.
MAJOR    := $(firstword $(subst ., ,$(VERSION)))
PYTHON   := $(OUT)/venv/bin/python

# int_dlclose is not linked against libpfn (it dlopens it): it has its own rule.
DL_TESTS := int_dlclose
C_TESTS  := $(filter-out $(DL_TESTS),$(basename $(notdir $(wildcard c-tests/*.c))))
C_HEADERS := $(wildcard c-tests/*.h)
C_SHARED := $(addprefix $(OUT)/shared/,$(C_TESTS))
C_STATIC := $(addprefix $(OUT)/static/,$(C_TESTS))
RUST_SOURCES := Cargo.toml Cargo.lock build.rs cbindgen.toml $(shell find src -name '*.rs')

# Quiet by default, like Kbuild: one short line per build step and per test. V=1 shows the
# commands, and each test's output as it runs.
ifeq ($(V),1)
  Q :=
  say := @true
  CARGO_QUIET :=
else
  Q := @
  say := @printf '  %-7s %s\n'
  CARGO_QUIET := --quiet
endif

# Prerequisites are made in the order written (deps first, then each test in turn), and test
# output does not interleave.
.NOTPARALLEL:
# Test programs are made through pattern rules: keep them (make would delete them as
# intermediate files at the end).
.SECONDARY:

.PHONY: all help deps deps-demo lib demo test clean install install-strip uninstall \
        lint cargo-test header-check header-names rust-version c-test check-cxx check-sanitizers \
        check-asan check-valgrind check-examples check-demo-deps check-python check-install \
        bench bench-check bench-persist bench-chase bench-grace bench-sg bench-pages bench-dax

all: lib

help:
	@echo 'libpfn $(VERSION). Targets:'
	@echo '  make / make lib    build target/release/libpfn.{so,a} (and the libpfn.so.$(MAJOR) link)'
	@echo '  make demo          build and run the demo (needs only a C compiler, make and Rust)'
	@echo '                     PMEM_FILE=path: the file to use; KEEP=1: keep the file it creates'
	@echo '  make test          every test; ends with "make test: N passed, M failed"'
	@echo '                     (installs the test tools it lacks: scripts/install-deps.sh test)'
	@echo '  make install       install the built library, header and pfn.pc (never rebuilds with'
	@echo '                     sudo: run make first); PREFIX=/usr/local, DESTDIR=, libdir=, includedir='
	@echo '  make install-strip the same, with the libraries stripped (about 5 MB -> 0.4 MB)'
	@echo '  make uninstall     remove what install installed (same variables)'
	@echo '  make bench         the benchmarks (QUICK=1: under a minute); results in bench/results/'
	@echo '                     (parts alone: make bench-persist, make bench-sg, make bench-pages,'
	@echo '                     make bench-dax, make bench-chase, make bench-grace)'
	@echo '  make clean         remove target/ and build/ (with build/venv)'
	@echo 'Parts of make test: lint cargo-test header-check rust-version c-test check-cxx'
	@echo '  check-asan check-valgrind check-sanitizers check-examples check-demo-deps'
	@echo '  check-python check-install bench-check'
	@echo 'Variables: V=1 (show commands and test output), CC, CXX, CFLAGS, CARGO,'
	@echo '  PFN_TEST_HANG_SECONDS (a test'"'"'s hang cap, default 300), PFN_TEST_DIR (pmem files,'
	@echo '  default /dev/shm), PFN_STRESS_SECONDS (keep stress tests running that long: a soak)'

deps:
	@bash scripts/install-deps.sh test

deps-demo:
	@bash scripts/install-deps.sh demo

# ---- the library. `lib` always asks cargo (it knows best what changed); targets that only
# need the files (install, the tests) depend on the files, so that an up-to-date build is used
# as it is, without cargo (as under sudo).
define cargo-build
	@command -v $(CARGO) >/dev/null 2>&1 || { echo "make: $(SHARED) must be (re)built and $(CARGO) is not on PATH: for sudo make install, run make as the user who has Rust first; without Rust, install it (https://rustup.rs)"; exit 1; }
	$(say) CARGO "$(LIBDIR)/libpfn.so $(LIBDIR)/libpfn.a"
	$(Q)$(CARGO) build --release $(CARGO_QUIET)
	$(Q)ln -sf libpfn.so $(LIBDIR)/libpfn.so.$(MAJOR)
	@# cargo relinks only when the output changes; make must see the files as current too.
	$(Q)if [ -n "$$(find $(RUST_SOURCES) -newer $(SHARED) 2>/dev/null)" ] || \
		[ -n "$$(find $(RUST_SOURCES) -newer $(STATIC) 2>/dev/null)" ]; then touch $(SHARED) $(STATIC); fi
endef

lib:
	$(cargo-build)

$(SHARED) $(STATIC): $(RUST_SOURCES)
	$(cargo-build)

$(OUT)/shared/%: c-tests/%.c $(C_HEADERS) include/pfn.h $(SHARED)
	@mkdir -p $(@D)
	$(say) CC $@
	$(Q)$(CC) $(WARN) $(CFLAGS) -Iinclude -o $@ $< -L$(LIBDIR) -lpfn -Wl,-rpath,'$$ORIGIN/../../$(LIBDIR)' -lpthread

$(OUT)/static/%: c-tests/%.c $(C_HEADERS) include/pfn.h $(STATIC)
	@mkdir -p $(@D)
	$(say) CC $@
	$(Q)$(CC) $(WARN) $(CFLAGS) -Iinclude -o $@ $< $(STATIC) $(STATIC_LIBS)

$(OUT)/demo $(OUT)/plog: $(OUT)/%: examples/%.c include/pfn.h $(STATIC)
	@mkdir -p $(@D)
	$(say) CC $@
	$(Q)$(CC) $(WARN) $(CFLAGS) -Iinclude -o $@ $< $(STATIC) $(STATIC_LIBS)

demo: deps-demo $(OUT)/demo
	$(say) RUN "$(strip $(OUT)/demo $(if $(KEEP),--keep) $(PMEM_FILE))"
	@./$(OUT)/demo $(if $(KEEP),--keep) $(PMEM_FILE)

# ---- the test list
# Every test is a target run/NAME whose recipe runs one command through $(RUN): it logs the
# output to build/test-logs/NAME.log, records PASS or FAIL in build/test-results/NAME and
# shows the log only when the test fails. `make test` runs every name in TESTS and counts them
# all in its last line. A new test joins by adding its name to TESTS (or to one of the lists
# below) and giving run/NAME a rule; a new c-tests/*.c joins every C list by itself.
RUN      = @bash scripts/run-test.sh
SUMMARY  = @bash scripts/test-summary.sh
# --trace-children: some tests re-run themselves under other settings (c-tests/rerun.h).
VALGRIND := valgrind --trace-children=yes --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect -q
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
# The header compiles as C++ and these tests pass when built so.
CXX_TESTS := api_encoding int_section api_sg
# The thread and churn tests run once more with readers fencing themselves (no membarrier),
# and once more with every membarrier call failing after set-up (PFN_TEST_MEMBARRIER_FAIL:
# grace periods must then use the fallback barriers, never a local fence alone).
FENCE_TESTS := int_threads stress_churn
# The churn stress runs once more with 64 kmap readers on this 2-CPU machine.
CROWD_TESTS := stress_churn
# The durability, truncation, scatterlist and DAX tests run once more with every mapping in
# flush mode.
FLUSH_TESTS := int_durability int_truncate int_sg int_dax
# Tests that bring their own malloc (allocation-failure injection) cannot run under ASan or
# valgrind, which bring theirs.
OWN_MALLOC_TESTS := int_oom int_free_race int_sg_oom

LINT_TESTS     := lint/rustfmt lint/clippy
RUST_TESTS     := cargo-test header-check header-names rust-version
C_RUNS         := $(addprefix c/shared/,$(C_TESTS)) $(addprefix c/static/,$(C_TESTS)) \
                  $(addprefix c/no-membarrier/,$(FENCE_TESTS)) \
                  $(addprefix c/membarrier-fails/,$(FENCE_TESTS)) $(addprefix c/dl/,$(DL_TESTS)) \
                  $(addprefix c/flush/,$(FLUSH_TESTS)) $(addprefix c/crowd/,$(CROWD_TESTS))
CXX_RUNS       := $(addprefix c/cxx/,$(CXX_TESTS))
ASAN_RUNS      := $(addprefix c/asan/,$(filter-out $(OWN_MALLOC_TESTS),$(C_TESTS)))
VALGRIND_RUNS  := $(addprefix c/valgrind/,$(filter-out $(OWN_MALLOC_TESTS),$(C_TESTS)) $(DL_TESTS))
EXAMPLE_TESTS  := examples/demo examples/plog
DEMO_DEPS_TESTS := demo-deps
PYTHON_TESTS   := python/tree python/installed
INSTALL_TESTS  := install
BENCH_TESTS    := bench-verify bench-verify-persist bench-verify-chase bench-verify-sg \
                  bench-verify-pages bench-verify-dax
TESTS := $(LINT_TESTS) $(RUST_TESTS) $(C_RUNS) $(CXX_RUNS) $(ASAN_RUNS) $(VALGRIND_RUNS) \
         $(EXAMPLE_TESTS) $(DEMO_DEPS_TESTS) $(PYTHON_TESTS) $(INSTALL_TESTS) $(BENCH_TESTS)
runs = $(addprefix run/,$(1))

test: deps $(call runs,$(TESTS))
	$(SUMMARY) "make test" $(TESTS)

run/lint/rustfmt:
	$(RUN) lint/rustfmt $(CARGO) fmt --check
run/lint/clippy:
	$(RUN) lint/clippy $(CARGO) clippy --release --all-targets -- -D warnings
run/cargo-test:
	$(RUN) cargo-test $(CARGO) test --release
# build.rs regenerated the header: it must equal the committed one.
run/header-check: $(SHARED)
	$(RUN) header-check bash -c 'if git rev-parse --git-dir >/dev/null 2>&1; then \
		git diff --exit-code -- include/pfn.h || \
		{ echo "include/pfn.h changed in the build: commit the regenerated header"; exit 1; }; \
		else echo "not a git checkout: header drift not checked"; fi'
run/header-names: $(SHARED)
	$(RUN) header-names python3 scripts/check-header-names.py include/pfn.h
run/rust-version:
	$(RUN) rust-version python3 scripts/check-rust-version.py

run/c/shared/%: $(OUT)/shared/%
	$(RUN) $(@:run/%=%) ./$<
run/c/static/%: $(OUT)/static/%
	$(RUN) $(@:run/%=%) ./$<
run/c/no-membarrier/%: $(OUT)/shared/%
	$(RUN) $(@:run/%=%) env PFN_NO_MEMBARRIER=1 ./$<
run/c/membarrier-fails/%: $(OUT)/shared/%
	$(RUN) $(@:run/%=%) env PFN_TEST_MEMBARRIER_FAIL=1000000000 ./$<
run/c/crowd/%: $(OUT)/shared/%
	$(RUN) $(@:run/%=%) env PFN_TEST_READERS=64 ./$<
run/c/flush/%: $(OUT)/shared/%
	$(RUN) $(@:run/%=%) env PFN_FORCE_GRANULARITY=cache_line ./$<
run/c/dl/%: $(OUT)/dl/%
	$(RUN) $(@:run/%=%) ./$<
run/c/valgrind/int_dlclose: $(OUT)/dl/int_dlclose
	$(RUN) $(@:run/%=%) env PFN_TEST_QUICK=1 $(VALGRIND) ./$<
run/c/cxx/%: $(OUT)/cxx/%
	$(RUN) $(@:run/%=%) ./$<
run/c/asan/%: $(OUT)/asan/%
	$(RUN) $(@:run/%=%) env ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 ./$<
run/c/valgrind/%: $(OUT)/shared/%
	$(RUN) $(@:run/%=%) env PFN_TEST_QUICK=1 $(VALGRIND) ./$<

$(OUT)/cxx/%: c-tests/%.c $(C_HEADERS) include/pfn.h $(STATIC)
	@mkdir -p $(@D)
	$(say) CXX $@
	$(Q)$(CXX) -x c++ -std=c++17 -Wall -Wextra -Wpedantic -Werror -Wno-missing-field-initializers $(CFLAGS) -Iinclude -o $@ $< -x none $(STATIC) $(STATIC_LIBS)

# Not linked against libpfn: it loads the shared library itself.
$(OUT)/dl/%: c-tests/%.c $(C_HEADERS) include/pfn.h $(SHARED)
	@mkdir -p $(@D)
	$(say) CC $@
	$(Q)$(CC) $(WARN) $(CFLAGS) -Iinclude -DPFN_SO_PATH='"$(abspath $(SHARED))"' -o $@ $< -ldl -lpthread

$(OUT)/asan/%: c-tests/%.c $(C_HEADERS) include/pfn.h $(STATIC)
	@mkdir -p $(@D)
	$(say) CC $@
	$(Q)$(CC) $(WARN) -O1 -g $(SAN_FLAGS) -Iinclude -o $@ $< $(STATIC) $(STATIC_LIBS)

run/examples/demo: $(OUT)/demo
	$(RUN) $(@:run/%=%) bash examples/demo_test.sh $(OUT)/demo
run/examples/plog: $(OUT)/plog
	$(RUN) $(@:run/%=%) bash examples/plog_test.sh $(OUT)/plog
# `make demo` with a PATH of only a C compiler, make, Rust and basic commands.
run/demo-deps: $(OUT)/demo
	$(RUN) $(@:run/%=%) bash scripts/check-demo-deps.sh

$(PYTHON):
	@bash scripts/install-deps.sh test
# The package from the source tree, then installed with pip into build/venv.
run/python/tree: $(SHARED) $(PYTHON)
	$(RUN) $(@:run/%=%) env PYTHONPATH=python PFN_LIBRARY=$(SHARED) $(PYTHON) -m pytest -q -p no:cacheprovider python/tests
run/python/installed: $(SHARED) $(PYTHON)
	$(RUN) $(@:run/%=%) bash scripts/test-python-installed.sh $(PYTHON)

run/install: $(SHARED) $(STATIC)
	$(RUN) $(@:run/%=%) bash scripts/check-install.sh

run/bench-verify: $(OUT)/bench/bench
	$(RUN) $(@:run/%=%) ./$(OUT)/bench/bench --verify
run/bench-verify-persist: $(OUT)/bench/persist
	$(RUN) $(@:run/%=%) ./$(OUT)/bench/persist --verify
run/bench-verify-chase: $(OUT)/bench/chase
	$(RUN) $(@:run/%=%) ./$(OUT)/bench/chase --verify
run/bench-verify-sg: $(OUT)/bench/sg
	$(RUN) $(@:run/%=%) ./$(OUT)/bench/sg --verify
run/bench-verify-pages: $(OUT)/bench/pages
	$(RUN) $(@:run/%=%) ./$(OUT)/bench/pages --verify
run/bench-verify-dax: $(OUT)/bench/dax
	$(RUN) $(@:run/%=%) ./$(OUT)/bench/dax --verify

# Parts of `make test`, each ending with its own count.
lint: $(call runs,$(LINT_TESTS))
	$(SUMMARY) $@ $(LINT_TESTS)
cargo-test header-check header-names rust-version: %: run/%
	$(SUMMARY) $@ $@
c-test: $(call runs,$(C_RUNS))
	$(SUMMARY) $@ $(C_RUNS)
check-cxx: $(call runs,$(CXX_RUNS))
	$(SUMMARY) $@ $(CXX_RUNS)
check-asan: $(call runs,$(ASAN_RUNS))
	$(SUMMARY) $@ $(ASAN_RUNS)
check-valgrind: $(call runs,$(VALGRIND_RUNS))
	$(SUMMARY) $@ $(VALGRIND_RUNS)
check-sanitizers: $(call runs,$(ASAN_RUNS) $(VALGRIND_RUNS))
	$(SUMMARY) $@ $(ASAN_RUNS) $(VALGRIND_RUNS)
check-examples: $(call runs,$(EXAMPLE_TESTS))
	$(SUMMARY) $@ $(EXAMPLE_TESTS)
check-demo-deps: $(call runs,$(DEMO_DEPS_TESTS))
	$(SUMMARY) $@ $(DEMO_DEPS_TESTS)
check-python: $(call runs,$(PYTHON_TESTS))
	$(SUMMARY) $@ $(PYTHON_TESTS)
check-install: $(call runs,$(INSTALL_TESTS))
	$(SUMMARY) $@ $(INSTALL_TESTS)
bench-check: $(call runs,$(BENCH_TESTS))
	$(SUMMARY) $@ $(BENCH_TESTS)

# ---- install (GNU conventions: PREFIX, DESTDIR, libdir, includedir; install-strip)
PREFIX     ?= /usr/local
DESTDIR    ?=
libdir     ?= $(PREFIX)/lib
includedir ?= $(PREFIX)/include
LIBDEST    := $(DESTDIR)$(libdir)
INCDEST    := $(DESTDIR)$(includedir)
INSTALL    ?= install
STRIP      ?= strip
# Non-root users' PATH often lacks /sbin.
LDCONFIG   ?= $(shell command -v ldconfig 2>/dev/null || echo /sbin/ldconfig)

# Installs what is built: when the build is up to date, cargo is not needed (sudo make install).
install: $(SHARED) $(STATIC) include/pfn.h
	@for d in $(LIBDEST) $(INCDEST); do while [ ! -e "$$d" ]; do d=$$(dirname "$$d"); done; \
		[ -w "$$d" ] || { echo "make install: $$d is not writable: run it as root (sudo make install), or install elsewhere (make install PREFIX=\$$HOME/.local)"; exit 1; }; done
	$(say) INSTALL "$(LIBDEST)/libpfn.so.$(VERSION) libpfn.a pkgconfig/pfn.pc, $(INCDEST)/pfn.h"
	$(Q)$(INSTALL) -d $(LIBDEST)/pkgconfig $(INCDEST)
	$(Q)$(INSTALL) -m 0755 $(SHARED) $(LIBDEST)/libpfn.so.$(VERSION)
	$(Q)ln -sf libpfn.so.$(VERSION) $(LIBDEST)/libpfn.so.$(MAJOR)
	$(Q)ln -sf libpfn.so.$(MAJOR) $(LIBDEST)/libpfn.so
	$(Q)$(INSTALL) -m 0644 $(STATIC) $(LIBDEST)/libpfn.a
	$(Q)$(INSTALL) -m 0644 include/pfn.h $(INCDEST)/pfn.h
	$(Q)sed -e 's|@LIBDIR@|$(libdir)|' -e 's|@INCLUDEDIR@|$(includedir)|' -e 's|@VERSION@|$(VERSION)|' \
		-e 's|@STATIC_LIBS@|$(STATIC_LIBS)|' pfn.pc.in > $(LIBDEST)/pkgconfig/pfn.pc
	$(if $(INSTALL_STRIP),$(Q)$(STRIP) --strip-unneeded $(LIBDEST)/libpfn.so.$(VERSION))
	$(if $(INSTALL_STRIP),$(Q)$(STRIP) --strip-debug $(LIBDEST)/libpfn.a)
	@DESTDIR='$(DESTDIR)' LDCONFIG='$(LDCONFIG)' bash scripts/post-install.sh install '$(libdir)' '$(MAJOR)'

install-strip:
	@$(MAKE) --no-print-directory install INSTALL_STRIP=1

uninstall:
	rm -f $(LIBDEST)/libpfn.so.$(VERSION) $(LIBDEST)/libpfn.so.$(MAJOR) $(LIBDEST)/libpfn.so \
		$(LIBDEST)/libpfn.a $(LIBDEST)/pkgconfig/pfn.pc $(INCDEST)/pfn.h
	@DESTDIR='$(DESTDIR)' LDCONFIG='$(LDCONFIG)' bash scripts/post-install.sh uninstall '$(libdir)' '$(MAJOR)'

# ---- benchmarks (not part of `make test`; `make bench-check` is). The peers are looked up
# only when a benchmark is built (`=`), so that `make demo` needs no pkg-config.
BENCH_OUT  := $(OUT)/bench
BENCH_PEERS = $(shell pkg-config --exists liburcu-memb 2>/dev/null && echo -DHAVE_URCU $$(pkg-config --cflags liburcu-memb)) \
              $(shell pkg-config --exists libpmemobj 2>/dev/null && echo -DHAVE_PMEMOBJ $$(pkg-config --cflags libpmemobj)) \
              $(shell test -f /usr/include/valgrind/callgrind.h && echo -DHAVE_CALLGRIND)
BENCH_LIBS = $(shell pkg-config --exists liburcu-memb 2>/dev/null && pkg-config --libs liburcu-memb) \
             $(shell pkg-config --exists libpmemobj 2>/dev/null && pkg-config --libs libpmemobj)
BENCH_RPATH := -Wl,-rpath,'$$ORIGIN' -Wl,-rpath,'$$ORIGIN/../../$(LIBDIR)'

$(BENCH_OUT)/libpfnfloor.so: bench/floor.c bench/floor.h include/pfn.h
	@mkdir -p $(@D)
	$(say) CC $@
	$(Q)$(CC) -std=gnu11 -Wall -Wextra -Werror -O2 -g -fPIC -shared -Iinclude -o $@ $<

$(BENCH_OUT)/bench: bench/bench.c bench/timing.h bench/seed.c bench/seed.h bench/floor.h include/pfn.h $(BENCH_OUT)/libpfnfloor.so $(SHARED)
	$(say) CC $@
	$(Q)$(CC) -std=gnu11 -Wall -Wextra -Werror -O2 -g -Iinclude -Ibench $(BENCH_PEERS) -o $@ \
		bench/bench.c bench/seed.c -L$(BENCH_OUT) -lpfnfloor -L$(LIBDIR) -lpfn $(BENCH_LIBS) -lpthread $(BENCH_RPATH)

# The persistence benchmark: libpfn against libpmem (when libpmem-dev is installed).
PERSIST_PEER = $(shell pkg-config --exists libpmem 2>/dev/null && echo -DHAVE_PMEM) \
                $(shell test -f /usr/include/valgrind/callgrind.h && echo -DHAVE_CALLGRIND)
PERSIST_LIBS = $(shell pkg-config --exists libpmem 2>/dev/null && pkg-config --libs libpmem)

$(BENCH_OUT)/persist: bench/persist.c bench/timing.h include/pfn.h $(SHARED)
	@mkdir -p $(@D)
	$(say) CC $@
	$(Q)$(CC) -std=gnu11 -Wall -Wextra -Werror -O2 -g -Iinclude $(PERSIST_PEER) -o $@ bench/persist.c \
		-L$(LIBDIR) -lpfn $(PERSIST_LIBS) $(BENCH_RPATH)

# Dependent pointer chasing through structures larger than the caches (libpfn beside raw
# pointers and libpmemobj).
$(BENCH_OUT)/chase: bench/chase.c bench/timing.h include/pfn.h $(SHARED)
	@mkdir -p $(@D)
	$(say) CC $@
	$(Q)$(CC) -std=gnu11 -Wall -Wextra -Werror -O2 -g -Iinclude $(BENCH_PEERS) -o $@ bench/chase.c \
		-L$(LIBDIR) -lpfn $(BENCH_LIBS) $(BENCH_RPATH)

# Grace periods with 1..64 busy readers, beside liburcu-memb's synchronize_rcu.
$(BENCH_OUT)/grace: bench/grace.c include/pfn.h $(SHARED)
	@mkdir -p $(@D)
	$(say) CC $@
	$(Q)$(CC) -std=gnu11 -Wall -Wextra -Werror -O2 -g -Iinclude $(BENCH_PEERS) -o $@ bench/grace.c \
		-L$(LIBDIR) -lpfn $(BENCH_LIBS) -lpthread $(BENCH_RPATH)

# Scatterlist copies against memcpy of the same bytes, and iovec building.
$(BENCH_OUT)/sg: bench/sg.c bench/timing.h include/pfn.h $(SHARED)
	@mkdir -p $(@D)
	$(say) CC $@
	$(Q)$(CC) -std=gnu11 -Wall -Wextra -Werror -O2 -g -Iinclude -o $@ bench/sg.c -L$(LIBDIR) -lpfn $(BENCH_RPATH)

# Page descriptors and pins against the ABI floor, raw arithmetic and kmap.
$(BENCH_OUT)/pages: bench/pages.c bench/timing.h bench/floor.h include/pfn.h $(BENCH_OUT)/libpfnfloor.so $(SHARED)
	@mkdir -p $(@D)
	$(say) CC $@
	$(Q)$(CC) -std=gnu11 -Wall -Wextra -Werror -O2 -g -Iinclude -Ibench -o $@ bench/pages.c \
		-L$(BENCH_OUT) -lpfnfloor -L$(LIBDIR) -lpfn -lpthread $(BENCH_RPATH)

# DAX devices: direct_access, and reads and writes against memcpy of the same bytes.
$(BENCH_OUT)/dax: bench/dax.c bench/timing.h include/pfn.h $(SHARED)
	@mkdir -p $(@D)
	$(say) CC $@
	$(Q)$(CC) -std=gnu11 -Wall -Wextra -Werror -O2 -g -Iinclude -o $@ bench/dax.c -L$(LIBDIR) -lpfn $(BENCH_RPATH)

# QUICK=1: a run of under a minute. The results go to bench/results/.
bench: lib $(BENCH_OUT)/bench bench-persist bench-chase bench-grace bench-sg bench-pages bench-dax
	@mkdir -p bench/results
	./$(BENCH_OUT)/bench $(if $(QUICK),--quick) --out bench/results
	@bash bench/callgrind.sh $(BENCH_OUT)/bench bench/results $(if $(QUICK),quick)
	@bash bench/plot.sh bench/results

# The grace-period part alone (about 30 s; QUICK=1: about 10 s).
bench-grace: lib $(BENCH_OUT)/grace
	@mkdir -p bench/results
	./$(BENCH_OUT)/grace $(if $(QUICK),--quick) --out bench/results

# The pointer-chasing part alone (about 4 minutes; QUICK=1: 10^6 nodes only, about 15 s).
bench-chase: lib $(BENCH_OUT)/chase
	@mkdir -p bench/results
	./$(BENCH_OUT)/chase $(if $(QUICK),--quick) --out bench/results
	@bash bench/callgrind_chase.sh $(BENCH_OUT)/chase bench/results

# The persistence part alone: libpfn against libpmem (about 10 s; QUICK=1: about 5 s).
bench-persist: lib $(BENCH_OUT)/persist
	@mkdir -p bench/results
	./$(BENCH_OUT)/persist $(if $(QUICK),--quick) --out bench/results
	@bash bench/callgrind_persist.sh $(BENCH_OUT)/persist bench/results

# The page-descriptor and pin part alone (about 5 s; QUICK=1: about 1 s). Results:
# bench/results/pages.csv.
bench-pages: lib $(BENCH_OUT)/pages
	@mkdir -p bench/results
	./$(BENCH_OUT)/pages $(if $(QUICK),--quick) --out bench/results

# The scatterlist part alone (about 2 s; QUICK=1: under 1 s). Results: bench/results/sg.csv.
bench-sg: lib $(BENCH_OUT)/sg
	@mkdir -p bench/results
	./$(BENCH_OUT)/sg $(if $(QUICK),--quick) --out bench/results

# The DAX part alone, in the default (msync on tmpfs) and the flush mode (about 10 s; QUICK=1:
# about 3 s). Results: bench/results/dax-page.csv and dax-cache_line.csv.
bench-dax: lib $(BENCH_OUT)/dax
	@mkdir -p bench/results
	./$(BENCH_OUT)/dax $(if $(QUICK),--quick) --out bench/results
	PFN_FORCE_GRANULARITY=cache_line ./$(BENCH_OUT)/dax $(if $(QUICK),--quick) --out bench/results

clean:
	$(CARGO) clean
	rm -rf $(OUT)
