# libelle: the commands a newcomer needs. The real build is meson + ninja;
# these targets install the Debian packages (scripts/setup.sh), configure
# and build (scripts/build.sh), then run something.
#
#   make demo    FGSM vs ELLE-A on Fashion-MNIST at eps 0.2 (docs/demo.md), writes out/demo/
#   make test    run every test suite (meson test)
#   make bench   run the benchmarks, writes out/bench/bench.json
#                (BENCH_ARGS="--quick" or other elle-bench options pass through)
#   make build   install packages if missing, configure and build
#   make clean   remove the build directory and out/
#
# BUILD=dir selects another build directory (default: build).

BUILD ?= build
BENCH_ARGS ?=
export ELLE_BUILD_DIR := $(BUILD)

.PHONY: build demo test bench clean setup

build:
	scripts/setup.sh
	scripts/build.sh

setup:
	scripts/setup.sh

demo: build
	scripts/demo.sh $(BUILD)

test: build
	meson test -C $(BUILD) --print-errorlogs

bench: build
	scripts/bench.sh $(BENCH_ARGS)

clean:
	rm -rf -- $(BUILD) out
