#!/usr/bin/env bash
# The side-by-side benchmark in one command:
#
#   bench/side-by-side.sh 100 250 500      # hosts; --reps N (default 3), --tools a,b
#
# Builds the release binary, makes the Python tools' venv (bench/.venv, the
# versions pinned in bench/requirements.txt; not part of the test suite),
# makes sure the unprivileged sshd user exists (scripts/deps/ssh.sh), then
# runs bench/side_by_side.py: orchestrate, ansible-playbook, pyinfra,
# parallel-ssh and plain OpenSSH on the same loopback sshd fleet, 5 steps
# per host, interleaved, three repetitions each. Progress goes to standard
# error, the Markdown table for BENCHMARKS.md to standard output, one JSON
# line per run to bench/results/. Run as root (sshd runs as the
# orchestrate-test user, as in the tests).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"

if [ "$(id -u)" -ne 0 ]; then
  echo "run as root: sshd runs as the orchestrate-test user (scripts/deps/ssh.sh)" >&2
  exit 2
fi
bash "$repo/scripts/deps/ssh.sh" >&2
command -v xargs >/dev/null || { echo "xargs is missing (findutils)" >&2; exit 2; }

# With the examples, as the other benchmarks build it: Cargo resolves the
# dependencies' features differently without them, and would build them all
# a second time.
(cd "$repo" && cargo build --release --bin orchestrate --examples >&2)

if [ ! -x "$here/.venv/bin/python" ]; then
  python3 -m venv "$here/.venv"
fi
if ! cmp -s "$here/requirements.txt" "$here/.venv/installed.txt" 2>/dev/null; then
  "$here/.venv/bin/pip" install -q -r "$here/requirements.txt" >&2
  cp "$here/requirements.txt" "$here/.venv/installed.txt"
fi

exec "$here/.venv/bin/python" "$here/side_by_side.py" "$@"
