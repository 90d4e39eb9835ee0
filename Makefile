# hpchub — run `make help` for the targets.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
TESTBED_INVENTORY := inventories/testbed/hosts.yml
PLAYBOOK_ARGS ?=

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[1m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

HUB_REQUIREMENTS := roles/jupyterhub/files/requirements.txt roles/jupyterhub_announcement/files/requirements.txt

$(BIN)/.installed: pyproject.toml $(HUB_REQUIREMENTS) hub_config/pyproject.toml
	@echo "==> creating $(VENV) with the pinned tools (pyproject.toml) and the hub's pinned packages"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  rm -rf $(VENV); \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "==> installing python3-venv (Debian's python3 comes without venv)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; \
	    $(PYTHON) -m venv $(VENV); \
	  else echo "ERROR: '$(PYTHON) -m venv' failed: install python3-venv (Debian/Ubuntu) and retry" >&2; exit 1; fi; }
	@$(BIN)/pip install -q --upgrade pip
	@$(BIN)/pip install -q -e '.[dev]' $(addprefix -r ,$(HUB_REQUIREMENTS)) -e hub_config
	@touch $@

.PHONY: venv
venv: $(BIN)/.installed ## Create .venv with the pinned controller tools

.PHONY: engine
engine: ## Make sure a docker engine answers (installs/starts Debian's when root)
	@tools/testbed.sh engine

.PHONY: testbed
testbed: venv ## Bring up the local testbed and deploy everything into it
	@start=$$(date +%s); \
	tools/testbed.sh up; \
	echo "==> deploying with ansible-playbook playbooks/testbed.yml"; \
	ansible-playbook -i $(TESTBED_INVENTORY) playbooks/testbed.yml $(PLAYBOOK_ARGS); \
	echo "==> testbed ready in $$(( $$(date +%s) - start )) s"; \
	tools/testbed-info.sh

.PHONY: converge
converge: venv ## Re-run the playbooks against the running testbed
	ansible-playbook -i $(TESTBED_INVENTORY) playbooks/testbed.yml $(PLAYBOOK_ARGS)

CENSUS_INVENTORY ?= $(TESTBED_INVENTORY)
CENSUS_ARGS ?=
.PHONY: census
census: venv ## Read-only census of an inventory (CENSUS_INVENTORY=...; ANONYMISED=1 for the shareable export)
	@start=$$(date +%s); \
	ansible-playbook -i $(CENSUS_INVENTORY) playbooks/census.yml \
	  $(if $(ANONYMISED),-e census_anonymised_export=true) $(CENSUS_ARGS); \
	echo "==> census done in $$(( $$(date +%s) - start )) s"

.PHONY: testbed-down
testbed-down: ## Remove the testbed (containers, network, volumes, .testbed/)
	@tools/testbed.sh down
	@rm -rf .testbed

.PHONY: shell
shell: ## Shell on a testbed node: make shell NODE=mgmt1 (default: the login node)
	@tools/testbed.sh shell $(NODE)

.PHONY: lint
lint: venv ## yamllint, ansible-lint (production profile), ruff
	@echo "==> yamllint"; yamllint -s .
	@echo "==> ansible-lint"; ansible-lint
	@echo "==> ruff"; ruff check . && ruff format --check .

.PHONY: docs
docs: venv ## Build the documentation site into .cache/site/ (MkDocs, strict: a broken link fails)
	@start=$$(date +%s); \
	echo "==> mkdocs build --strict (mkdocs.yml: docs/ into .cache/site/)"; \
	mkdocs build --strict; \
	echo "==> docs built in $$(( $$(date +%s) - start )) s: open .cache/site/index.html"

.PHONY: generate
generate: venv ## Regenerate the role files and docs/configuration.md from the settings schema
	$(BIN)/python tools/settings_schema.py

.PHONY: unit
unit: venv ## Unit tests (hub_config, inventory validation); no testbed needed
	pytest tests/unit --junitxml=.cache/test-results/unit.xml

.PHONY: browser
browser: ## Make sure Debian's chromium is there for the browser tests (installs it when root)
	@tools/ensure-chromium.sh

.PHONY: molecule
molecule: venv engine browser ## Molecule: create testbed, converge, idempotence, verify (testinfra + e2e), destroy
	molecule test

.PHONY: e2e
e2e: venv browser ## Run the testbed tests against an already running testbed (make testbed first)
	pytest tests/testbed

.PHONY: test
test: ## The whole suite: lint + docs + unit + molecule (brings up everything it needs)
	@start=$$(date +%s); rm -rf .cache/test-results; \
	summary() { rc=$$?; echo "==> make test finished in $$(( $$(date +%s) - start )) s"; \
	  if [ -x $(BIN)/python ]; then $(BIN)/python tools/test-summary.py .cache/test-results/unit.xml .cache/test-results/testbed.xml || rc=1; fi; \
	  exit $$rc; }; \
	trap summary EXIT; \
	$(MAKE) --no-print-directory lint; \
	$(MAKE) --no-print-directory docs; \
	$(MAKE) --no-print-directory unit; \
	$(MAKE) --no-print-directory molecule

UPGRADE_ARGS ?=
.PHONY: test-upgrade
test-upgrade: venv engine ## Upgrade + backup/restore scenario on a fresh testbed of its own (docs/operations.md)
	@start=$$(date +%s); mkdir -p .cache/test-results; \
	echo "==> test-upgrade: a fresh testbed (removes the running one)"; \
	tools/testbed.sh down; tools/testbed.sh up; \
	HPCHUB_UPGRADE_SCENARIO=1 pytest tests/upgrade -x -p no:cacheprovider -s \
	  --junitxml=.cache/test-results/upgrade.xml $(UPGRADE_ARGS); \
	echo "==> test-upgrade finished in $$(( $$(date +%s) - start )) s"

.PHONY: backup
backup: venv ## Back up the testbed's hub to .backups/ (playbooks/backup.yml; INVENTORY=... for a site)
	ansible-playbook -i $(or $(INVENTORY),$(TESTBED_INVENTORY)) playbooks/backup.yml $(PLAYBOOK_ARGS)

.PHONY: restore
restore: venv ## Restore the newest backup in .backups/ (playbooks/restore.yml; INVENTORY=... for a site)
	ansible-playbook -i $(or $(INVENTORY),$(TESTBED_INVENTORY)) playbooks/restore.yml $(PLAYBOOK_ARGS)

BENCH_ARGS ?=
.PHONY: bench
USERS ?= 16
STEADY ?= 60
bench: venv ## Benchmarks on the running testbed: make bench USERS="10 50" (table appended to docs/performance.md)
	$(BIN)/python benchmarks/spawn_latency.py --grow --users $(USERS) --cpu --steady $(STEADY) \
	  --record $(BENCH_ARGS)

.PHONY: bench-form
bench-form: venv ## Time to open the spawn form with slurmctld idle, flooded and stopped (table appended to docs/performance.md)
	$(BIN)/python benchmarks/form_open.py --record $(BENCH_ARGS)

.PHONY: clean
clean: testbed-down ## Remove the testbed and .venv
	rm -rf $(VENV) .pytest_cache .ruff_cache
