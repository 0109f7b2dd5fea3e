#!/usr/bin/env bash
# Installs what the tests need, then runs them all: unit tests and the
# integration tests against real PostgreSQL servers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec cargo test --locked "$@"
