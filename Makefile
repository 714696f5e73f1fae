# llmcached: plain Makefile, dependencies found with pkg-config.
#   make            build build/llmcached
#   make run        install missing packages, build, start on 127.0.0.1:8080
#   make test       install, build, run unit + integration + client tests
#   make SAN=1 ...  the same under AddressSanitizer + UBSan (build dir build/san)
#   make bench      optimised build, then the side-by-side benchmark (bench/)
#   make bench-semantic  what the semantic tier's parts cost (embedding, guards, search)
#                        (SEMANTIC_ARGS=100000: only the question partitions of that size)
#   make bench-redis  the shared Redis tier: CPU per hit and per miss, three gateways on a Cluster
#   make bench-hnsw  our HNSW graph against hnswlib (HNSW_ARGS="-n 100000 -data uniform")

CC      ?= cc
PYTHON  ?= /usr/bin/python3
PKGS    := libuv libcurl jansson libcrypto lmdb hiredis libutf8proc zlib libzstd libbrotlienc libbrotlidec
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lhttp_parser -lstemmer -lpthread -lm

ifeq ($(SAN),1)
BUILD   ?= build/san
OPT     := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDSAN   := -fsanitize=address,undefined
else
BUILD   ?= build
OPT     ?= -O2 -g
LDSAN   :=
endif

CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
           -Iinclude -Isrc $(PKG_CFLAGS) $(OPT) -MMD -MP
LDFLAGS += $(LDSAN)
LDLIBS  += $(PKG_LIBS)

SRC      := $(shell find src -name '*.c' | sort)
LIB_SRC  := $(filter-out src/main.c,$(SRC))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
BIN      := $(BUILD)/llmcached

.PHONY: all deps run test unit integration client-test bench clean
all: $(BIN)

deps:
	@./scripts/deps.sh

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# The dashboard's page, compiled in as a byte array (tools/embed.sh).
$(BUILD)/gen/dashboard_html.h: src/gateway/dashboard.html tools/embed.sh
	@mkdir -p $(@D)
	./tools/embed.sh llmc_dashboard_html $< > $@.tmp && mv $@.tmp $@
$(BUILD)/src/gateway/dashboard.o: $(BUILD)/gen/dashboard_html.h
$(BUILD)/src/gateway/dashboard.o: CFLAGS += -I$(BUILD)/gen
# The built-in price table (used without --prices), compiled in the same way.
$(BUILD)/gen/prices_default_txt.h: src/gateway/prices.default tools/embed.sh
	@mkdir -p $(@D)
	./tools/embed.sh llmc_prices_default_txt $< > $@.tmp && mv $@.tmp $@
$(BUILD)/src/gateway/prices.o: $(BUILD)/gen/prices_default_txt.h
$(BUILD)/src/gateway/prices.o: CFLAGS += -I$(BUILD)/gen

$(BUILD)/libllmc.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(BUILD)/src/main.o $(BUILD)/libllmc.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libllmc.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/unit -o $@ $< $(BUILD)/libllmc.a $(LDFLAGS) $(LDLIBS) -lcmocka

run: deps
	@$(MAKE) --no-print-directory all
	./scripts/run.sh $(BIN)

unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

integration: $(BIN)
	LLMC_BIN=$(abspath $(BIN)) $(PYTHON) -m pytest -q -p no:cacheprovider tests/integration

client-test: $(BIN)
	LLMC_BIN=$(abspath $(BIN)) ./tests/npm/run.sh

# The tests also need what only they use (chromium for the dashboard test).
test:
	@./scripts/deps.sh --test
	@$(MAKE) --no-print-directory all unit
	@$(MAKE) --no-print-directory integration client-test

bench: deps
	@$(MAKE) --no-print-directory BUILD=build/bench OPT="-O3 -g -DNDEBUG -march=native" all build/bench/burst
	./bench/run.sh build/bench/llmcached

# What the semantic tier's parts cost (bench/semantic_bench.c), on an optimised build.
.PHONY: bench-semantic
bench-semantic:
	@$(MAKE) --no-print-directory BUILD=build/bench OPT="-O3 -g -DNDEBUG -march=native" build/bench/semantic_bench
	build/bench/semantic_bench $(SEMANTIC_ARGS)

# The shared Redis tier's costs (bench/redis_bench.py), on an optimised build.
.PHONY: bench-redis
bench-redis:
	@$(MAKE) --no-print-directory BUILD=build/bench OPT="-O3 -g -DNDEBUG -march=native" all
	LLMC_BIN=build/bench/llmcached $(PYTHON) bench/redis_bench.py $(BENCH_ARGS)

