#!/usr/bin/env bash
# Real ClamAV for the Linux playbook tests (tests/it/linux_playbooks.rs via
# tests/it/linux_lab): clamd and clamonacc (clamav-daemon), clamdscan,
# freshclam (clamav-freshclam), sigtool (clamav), and dpkg-deb (dpkg) to
# build the test's Kaspersky packages. The tests start their own clamd and
# clamonacc, with their own config, socket and database in a scratch
# folder, and never use the system's /etc/clamav or its services; the
# packages' own services are left as the system has them. Idempotent; as a
# non-root user it only checks and says what to run.
set -euo pipefail

need=(/usr/sbin/clamd /usr/sbin/clamonacc /usr/bin/clamdscan /usr/bin/freshclam /usr/bin/sigtool /usr/bin/dpkg-deb)
missing=()
for tool in "${need[@]}"; do
  [ -x "$tool" ] || missing+=("$tool")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "clamav: present ($(/usr/sbin/clamd --version 2>/dev/null || echo 'version unknown'))"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "clamav: missing ${missing[*]}; the Linux playbook tests need them." >&2
  echo "  install them as root: sudo bash scripts/deps/clamav.sh" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
packages=(clamav clamav-daemon clamdscan clamav-freshclam dpkg)
install() { apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null; }
if ! apt-cache policy clamav-daemon 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  apt-get update -qq
fi
if ! install; then
  apt-get update -qq
  install
fi
echo "clamav: installed ($(/usr/sbin/clamd --version 2>/dev/null || echo 'version unknown'))"
