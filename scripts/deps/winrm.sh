#!/usr/bin/env bash
# What the WinRM transport's tests need from outside the crate: the Python
# WinRM test endpoint (pyspnego's NTLM acceptor, cryptography for its test
# certificates) and its independent check (pywinrm, pytest).
# Idempotent; quick when everything is already there.
set -euo pipefail
PKGS=(pyspnego==0.12.4 pywinrm==0.5.0 cryptography==48.0.0 pytest==9.2.0)
if python3 - "${PKGS[@]}" <<'PY' 2>/dev/null; then
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
  echo "winrm test deps missing: run as root: pip install ${PKGS[*]}" >&2
  exit 1
fi
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "${PKGS[@]}"
