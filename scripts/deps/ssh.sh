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

if ! id "$TEST_USER" >/dev/null 2>&1; then
  echo "ssh deps: creating user $TEST_USER"
  useradd --system --create-home --home-dir "/var/lib/$TEST_USER" --shell /bin/sh "$TEST_USER"
fi
HOME_DIR="$(getent passwd "$TEST_USER" | cut -d: -f6)"
PW_FILE="$HOME_DIR/.orchestrate-test-password"

# Password authentication against a test sshd that runs as this user (not
# root): such an sshd cannot read /etc/shadow, and OpenSSH then checks the
# hash in /etc/passwd. So the user gets a random password, its hash in
# /etc/passwd, and the plaintext in a root-only file the tests read.
if [ ! -s "$PW_FILE" ]; then
  head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$PW_FILE"
fi
chown root:root "$PW_FILE"
chmod 600 "$PW_FILE"
password="$(cat "$PW_FILE")"
current="$(getent passwd "$TEST_USER" | cut -d: -f2)"
if ! perl -e 'exit(crypt($ARGV[0], $ARGV[1]) eq $ARGV[1] ? 0 : 1)' "$password" "$current" 2>/dev/null; then
  salt="$(head -c 12 /dev/urandom | base64 | tr -d '/+=' | cut -c1-16)"
  hash="$(perl -e 'print crypt($ARGV[0], "\$6\$" . $ARGV[1] . "\$")' "$password" "$salt")"
  case "$hash" in
    '$6$'*) ;;
    *) echo "ssh deps: cannot hash the test password" >&2; exit 1 ;;
  esac
  # Not locked in shadow either ("!" would refuse even key logins).
  usermod -p '*' "$TEST_USER"
  sed -i "s|^$TEST_USER:[^:]*:|$TEST_USER:$hash:|" /etc/passwd
fi

# The system sshd (if any) must never let this user in: its password is
# known to whoever can read $PW_FILE. The test sshds use their own config.
if [ -d /etc/ssh/sshd_config.d ]; then
  echo "DenyUsers $TEST_USER" > /etc/ssh/sshd_config.d/orchestrate-test.conf
fi
echo "ssh deps: ok (user $TEST_USER)"
