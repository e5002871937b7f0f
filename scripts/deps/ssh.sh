#!/usr/bin/env bash
# Test dependencies of the SSH transport: OpenSSH server and client (sshd,
# ssh-keygen, ssh-keyscan, ssh-agent, ssh-add) and the unprivileged user the
# test sshd runs as when the suite runs as root (sshd only logs in the user it
# runs as). Idempotent; as a non-root user it only checks and prints.
set -euo pipefail

TEST_USER="${ORCHESTRATE_SSH_TEST_USER:-orchestrate-test}"
need=(/usr/sbin/sshd ssh-keygen ssh-keyscan ssh-agent ssh-add setpriv)

missing=()
for tool in "${need[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done

if [ "$(id -u)" -ne 0 ]; then
  if [ ${#missing[@]} -gt 0 ]; then
    echo "ssh deps: missing ${missing[*]}; run this script as root to install openssh-server/openssh-client" >&2
  else
    echo "ssh deps: OpenSSH tools present (not root: nothing installed)"
  fi
  exit 0
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "ssh deps: installing openssh-server openssh-client (missing: ${missing[*]})"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends openssh-server openssh-client util-linux >/dev/null
fi

# The Debian package may have started a system sshd on port 22; the tests do
# not need it and never use port 22, so it is left as the system has it.

# Password authentication against a test sshd that runs as this user (not
# root): see make_test_user.
. "$(dirname "$0")/lib/test_user.sh"
make_test_user "$TEST_USER"
echo "ssh deps: ok (user $TEST_USER)"
