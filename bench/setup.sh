#!/bin/sh
# What `make bench` needs besides the project's venv: wrk and nginx from Debian, and the peers
# (pypiserver, devpi-server, py-spy) in a venv of their own, never in the project's dependencies.
set -eu
cd "$(dirname "$0")"
# bubblewrap: the watcher's figures are of builds in their sandbox, as insidersd runs them.
if ! command -v wrk >/dev/null 2>&1 || ! { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } \
    || ! command -v bwrap >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light bubblewrap >/dev/null
    else
        echo "bench: wrk, nginx and bwrap are needed: sudo apt-get install -y wrk nginx-light bubblewrap" >&2
    fi
fi
PEERS=.venv-peers
REQUIREMENTS="pypiserver[cache] gunicorn devpi-server devpi-client py-spy"
if [ ! -f "$PEERS/.installed" ] || [ "$(cat "$PEERS/.installed")" != "$REQUIREMENTS" ]; then
    python3 -m venv "$PEERS"
    "$PEERS/bin/python" -m pip install --quiet --upgrade pip
    # shellcheck disable=SC2086  # the list is meant to be split
    "$PEERS/bin/python" -m pip install --quiet $REQUIREMENTS
    echo "$REQUIREMENTS" > "$PEERS/.installed"
fi
# The build backends the watcher's figures build with, served by a local upstream (as in the tests).
if [ ! -f ../.cache/wheelhouse/.complete ]; then
    make -C .. --no-print-directory .cache/wheelhouse/.complete
fi
