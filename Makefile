# Thin wrapper over CMake. Quick start: `make run`, then `make test`.
BUILD ?= build
JOBS ?= $(shell nproc)
KEEL := $(BUILD)/keel

.PHONY: setup configure build run test bench bench-train bench-checkpoint bench-goodput bench-serve bench-links bench-mla clean format

setup:
	@./scripts/setup.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release

configure: $(BUILD)/CMakeCache.txt

build: configure
	cmake --build $(BUILD) -j $(JOBS)

run: setup build
	./scripts/run_default.sh $(KEEL)

test: setup build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 900

bench: setup build
	./scripts/bench.sh $(BUILD)

bench-serve: setup build
	./scripts/bench_serve.sh $(BUILD)

bench-train: setup build
	cmake --build $(BUILD) --target bench_train -j $(JOBS)
	$(BUILD)/bench_train --source-dir .

bench-mla: setup build
	cmake --build $(BUILD) --target bench_mla_cache -j $(JOBS)
	$(BUILD)/bench_mla_cache configs/deepseek-tiny.toml configs/deepseek-small.toml

bench-checkpoint: setup build
	cmake --build $(BUILD) --target bench_checkpoint -j $(JOBS)
	$(BUILD)/bench_checkpoint --source-dir . --micro-batch 1

bench-links: setup build
	python3 bench/bench_links.py --keel $(BUILD)/keel --work $(BUILD)/bench/links

bench-goodput: setup build
	python3 bench/bench_goodput.py --keel $(BUILD)/keel --work $(BUILD)/bench/goodput

format:
	clang-format -i $$(git ls-files '*.h' '*.cpp')

clean:
	rm -rf $(BUILD)
