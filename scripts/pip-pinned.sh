#!/usr/bin/env bash
# pip-pinned.sh PART NAME==VERSION...: makes sure these exact Python package
# versions are installed (as root), or says how to (as another user). For the
# scripts in scripts/deps/; idempotent, quick when all are there.
set -euo pipefail
part=$1
shift
if python3 - "$@" <<'PY' 2>/dev/null; then
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    if version(name) != want:
        sys.exit(1)
PY
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "$part test deps missing: run as root: pip install $*" >&2
  exit 1
fi
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$@"
