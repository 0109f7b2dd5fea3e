#!/usr/bin/env bash
# The demo: local PostgreSQL nodes with sample data, a catalog copy, and
# sluice in front of them. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec cargo run --release --locked -- demo "$@"
