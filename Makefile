# libpfn: build, demo and tests. `make demo` runs the library's main job; `make test` runs
# every test (Rust, lint, header drift, C against the shared and the static library).

CARGO    ?= cargo
CC       ?= cc
CFLAGS   ?= -O2 -g
WARN     := -std=c11 -Wall -Wextra -Wpedantic -Werror
LIBDIR   := target/release
SHARED   := $(LIBDIR)/libpfn.so
STATIC   := $(LIBDIR)/libpfn.a
# What a Rust static library needs from the system (cargo rustc -- --print native-static-libs).
STATIC_LIBS := -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
OUT      := build
PMEM_FILE ?= /dev/shm/libpfn-demo.pmem
# The soname (set in build.rs) carries the major version.
MAJOR    := $(shell sed -n 's/^version = "\([0-9]*\)\..*/\1/p' Cargo.toml | head -n 1)

C_TESTS  := $(basename $(notdir $(wildcard c-tests/*.c)))
C_SHARED := $(addprefix $(OUT)/shared/,$(C_TESTS))
C_STATIC := $(addprefix $(OUT)/static/,$(C_TESTS))

.PHONY: all deps lib demo test cargo-test lint header-check c-test clean install uninstall \
        check-install check-examples check-python

all: lib

deps:
	@bash scripts/install-deps.sh

lib:
	$(CARGO) build --release
	ln -sf libpfn.so $(LIBDIR)/libpfn.so.$(MAJOR)

$(SHARED) $(STATIC): lib

$(OUT)/shared/%: c-tests/%.c $(wildcard c-tests/*.h) include/pfn.h $(SHARED)
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CFLAGS) -Iinclude -o $@ $< -L$(LIBDIR) -lpfn -Wl,-rpath,'$$ORIGIN/../../$(LIBDIR)' -lpthread

$(OUT)/static/%: c-tests/%.c $(wildcard c-tests/*.h) include/pfn.h $(STATIC)
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CFLAGS) -Iinclude -o $@ $< $(STATIC) $(STATIC_LIBS)

$(OUT)/demo: examples/demo.c include/pfn.h $(STATIC)
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CFLAGS) -Iinclude -o $@ $< $(STATIC) $(STATIC_LIBS)

demo: deps lib $(OUT)/demo
	./$(OUT)/demo $(PMEM_FILE)

cargo-test:
	$(CARGO) test --release

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets -- -D warnings

# build.rs regenerated the header: it must equal the committed one.
header-check: lib
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
		git diff --exit-code -- include/pfn.h || \
		{ echo "include/pfn.h changed in the build: commit the regenerated header"; exit 1; }; \
	else echo "not a git checkout: header drift not checked"; fi

# The thread and churn tests run once more with readers fencing themselves (no membarrier).
FENCE_TESTS := $(OUT)/shared/int_threads $(OUT)/shared/stress_churn
# The durability and truncation tests run once more with every mapping in flush mode.
FLUSH_TESTS := $(OUT)/shared/int_durability $(OUT)/shared/int_truncate

c-test: lib $(C_SHARED) $(C_STATIC)
	@failed=0; for t in $(C_SHARED) $(C_STATIC); do \
		echo "== $$t"; ./$$t || failed=$$((failed+1)); \
	done; \
	for t in $(FENCE_TESTS); do \
		echo "== $$t (PFN_NO_MEMBARRIER=1)"; PFN_NO_MEMBARRIER=1 ./$$t || failed=$$((failed+1)); \
	done; \
	for t in $(FLUSH_TESTS); do \
		echo "== $$t (PFN_FORCE_GRANULARITY=cache_line)"; \
		PFN_FORCE_GRANULARITY=cache_line ./$$t || failed=$$((failed+1)); \
	done; \
	total=$$(( $(words $(C_SHARED)) + $(words $(C_STATIC)) + $(words $(FENCE_TESTS)) + $(words $(FLUSH_TESTS)) )); \
	echo "c-tests: $$((total-failed)) passed, $$failed failed"; \
	test $$failed = 0

# ---- install (PREFIX and DESTDIR as usual)
PREFIX  ?= /usr/local
DESTDIR ?=
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
LIBDEST := $(DESTDIR)$(PREFIX)/lib

install: lib
	install -d $(LIBDEST)/pkgconfig $(DESTDIR)$(PREFIX)/include
	install -m 0755 $(SHARED) $(LIBDEST)/libpfn.so.$(VERSION)
	ln -sf libpfn.so.$(VERSION) $(LIBDEST)/libpfn.so.$(MAJOR)
	ln -sf libpfn.so.$(MAJOR) $(LIBDEST)/libpfn.so
	install -m 0644 $(STATIC) $(LIBDEST)/libpfn.a
	install -m 0644 include/pfn.h $(DESTDIR)$(PREFIX)/include/pfn.h
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' -e 's|@STATIC_LIBS@|$(STATIC_LIBS)|' \
		pfn.pc.in > $(LIBDEST)/pkgconfig/pfn.pc

uninstall:
	rm -f $(LIBDEST)/libpfn.so.$(VERSION) $(LIBDEST)/libpfn.so.$(MAJOR) $(LIBDEST)/libpfn.so \
		$(LIBDEST)/libpfn.a $(LIBDEST)/pkgconfig/pfn.pc $(DESTDIR)$(PREFIX)/include/pfn.h

check-install:
	bash scripts/check-install.sh

# ---- examples and Python
$(OUT)/plog: examples/plog.c include/pfn.h $(STATIC)
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CFLAGS) -Iinclude -o $@ $< $(STATIC) $(STATIC_LIBS)

check-examples: lib $(OUT)/plog
	bash examples/plog_test.sh $(OUT)/plog

check-python: lib
	PYTHONPATH=python PFN_LIBRARY=$(SHARED) python3 -m pytest -q python/tests
	f=$${PFN_TEST_DIR:-/dev/shm}/libpfn-kv-$$$$.pmem; \
	PYTHONPATH=python PFN_LIBRARY=$(SHARED) python3 python/examples/kv_pages.py $$f && \
	PYTHONPATH=python PFN_LIBRARY=$(SHARED) python3 python/examples/kv_pages.py $$f | grep -q "run number 2"; \
	rc=$$?; rm -f $$f; exit $$rc

# ---- benchmarks (not part of `make test`; `make bench-check` is)
BENCH_OUT  := $(OUT)/bench
BENCH_PEERS := $(shell pkg-config --exists liburcu-memb 2>/dev/null && echo -DHAVE_URCU $$(pkg-config --cflags liburcu-memb)) \
               $(shell pkg-config --exists libpmemobj 2>/dev/null && echo -DHAVE_PMEMOBJ $$(pkg-config --cflags libpmemobj)) \
               $(shell test -f /usr/include/valgrind/callgrind.h && echo -DHAVE_CALLGRIND)
BENCH_LIBS := $(shell pkg-config --exists liburcu-memb 2>/dev/null && pkg-config --libs liburcu-memb) \
              $(shell pkg-config --exists libpmemobj 2>/dev/null && pkg-config --libs libpmemobj)
BENCH_RPATH := -Wl,-rpath,'$$ORIGIN' -Wl,-rpath,'$$ORIGIN/../../$(LIBDIR)'

$(BENCH_OUT)/libpfnfloor.so: bench/floor.c bench/floor.h include/pfn.h
	@mkdir -p $(@D)
	$(CC) -std=gnu11 -Wall -Wextra -Werror -O2 -g -fPIC -shared -Iinclude -o $@ $<

$(BENCH_OUT)/bench: bench/bench.c bench/seed.c bench/seed.h bench/floor.h include/pfn.h $(BENCH_OUT)/libpfnfloor.so $(SHARED)
	$(CC) -std=gnu11 -Wall -Wextra -Werror -O2 -g -Iinclude -Ibench $(BENCH_PEERS) -o $@ \
		bench/bench.c bench/seed.c -L$(BENCH_OUT) -lpfnfloor -L$(LIBDIR) -lpfn $(BENCH_LIBS) -lpthread $(BENCH_RPATH)

# The persistence benchmark: libpfn against libpmem (when libpmem-dev is installed).
PERSIST_PEER := $(shell pkg-config --exists libpmem 2>/dev/null && echo -DHAVE_PMEM) \
                $(shell test -f /usr/include/valgrind/callgrind.h && echo -DHAVE_CALLGRIND)
PERSIST_LIBS := $(shell pkg-config --exists libpmem 2>/dev/null && pkg-config --libs libpmem)

$(BENCH_OUT)/persist: bench/persist.c include/pfn.h $(SHARED)
	@mkdir -p $(@D)
	$(CC) -std=gnu11 -Wall -Wextra -Werror -O2 -g -Iinclude $(PERSIST_PEER) -o $@ bench/persist.c \
		-L$(LIBDIR) -lpfn $(PERSIST_LIBS) $(BENCH_RPATH)

.PHONY: bench bench-persist bench-check
# QUICK=1: a run of under a minute. The results go to bench/results/.
bench: lib $(BENCH_OUT)/bench bench-persist
	@mkdir -p bench/results
	./$(BENCH_OUT)/bench $(if $(QUICK),--quick) --out bench/results
	@bash bench/callgrind.sh $(BENCH_OUT)/bench bench/results $(if $(QUICK),quick)
	@bash bench/plot.sh bench/results

# The persistence part alone: libpfn against libpmem (about 10 s; QUICK=1: about 5 s).
bench-persist: lib $(BENCH_OUT)/persist
	@mkdir -p bench/results
	./$(BENCH_OUT)/persist $(if $(QUICK),--quick) --out bench/results
	@bash bench/callgrind_persist.sh $(BENCH_OUT)/persist bench/results

# Builds the benchmarks and checks that every contender returns correct addresses and
# writes correct bytes.
bench-check: lib $(BENCH_OUT)/bench $(BENCH_OUT)/persist
	./$(BENCH_OUT)/bench --verify
	./$(BENCH_OUT)/persist --verify

# ---- tools that find what tests miss
CXX ?= c++
CXX_TESTS := api_encoding int_section
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
VALGRIND := valgrind --trace-children=yes --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect -q

$(OUT)/cxx/%: c-tests/%.c $(wildcard c-tests/*.h) include/pfn.h $(STATIC)
	@mkdir -p $(@D)
	$(CXX) -x c++ -std=c++17 -Wall -Wextra -Wpedantic -Werror -Wno-missing-field-initializers $(CFLAGS) -Iinclude -o $@ $< -x none $(STATIC) $(STATIC_LIBS)

$(OUT)/asan/%: c-tests/%.c $(wildcard c-tests/*.h) include/pfn.h $(STATIC)
	@mkdir -p $(@D)
	$(CC) $(WARN) -O1 -g $(SAN_FLAGS) -Iinclude -o $@ $< $(STATIC) $(STATIC_LIBS)

.PHONY: check-cxx check-sanitizers check-valgrind
# The header compiles as C++ and the tests pass when built so.
check-cxx: lib $(addprefix $(OUT)/cxx/,$(CXX_TESTS))
	@for t in $(addprefix $(OUT)/cxx/,$(CXX_TESTS)); do echo "== $$t"; ./$$t || exit 1; done

# Every C test under AddressSanitizer + UndefinedBehaviorSanitizer, then under valgrind memcheck.
check-sanitizers: lib $(addprefix $(OUT)/asan/,$(C_TESTS)) check-valgrind
	@for t in $(addprefix $(OUT)/asan/,$(C_TESTS)); do echo "== $$t (asan+ubsan)"; \
		ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 ./$$t || exit 1; done

check-valgrind: lib $(C_SHARED)
	@for t in $(C_SHARED); do echo "== $$t (valgrind)"; \
		PFN_TEST_QUICK=1 $(VALGRIND) ./$$t || exit 1; done

test: deps lint cargo-test header-check c-test check-cxx check-sanitizers check-examples check-python check-install bench-check

clean:
	$(CARGO) clean
	rm -rf $(OUT)
