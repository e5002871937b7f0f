#!/usr/bin/env bash
# Test dependencies of `become` (sudo): Debian's sudo, and the users the
# become tests log in as over the test sshd (see scripts/deps/ssh.sh, which
# runs first and makes orchestrate-test):
#   orchestrate-test    may run anything as any user, with its password
#   orchestrate-nosudo  has a password but no sudoers rule at all
#   orchestrate-tty     may run anything without a password, but under
#                       `Defaults requiretty`
# Each has a random password (see lib/test_user.sh: sudo's PAM needs its
# hash in /etc/shadow too). Idempotent; as a non-root user it only checks
# and prints.
set -euo pipefail

USERS=(orchestrate-test orchestrate-nosudo orchestrate-tty)
RULES=/etc/sudoers.d/orchestrate-test

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && [ -e "$RULES" ]; then
    echo "sudo deps: sudo and the test rules present (not root: nothing installed)"
  else
    echo "sudo deps: sudo or $RULES missing; run this script as root" >&2
  fi
  exit 0
fi

if ! command -v sudo >/dev/null 2>&1 || ! command -v visudo >/dev/null 2>&1; then
  echo "sudo deps: installing sudo"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends sudo >/dev/null
fi

. "$(dirname "$0")/lib/test_user.sh"
for user in "${USERS[@]}"; do
  make_test_user "$user"
done

rules="$(mktemp)"
cat > "$rules" <<'EOF'
# orchestrate's test suite (scripts/deps/sudo.sh): become over a test sshd.
orchestrate-test ALL=(ALL:ALL) ALL
# The Linux playbook lab points PATH at stand-ins and ORCH_STATE at each
# host's folder (sshd SetEnv); keep both through sudo for this user only.
Defaults:orchestrate-test !secure_path, env_keep += "ORCH_STATE"
Defaults:orchestrate-tty requiretty
orchestrate-tty ALL=(ALL:ALL) NOPASSWD: ALL
EOF
visudo -cf "$rules" >/dev/null
install -m 0440 -o root -g root "$rules" "$RULES"
rm -f "$rules"
visudo -c >/dev/null
echo "sudo deps: ok (users ${USERS[*]})"