$(BUILD)/semantic_bench: bench/semantic_bench.c $(BUILD)/libllmc.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libllmc.a $(LDFLAGS) $(LDLIBS)

# Compression at rest on the corpus (bench/atrest_bench.c, bench/corpus.py), optimised build.
.PHONY: atrest-bench
CORPUS ?= /tmp/llmc-corpus
atrest-bench:
	@$(MAKE) --no-print-directory BUILD=build/bench OPT="-O3 -g -DNDEBUG -march=native" build/bench/atrest_bench
	@test -d $(CORPUS)/measure || python3 bench/corpus.py $(CORPUS)
	build/bench/atrest_bench $(CORPUS)

$(BUILD)/atrest_bench: bench/atrest_bench.c $(BUILD)/libllmc.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libllmc.a $(LDFLAGS) $(LDLIBS)

# Compression at rest in the memory tier: answers per GB of --max-memory, hit costs (bench/memzip_bench.c).
.PHONY: memzip-bench
MEM ?= 16M
HOT ?= 10
memzip-bench:
	@$(MAKE) --no-print-directory BUILD=build/bench OPT="-O3 -g -DNDEBUG -march=native" build/bench/memzip_bench
	@test -d $(CORPUS)/measure || python3 bench/corpus.py $(CORPUS)
	build/bench/memzip_bench $(CORPUS) $(MEM) $(HOT)

$(BUILD)/memzip_bench: bench/memzip_bench.c $(BUILD)/libllmc.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libllmc.a $(LDFLAGS) $(LDLIBS)

# Compression on the wire per coding on the corpus (bench/wire_bench.c), optimised build.
.PHONY: wire-bench
wire-bench:
	@$(MAKE) --no-print-directory BUILD=build/bench OPT="-O3 -g -DNDEBUG -march=native" build/bench/wire_bench
	@test -d $(CORPUS)/measure || python3 bench/corpus.py $(CORPUS)
	build/bench/wire_bench $(CORPUS)

$(BUILD)/wire_bench: bench/wire_bench.c $(BUILD)/libllmc.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libllmc.a $(LDFLAGS) $(LDLIBS)

# Our HNSW graph against hnswlib on the same vectors (bench/hnsw_bench.cc).
.PHONY: bench-hnsw
HNSW_ARGS ?=
bench-hnsw:
	@$(MAKE) --no-print-directory BUILD=build/bench OPT="-O3 -g -DNDEBUG -march=native" build/bench/hnsw_bench
	build/bench/hnsw_bench $(HNSW_ARGS)

$(BUILD)/hnsw_bench: bench/hnsw_bench.cc $(BUILD)/libllmc.a
	@mkdir -p $(@D)
	$(CXX) -std=c++17 -O3 -march=native -DNDEBUG -Isrc -Wall -Wextra -Werror -o $@ $< $(BUILD)/libllmc.a -lm

# The stampede's client (bench/burst.c), kept beside the benchmarked binary.
build/bench/burst: bench/burst.c
	@mkdir -p $(@D)
	$(CC) -std=c11 -Wall -Wextra -Werror -Wshadow -O2 -o $@ $<

clean:
	rm -rf build

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# ---- hardening (issue 7): fuzzing, soak, valgrind -------------------------------------
#   make fuzz [FUZZ_SECONDS=60]     build every driver in fuzz/ (clang) and run each
#   make soak [DURATION=120]        mixed traffic against the gateway ($LLMC_BIN or $(BIN));
#                                   RSS, fds and errors checked at the end (tests/soak/)
#   make valgrind [VALGRIND_TESTS=...]  integration tests with the gateway under valgrind
FUZZ_SECONDS ?= 60
DURATION     ?= 120
.PHONY: fuzz soak valgrind
fuzz:
	@$(MAKE) --no-print-directory -C fuzz all
	@$(MAKE) --no-print-directory -C fuzz run FUZZ_SECONDS=$(FUZZ_SECONDS)

soak: $(BIN)
	@case "$${LLMC_BIN:-}" in *build/san/llmcached) [ -x "$$LLMC_BIN" ] || \
	    $(MAKE) --no-print-directory SAN=1 all ;; esac
	LLMC_BIN=$${LLMC_BIN:-$(abspath $(BIN))} $(PYTHON) tests/soak/soak.py --duration $(DURATION)

valgrind:
	@$(MAKE) --no-print-directory SAN= BUILD=build all
	LLMC_BIN=$(abspath build/llmcached) ./tools/valgrind-suite.sh $(VALGRIND_TESTS)
