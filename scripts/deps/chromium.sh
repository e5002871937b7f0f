#!/usr/bin/env bash
# Headless Chromium for tests/report_render.rs, which opens the HTML run
# report in a real browser and reads the rendered page. Idempotent: as root
# on Debian it installs the `chromium` package (updating the package lists
# first when they are missing); as any other user it only checks and says
# what to run.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
  echo "chromium: present ($(/usr/bin/chromium --version 2>/dev/null || echo unknown version))"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "chromium: missing; the HTML report tests need it." >&2
  echo "  run as root: bash scripts/deps/chromium.sh   (or: apt-get install chromium)" >&2
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# A fresh machine has empty package lists; `apt-cache policy` then shows no candidate.
if ! apt-cache policy chromium 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  apt-get update -qq
fi
apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "chromium: installed ($(/usr/bin/chromium --version 2>/dev/null || echo unknown version))"
