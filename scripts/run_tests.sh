#!/usr/bin/env bash
# The test suite: ruff, then pytest. Tests start and stop their own servers (Orthanc,
# PostgreSQL, Dask, Chromium) on 127.0.0.1. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check neurorad tests bench
exec .venv/bin/python -m pytest "$@"
