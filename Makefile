# Hyperlift — set-up and entry points. Every target creates .venv and installs on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
LAUNCH := $(BIN)/python -m infra.launch --
DEV    := HYPERLIFT_SERVING_MODE=dev# the decision service without API keys: one machine only (docs/security.md)

.PHONY: install demo pipeline loop test bench serve dagster mlflow feast-apply models rollback audit erase rekey export clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 is required, found {sys.version.split()[0]}; set PYTHON=/path/to/python3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project

demo: install  ## run the whole loop on the simulated shop and print the uplift it achieved
	$(DEV) $(BIN)/python -m demo

pipeline: install  ## the Dagster graph once over the landing folder (your own files: docs/landing.md), to a registered model
	$(BIN)/python -m demo.pipeline

loop: install  ## closed loop: rounds of serve → outcomes → retrain → off-policy gate → promote, against ground truth
	$(DEV) $(BIN)/python -m demo.loop

test: install  ## run the test suite (starts its own redis-server unless REDIS_URL is set)
	$(BIN)/python -m pytest

bench: install  ## benchmarks of docs/benchmarks.md (run `make demo` first: they read its state; 30–60 min)
	@echo "make bench: 7 benchmarks one after another, 30–60 min on 2 cores; each prints its progress. Those marked"
	@echo "(rewrites) replace their own table in docs/benchmarks.md; the others print theirs. Run it on a quiet"
	@echo "machine: what else runs on the cores sets the latency tails. Ctrl-C stops it."
	@echo "[1/7] decision latency, in process and over HTTP vs feast serve (~3 min)"
	$(BIN)/python -m bench.decision_latency
	@echo "[2/7] decision latency under load, 1 and 2 workers, vs feast serve (~8 min, rewrites)"
	$(BIN)/python -m bench.decision_load
	@echo "[3/7] learner settings against the simulator's true value"
	$(BIN)/python -m bench.learner_settings
	@echo "[4/7] ANN candidates: recall and latency (rewrites)"
	$(BIN)/python -m bench.ann_candidates --write
	@echo "[5/7] materialization throughput"
	$(BIN)/python -m bench.materialize
	@echo "[6/7] point-in-time training-set build"
	$(BIN)/python -m bench.training_set_build
	@echo "[7/7] streaming freshness"
	$(BIN)/python -m bench.stream_freshness

serve: install  ## start the decision service on :8000 (after `make demo` has registered a champion; WORKERS=n for n processes)
	@$(BIN)/python -m infra.ports $${PORT:-8000} "the decision service"
	$(DEV) $(LAUNCH) $(BIN)/python -m demo.serve --port $${PORT:-8000} --workers $${WORKERS:-1}

.PHONY: redis-cluster
redis-cluster: install  ## a local Redis Cluster (6 redis-server processes): prints its REDIS_URL, Ctrl-C stops it
	$(BIN)/python -m infra.redis_cluster_server

dagster: install  ## open the Dagster UI on :3000
	@$(BIN)/python -m infra.ports $${PORT:-3000} "the Dagster UI"
	$(LAUNCH) $(BIN)/dagster dev -m dagster_project.definitions -p $${PORT:-3000}

mlflow: install  ## open the MLflow UI on :5000 over the project's tracking store
	@$(BIN)/python -m infra.ports $${PORT:-5000} "the MLflow UI"
	$(LAUNCH) sh -c '$(BIN)/mlflow ui --backend-store-uri "$$MLFLOW_TRACKING_URI" --port $${PORT:-5000}'

feast-apply: install  ## `feast apply` from the shell, with the project's registry and Redis
	$(LAUNCH) $(BIN)/feast -c feature_repo apply

models: install  ## champion, challenger and earlier champions in the registry
	$(BIN)/python -m training.cli status

rollback: install  ## move the champion alias back one step (a running service swaps within 30 s)
	$(BIN)/python -m training.cli rollback

audit: install  ## the audit trail: admin calls, consent changes, promotions and rollbacks (who, what, when, why)
	$(BIN)/python -m infra.audit

# USER=<id> on make's command line also replaces the login name make passes on: the recipes give it back, or the
# audit trail would name the erased user as the actor (cli:<login>).
erase: install  ## erase one user from every store, with a receipt (USER=<user id>; docs/privacy.md)
	@test "$(origin USER)" = "command line" || { echo "usage: make erase USER=<user id>" >&2; exit 2; }
	$(LAUNCH) env USER="$$(id -un 2>/dev/null || echo unknown)" $(BIN)/python -m infra.erasure erase --user '$(USER)'

rekey: install  ## after `python -m infra.keys rotate pseudonym`: lake and Redis onto the new pseudonyms (docs/privacy.md)
	$(LAUNCH) $(BIN)/python -m infra.rekey --reason '$(or $(REASON),pseudonym key rotation)'

export: install  ## everything held about one user, as files (USER=<user id>; docs/privacy.md)
	@test "$(origin USER)" = "command line" || { echo "usage: make export USER=<user id>" >&2; exit 2; }
	$(LAUNCH) env USER="$$(id -un 2>/dev/null || echo unknown)" $(BIN)/python -m infra.erasure export --user '$(USER)'

.PHONY: backup restore deploy-check
backup: install  ## back up every store into a new folder (DIR=<folder>; docs/deploy.md, Backup and restore)
	@test -n "$(DIR)" || { echo "usage: make backup DIR=<new folder>" >&2; exit 2; }
	$(BIN)/python -m infra.backup create '$(DIR)'

restore: install  ## restore every store from DIR into empty stores (REPLACE=1: delete what they hold first)
	@test -n "$(DIR)" || { echo "usage: make restore DIR=<backup folder> [REPLACE=1]" >&2; exit 2; }
	$(BIN)/python -m infra.backup restore '$(DIR)' $(if $(REPLACE),--replace)

deploy-check: install  ## static checks of the images, compose file and Kubernetes manifests (infra/deploy)
	$(BIN)/python -m infra.deploy.check

clean:  ## remove runtime state (.hyperlift) and reports; keeps .venv
	rm -rf .hyperlift reports
