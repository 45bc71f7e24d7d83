# ntkbench: every target that needs the environment depends on `install`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch 2.14.1 / torchvision 0.29.1 are the newest releases this project's machines hold on disk.
TORCH := torch==2.14.1 torchvision==0.29.1

# `make bench TASK=wine`: every method (METHODS=nn,taylor for some), 3 seeds, on embedded data;
# logged to MLflow (mlflow.db), then the local leaderboard (see `leaderboard`).
TASK ?= digits
SEEDS ?= 0,1,2
METHODS ?= all
ifneq (,$(findstring imagenet,$(TASK)))
# Downsampled ImageNet, 100 training images per class; kernel methods shrink n_train to their
# memory/time budgets (see README). The architecture's options depend on ARCH:
# - cnn: 3 convs of 128 channels, Flatten readout (exact kernels O(HW·k²) per pair);
# - wrn: WRN-10-1, neural-tangents' WideResnet with its global average pool. Its exact kernel
#   holds all (HW)² position pairs (16.7M a pair at 64×64, ~9 s a pair on 2 CPU cores), so ntk
#   and nngp are capped at 100 training images; nn and taylor take lr 0.1 (0.5 diverges);
# - resnet: pre-activation ResNet-18 (width 16), stride-2 stem on 64×64, kernels capped as wrn;
# - any other architecture: its own defaults.
ARCH ?= cnn
ARCH_SET_cnn := --set arch.readout=flatten --set arch.channels=128
ARCH_SET_wrn := --set arch.depth=10 --set arch.widen=1 --set arch.readout=gap
ARCH_SET_resnet := $(if $(findstring imagenet64,$(TASK)),--set arch.stem_stride=2)
POOLED_KERNELS := --set ntk.max_n_train=100 --set nngp.max_n_train=100
METHOD_SET_wrn := $(POOLED_KERNELS) --set nn.lr=0.1 --set taylor.lr=0.1
METHOD_SET_resnet := $(POOLED_KERNELS)
BENCH_SET ?= $(ARCH_SET_$(ARCH)) --set task.n_per_class=100 --set nn.epochs=30 --set taylor.epochs=30 $(METHOD_SET_$(ARCH))
STUDY_SET ?= --arch $(ARCH) $(ARCH_SET_$(ARCH))
else
ARCH ?= mlp
BENCH_SET ?= --set arch.depth=2 --set arch.width=256
# mnist5k's study grid declares its own architectures (ntkbench.study.grid.IMAGE_GRID).
STUDY_SET ?= $(if $(filter mnist5k,$(TASK)),,--arch $(ARCH) $(BENCH_SET))
endif
# Settings after BENCH_SET (a later --set of an option wins): caps for a CPU run, see README.
BENCH_EXTRA ?=

.PHONY: install test bench study data leaderboard validate check-leaderboard ui server sync bench-kernels perf nt-env clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# The suite, with its slowest tests listed. pytest's own exit status is make's: a failure, an
# interrupted run and "no tests collected" (5) all fail the target. CI runs it under
# OMP_NUM_THREADS=2 and =1 (.ci/run): the tests assert nothing that depends on the thread count.
# PYTEST_ARGS narrows a run, e.g. PYTEST_ARGS='-m "not processes"' (CI's second, 1-thread pass).
test: install
	$(PY) -m pytest -q --durations=15 $(PYTEST_ARGS)

bench: install
	$(PY) -m ntkbench.cli run --task $(TASK) --method $(METHODS) --arch $(ARCH) --seeds $(SEEDS) $(BENCH_SET) $(BENCH_EXTRA)
	$(PY) -m ntkbench.cli leaderboard

# The study (ntkbench.study): every variant, label noise, n_train sweep and 3 seeds on TASK and
# on teacher, then leaderboard/site/study-TASK.html and .md. On digits: mlp depth 2, width 256.
# On mnist5k: the image study, four architectures and flips: 432 runs, 33 minutes on 2 CPU cores.
study: install
	$(PY) -m ntkbench.cli study --task $(TASK) $(STUDY_SET)

# Download a torchvision dataset into the data root ($$NTKBENCH_DATA or datasets/data):
# make data DATASET=cifar10. Downsampled ImageNet needs a login: see datasets/imagenet64.md.
data: install
	$(PY) -c "from ntkbench.tasks.torchvision import download; print(download('$(DATASET)'))"

# The local leaderboard: mlflow.db and leaderboard/entries/ rendered into leaderboard/local/
# (git-ignored): README.md, site/index.html and leaderboard.csv.
leaderboard: install
	$(PY) -m ntkbench.cli leaderboard

# The entries and leaderboard/verified.json, one line per problem; then check-leaderboard.
validate: check-leaderboard
	$(PY) -m ntkbench.cli validate leaderboard/entries

# The committed leaderboard/README.md, site/index.html and leaderboard.csv must be what
# leaderboard/entries/ alone renders to, byte for byte. To update them after an export:
# ntkbench leaderboard --entries-only --out leaderboard
check-leaderboard: install
	$(PY) -m ntkbench.cli leaderboard --check --out leaderboard

# The MLflow UI on the same store as `make bench`, at http://127.0.0.1:5000: prints (and opens,
# given a display) the URL of TASK's runs in MLflow's machine-learning view, with the accuracy,
# time and memory columns (ntkbench.tracking.ui). Ctrl-C stops the server.
ui: install
	$(PY) -m ntkbench.cli ui --task $(TASK)

# A team tracking server (README, "Teams and many workers"): PostgreSQL and mlflow server with
# their data in SERVER_DIR (git-ignored); prints the tracking URI once it answers. The port is
# SERVER_PORT, else the folder's last one, else 5000. Stop it with `ntkbench server stop --dir
# tracking-server`; `ntkbench server status --dir tracking-server` says what runs.
SERVER_DIR ?= tracking-server
SERVER_PORT ?=
server: install
	$(PY) -m ntkbench.cli server start --dir $(SERVER_DIR) $(if $(SERVER_PORT),--port $(SERVER_PORT))

# Import the offline outbox (--tracking offline, or a store that failed mid-run) into MLflow.
sync: install
	$(PY) -m ntkbench.cli sync

# neural-tangents, the JAX reference, in its own environment (it needs jax 0.4.30 and numpy<2).
nt-env: .venv-nt/.installed

.venv-nt/.installed:
	$(PYTHON) -m venv .venv-nt
	.venv-nt/bin/pip install -q 'jax==0.4.30' 'jaxlib==0.4.30' 'numpy<2' 'tf2jax==0.3.6' 'neural-tangents==0.6.5'
	touch $@

# Kernel timings against neural-tangents (run `make nt-env` first for the comparison).
bench-kernels: install
	$(PY) -m pytest benchmarks/test_kernels.py --benchmark-columns=min,mean,rounds

# The benchmark suite on this machine, saved as JSON, compared with the committed baseline (made
# on the 2-core CPU machine; pass PERF_BASELINE=... for another). `make nt-env` first adds the
# neural-tangents ratios. A benchmark over 1.5x slower than its baseline fails.
PERF_BASELINE ?= benchmarks/baseline/cpu-2core.json
perf: install
	mkdir -p benchmarks/results
	NTKBENCH_BENCH_N=$${NTKBENCH_BENCH_N:-64} $(PY) -m pytest benchmarks -q -p no:cacheprovider --benchmark-json=benchmarks/results/latest.json
	$(PY) benchmarks/compare.py $(PERF_BASELINE) benchmarks/results/latest.json

clean:
	rm -rf $(VENV) .venv-nt .pytest_cache .benchmarks
