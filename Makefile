# Lime Task on Kubernetes. `make demo` and `make test` set up everything they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CLUSTER := $(PY) devtools/cluster/localcluster.py

.PHONY: help venv lock deps browser images cluster-binaries kwok-binary kueue-binary kueue-up kueue-down promtool cluster-up cluster-down cluster-status demo dev test test-quick lint typecheck bench soak broker-up postgres-up clean

help:
	@echo "make demo          set up and run a real task end to end on the local cluster (a real node)"
	@echo "make test          set up and run the whole test suite (end-to-end included)"
	@echo "make dev SOLUTION=path  a solution's own tasks on the local cluster (limetask dev; WATCH=1 rebuilds on change)"
	@echo "make test-quick    unit tests only (no cluster)"
	@echo "make lock          resolve the Python dependencies again (requirements/; PACKAGES=... for some)"
	@echo "make cluster-up    start the local cluster and load the images (prints its kubeconfig)"
	@echo "make cluster-down  stop it and remove its state"
	@echo "make kueue-up      install Kueue (its manager and webhooks) into the running local cluster"
	@echo "make kueue-down    uninstall it again"
	@echo "make bench         benchmarks on the local cluster"
	@echo "make soak          the operator under a platform's day on simulated nodes, faults included"
	@echo "                   (DURATION=30m RATE=12 BURST=20000 FAULTS=leader,postgres,rabbitmq,apiserver"
	@echo "                    REAL_OUTAGES=1 CEILING=12,25,50,100 FLOOD=100000 FLOOD_QUEUE=default"
	@echo "                    SOAK_ARGS=...; see bench/soak.py)"
	@echo "make images        build the operator, runner and example images (podman)"
	@echo "make browser       install Debian's Chromium and chromedriver (the dashboard's browser tests)"
	@echo "make promtool      build Prometheus' promtool (the chart's alert and dashboard tests), once"

