# Sourced by scripts/deps/ssh.sh and sudo.sh (as root): make_test_user NAME
# creates a system user NAME with a random password. The plaintext goes in a
# root-only file in its home (.orchestrate-test-password) that the tests
# read. The hash goes in /etc/passwd, for a test sshd running as that user
# (it cannot read /etc/shadow, so OpenSSH checks the passwd hash), and in
# /etc/shadow, for sudo's PAM (pam_unix reads the shadow entry when there is
# one; a '*' there would refuse the password). Idempotent. The system sshd
# (if any) must never let the user in: its password is known to whoever can
# read the file.
make_test_user() {
  local user="$1" home pw_file password current salt
  if ! id "$user" >/dev/null 2>&1; then
    echo "test deps: creating user $user"
    useradd --system --create-home --home-dir "/var/lib/$user" --shell /bin/sh "$user"
  fi
  home="$(getent passwd "$user" | cut -d: -f6)"
  pw_file="$home/.orchestrate-test-password"
  if [ ! -s "$pw_file" ]; then
    head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$pw_file"
  fi
  chown root:root "$pw_file"
  chmod 600 "$pw_file"
  password="$(cat "$pw_file")"
  current="$(getent passwd "$user" | cut -d: -f2)"
  if ! perl -e 'exit(crypt($ARGV[0], $ARGV[1]) eq $ARGV[1] ? 0 : 1)' "$password" "$current" 2>/dev/null; then
    salt="$(head -c 12 /dev/urandom | base64 | tr -d '/+=' | cut -c1-16)"
    current="$(perl -e 'print crypt($ARGV[0], "\$6\$" . $ARGV[1] . "\$")' "$password" "$salt")"
    case "$current" in
      '$6$'*) ;;
      *) echo "test deps: cannot hash the password of $user" >&2; return 1 ;;
    esac
    sed -i "s|^$user:[^:]*:|$user:$current:|" /etc/passwd
  fi
  if [ "$(getent shadow "$user" | cut -d: -f2)" != "$current" ]; then
    usermod -p "$current" "$user"
  fi
  if [ -d /etc/ssh/sshd_config.d ]; then
    echo "DenyUsers $user" > "/etc/ssh/sshd_config.d/$user.conf"
  fi
}
