#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test.
# Usage: scripts/test.sh [extra arguments for cargo nextest]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
# The WinRM test endpoint is itself checked by an independent client (pywinrm).
python3 -m pytest tests/winrm_endpoint -q
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast "$@"
else
  cargo test --no-fail-fast "$@"
fi