# System packages the local cluster needs (Debian): its real node's runtime (runc, the CNI
# plugins), podman and debootstrap for the images, gcc for the static pause. Skipped when present.
deps:
	@missing=""; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v runc >/dev/null || missing="$$missing runc"; \
	test -x /usr/lib/cni/bridge || missing="$$missing containernetworking-plugins"; \
	command -v podman >/dev/null || missing="$$missing podman"; \
	command -v debootstrap >/dev/null || missing="$$missing debootstrap"; \
	command -v gcc >/dev/null || missing="$$missing gcc libc6-dev"; \
	$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "[deps] installing:$$missing"; \
	  if [ "$$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

# The venv holds exactly the lock (requirements/lock.txt, see `make lock`): every package at its
# locked version and hash, installed with --no-deps, so pip resolves nothing. The venv's own pip
# (the Python's ensurepip) installs it; setuptools and wheel come from the lock, and build the
# editable installs without build isolation (which would fetch the newest setuptools). The venv is
# made afresh whenever the lock or a pyproject.toml changes, so nothing of an older lock stays.
$(STAMP): requirements/lock.txt pyproject.toml examples/acme_solution/pyproject.toml | deps
	@echo "[venv] making $(VENV) from the lock (requirements/lock.txt)"
	@rm -rf $(VENV)
	@$(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --only-binary=:all: --require-hashes --no-deps -r requirements/lock.txt
	@$(PY) -m pip install -q --no-deps --no-build-isolation -e . -e examples/acme_solution
	@$(PY) -m pip check >/dev/null || { $(PY) -m pip check; echo "[venv] the lock is incomplete: make lock" >&2; exit 1; }
	@touch $(STAMP)

venv: $(STAMP)

# Resolve the Python dependencies again (devtools/lock.sh): every package to its newest allowed
# release, or only PACKAGES="cronsim kopf". Then `make test` runs against the new set.
lock: venv
	@bash devtools/lock.sh $(PACKAGES)

# Debian's Chromium and its driver, for the dashboard's browser tests. Skipped when present.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  echo "[browser] installing: chromium chromium-driver"; \
	  if [ "$$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver; \
	fi

cluster-binaries: deps
	@bash devtools/cluster/build-kubernetes.sh >/dev/null

# KWOK, for the simulated nodes of the soak (built from the Go module proxy once, cached).
kwok-binary:
	@bash devtools/cluster/build-kwok.sh >/dev/null

# Kueue's manager and the release's CRDs and webhook paths (built from the Go module proxy once,
# cached; about 18 minutes the first time on 2 busy cores), for its end-to-end tests.
kueue-binary:
	@bash devtools/cluster/build-kueue.sh >/dev/null

# Kueue on the running local cluster (devtools/cluster/kueue.py): a host process with its webhooks.
kueue-up: venv kueue-binary
	@$(PY) devtools/cluster/kueue.py up

kueue-down:
	@if [ -x $(PY) ]; then $(PY) devtools/cluster/kueue.py down; else echo "no virtual environment: nothing to stop"; fi

# Prometheus' promtool, which checks the chart's alerts and dashboard (built from the Go module
# proxy once, cached; a few minutes the first time).
promtool:
	@bash devtools/monitoring/build-promtool.sh >/dev/null

images: deps
	@bash devtools/images/build-images.sh >/dev/null

cluster-up: venv cluster-binaries
	@$(CLUSTER) up

cluster-down:
	@if [ -x $(PY) ]; then $(CLUSTER) down; else echo "no virtual environment: nothing to stop"; fi

cluster-status: venv
	@$(CLUSTER) status

broker-up:
	@bash devtools/broker-up.sh

# The archive's PostgreSQL (Debian's), for the tests, the demo and the bench.
postgres-up:
	@bash devtools/postgres-up.sh

demo: venv cluster-up postgres-up
	@$(PY) examples/demo.py

# A solution's own tasks on the local cluster (`limetask dev`): its Dockerfile.tasks built FROM the
# runner image, loaded into the node, and the operator run with it until Ctrl-C. The cluster is
# started (or reused) first; WATCH=1 rebuilds and restarts on every change of the solution's files.
# SOLUTION is the solution's folder (absolute, or relative to this checkout).
dev:
	@if [ -z "$(SOLUTION)" ]; then echo "make dev SOLUTION=path/to/your/solution [WATCH=1]" >&2; exit 2; fi
	@$(MAKE) --no-print-directory venv cluster-up
	@$(VENV)/bin/limetask dev "$(SOLUTION)" $(if $(WATCH),--watch) $(DEV_ARGS)

test: venv browser cluster-up kwok-binary kueue-binary promtool broker-up postgres-up
	@$(PY) -m pytest -q

test-quick: venv promtool
	@$(PY) -m pytest -q -m 'not e2e and not archive'

lint: venv
	@$(PY) -m ruff check lime_task operator runner devtools tests examples
	@$(PY) -m mypy

bench: venv cluster-up postgres-up
	@$(PY) -m bench

# The soak runs on a cluster of simulated nodes of its own (.cluster-soak/, or
# LIMETASK_SOAK_CLUSTER_DIR), torn down afterwards; the shared cluster is not touched.
DURATION ?= 30m
RATE ?= 12
BURST ?= 20000
FAULTS ?= leader,postgres,rabbitmq,apiserver
soak: venv cluster-binaries kwok-binary broker-up postgres-up
	@$(PY) -m bench.soak --duration $(DURATION) --rate $(RATE) --burst $(BURST) --faults "$(FAULTS)" \
	  $(if $(REAL_OUTAGES),--real-outages) $(if $(CEILING),--ceiling $(CEILING)) \
	  $(if $(FLOOD),--flood $(FLOOD)) $(if $(FLOOD_QUEUE),--flood-queue $(FLOOD_QUEUE)) $(SOAK_ARGS)

clean: cluster-down
	rm -rf $(VENV)
