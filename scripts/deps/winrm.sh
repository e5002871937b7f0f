#!/usr/bin/env bash
# What the WinRM transport's tests need from outside the crate: the Python
# WinRM test endpoint (pyspnego's NTLM acceptor, cryptography for its test
# certificates) and its independent check (pywinrm, pytest).
# Idempotent; quick when everything is already there.
set -euo pipefail
PKGS=(pyspnego==0.12.4 pywinrm==0.5.0 cryptography==48.0.0 pytest==9.2.0)
exec bash "$(dirname "$0")/../pip-pinned.sh" winrm "${PKGS[@]}"
