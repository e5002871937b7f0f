#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine (as root), or
# checks it is there (as another user). Each part of the suite that needs
# something from outside the crate keeps its own script in scripts/deps/.
set -euo pipefail
cd "$(dirname "$0")/.."
for part in scripts/deps/*.sh; do
  [ -e "$part" ] || continue
  echo "test deps: $part"
  bash "$part"
done
