# The two commands a newcomer needs:  make run  (the daemon on its defaults)  and  make test  (everything CI runs).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint types pytest systemd-host-tools browser-host-tools shells nginx-host-tools sandbox-host-tools clean

# Running needs insiders and its dependencies only; the tests need the dev extra on top.
$(BIN)/.installed-run: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --editable .
	touch $@

$(BIN)/.installed: $(BIN)/.installed-run
	$(BIN)/python -m pip install --quiet --editable '.[dev]'
	touch $@

run: $(BIN)/.installed-run
	$(BIN)/insidersd

test: lint types pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(BIN)/.installed
	$(BIN)/mypy

pytest: $(BIN)/.installed systemd-host-tools browser-host-tools shells nginx-host-tools sandbox-host-tools axe-core \
		.cache/wheelhouse/.complete .cache/real-sources/.complete
	$(BIN)/pytest

# Wheels of the build backends that the watcher tests build with, served by a local index.
.cache/wheelhouse/.complete: tests/build-backends.txt $(BIN)/.installed
	$(BIN)/python -m pip download --quiet --only-binary=:all: --dest .cache/wheelhouse \
		--requirement tests/build-backends.txt
	touch $@

# Real projects' published sdists (pinned by sha256), which the real-backends test makes into
# tagged git repositories. Only the archives are fetched: pip download would run their backends.
.cache/real-sources/.complete: tests/real-sources.txt tests/fetch_sources.py $(BIN)/.installed
	$(BIN)/python -m tests.fetch_sources tests/real-sources.txt .cache/real-sources
	touch $@

# The tests under a real systemd (tests/systemd/, root only) boot a debootstrapped Debian container.
systemd-host-tools:
	@if [ "$$(id -u)" = 0 ] && ! { command -v systemd-nspawn && command -v debootstrap; } >/dev/null; then \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			systemd-container debootstrap; \
	fi

# The web pages' tests (tests/browser/) drive Debian's chromium through its chromedriver, and
# fetch axe-core with npm.
browser-host-tools:
	@if [ "$$(id -u)" = 0 ] && ! { command -v chromium && command -v chromedriver && command -v npm; } >/dev/null; then \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			chromium chromium-driver npm; \
	fi

# The shells whose completion scripts the tests run (insidersctl completion bash|zsh|fish).
shells:
	@if [ "$$(id -u)" = 0 ] && ! { command -v zsh && command -v fish; } >/dev/null; then \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends zsh fish; \
	fi

# A watched repository's build runs in bubblewrap's sandbox (insidersd refuses to build without it).
sandbox-host-tools:
	@if [ "$$(id -u)" = 0 ] && ! command -v bwrap >/dev/null; then \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bubblewrap; \
	fi

# The mirror tests run Debian's nginx in front of insidersd and of the mirror targets.
nginx-host-tools:
	@if [ "$$(id -u)" = 0 ] && ! [ -x /usr/sbin/nginx ]; then \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light; \
	fi

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache dist build

# The benchmark against the peers (not part of make test): make bench, or make bench ARGS="--quick".
.PHONY: bench
bench: $(BIN)/.installed
	sh bench/setup.sh
	$(BIN)/python bench/run.py $(ARGS)

# The Debian package (root: it is built in a debootstrapped trixie tree with systemd-nspawn, cached
# under /var/tmp), checked with lintian: dist/deb/insiders_VERSION_all.deb
.PHONY: deb
deb: systemd-host-tools
	$(PYTHON) -m tests.deb.debbuild --out dist/deb

# axe-core, the accessibility engine the browser tests inject into every page (from the npm
# registry, pinned; not committed).
AXE_VERSION := 4.14.1
.PHONY: axe-core
axe-core: .cache/axe-core/node_modules/axe-core/axe.min.js
.cache/axe-core/node_modules/axe-core/axe.min.js: | browser-host-tools
	mkdir -p .cache/axe-core
	npm install --silent --no-save --no-audit --no-fund --prefix .cache/axe-core axe-core@$(AXE_VERSION)
