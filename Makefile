# gpuwarden — the two quick-start commands are `make demo` and `make test`.
PRESET ?= release
BUILD_DIR := build/$(PRESET)
JOBS ?= $(shell nproc)

.PHONY: all deps build test test-unit test-slow demo bench fuzz format lint clean dev

all: build

deps:
	@bash tools/install-deps.sh

$(BUILD_DIR)/build.ninja: CMakeLists.txt CMakePresets.json
	@cmake --preset $(PRESET) >/dev/null

build: deps $(BUILD_DIR)/build.ninja
	@cmake --build $(BUILD_DIR) -j $(JOBS)

# Every test: unit + integration, SQLite and a real PostgreSQL (started and stopped here).
test: build
	@bash tools/run-tests.sh $(BUILD_DIR)

test-unit: build
	@cd $(BUILD_DIR) && ctest -L unit --output-on-failure -j $(JOBS)

test-slow: build
	@cd $(BUILD_DIR) && ctest -L slow --output-on-failure

demo: build
	@bash tools/demo.sh $(BUILD_DIR)/gpuwarden

bench: deps
	@$(MAKE) --no-print-directory build PRESET=release
	@bash bench/run.sh build/release

fuzz: deps
	@cmake --preset fuzz >/dev/null && cmake --build build/fuzz -j $(JOBS)
	@bash tools/run-fuzz.sh build/fuzz $${FUZZ_SECONDS:-20}

dev:
	@$(MAKE) --no-print-directory test PRESET=dev

format:
	@find src tests bench fuzz -name '*.cc' -o -name '*.h' | xargs clang-format -i

lint: build
	@find src -name '*.cc' | xargs clang-tidy -p $(BUILD_DIR) --quiet 2>/dev/null | grep -E 'warning|error' || true

clean:
	rm -rf build
