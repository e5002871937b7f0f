#!/usr/bin/env bash
# Headless Chromium for tests/it/report_render.rs, which opens the HTML run
# report in a real browser and reads the page it rendered. Idempotent: as
# root on Debian it installs the `chromium` package (refreshing the package
# lists first when they do not know it, and once more if the install fails
# on stale lists); as any other user it only checks and says what to run.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  echo "chromium: present ($(/usr/bin/chromium --version 2>/dev/null || echo 'version unknown'))"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "chromium: /usr/bin/chromium is missing; the HTML report tests need it." >&2
  echo "  install it as root: sudo bash scripts/deps/chromium.sh" >&2
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
install() { apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
# A fresh machine has empty package lists: apt then knows no candidate.
if ! apt-cache policy chromium 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  apt-get update -qq
fi
if ! install; then
  apt-get update -qq
  install
fi
echo "chromium: installed ($(/usr/bin/chromium --version 2>/dev/null || echo 'version unknown'))"
