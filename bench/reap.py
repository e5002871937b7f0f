#!/usr/bin/env python3
"""A subreaper that measures everything a command makes, orphans included.

    reap.py --out FILE [--user NAME] [--until-signal] -- COMMAND [ARGS...]
    reap.py --out FILE [--user NAME] --fleet CONFIG... (sshd -D -e -f CONFIG each)

CPU time from getrusage(RUSAGE_CHILDREN) counts only processes that were
waited for, by their parent or by someone up the tree. A process whose
parent exits first is re-parented to init and its CPU time is lost: sshd's
per-connection processes and what they ran when the connection ends, and
ansible's ControlPersist masters, which detach on purpose. So this process
sets PR_SET_CHILD_SUBREAPER: orphans below it are re-parented to it, and it
waits for every one of them before reading its RUSAGE_CHILDREN.

Controller mode (a COMMAND): runs it, notes when it exits (the wall time),
then ends what it left behind (SIGTERM, then SIGKILL after 2 s: a tool's
lingering connection masters), reaps everything and writes the JSON result.
Fleet mode: starts one `sshd -D -e -f CONFIG` per config (as --user, when
run as root), waits for SIGTERM, passes it to the listeners, reaps
everything (connections' processes included) and writes the result.

The peak memory is the largest sum of the resident sets of the process
tree, sampled every 200 ms (shared pages count once per process), beside
ru_maxrss, the largest single process.
"""

import argparse
import ctypes
import json
import os
import pwd
import resource
import signal
import subprocess
import sys
import threading
import time

PR_SET_CHILD_SUBREAPER = 36
PAGE = os.sysconf("SC_PAGE_SIZE")


def become_subreaper():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit(f"prctl(PR_SET_CHILD_SUBREAPER): errno {ctypes.get_errno()}")


def descendants(root):
    """Pids below `root`, from /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces.
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree_rss(root):
    total = 0
    for pid in descendants(root):
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except OSError:
            pass
    return total


def as_user(name):
    if name is None or os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam(name)
    env = dict(os.environ, HOME=entry.pw_dir, USER=name, LOGNAME=name)

    def drop():
        os.setgid(entry.pw_gid)
        os.setgroups([])
        os.setuid(entry.pw_uid)

    return {"preexec_fn": drop, "env": env, "cwd": entry.pw_dir}


def reap_all():
    """Waits for every process below us, orphans included."""
    while True:
        try:
            os.wait()
        except ChildProcessError:
            return


def end_leftovers(me):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        left = descendants(me)
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 2
        while descendants(me) and time.monotonic() < deadline:
            reap_nonblocking()
            time.sleep(0.05)


def reap_nonblocking():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--user")
    parser.add_argument("--fleet", nargs="+")
    parser.add_argument("command", nargs="*")
    args = parser.parse_args()
    become_subreaper()
    me = os.getpid()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    started = time.monotonic()
    peak = 0
    result = {}
    if args.fleet:
        listeners = [
            subprocess.Popen(
                ["/usr/sbin/sshd", "-D", "-e", "-f", config],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=open(config + ".log", "a"),
                **as_user(args.user),
            )
            for config in args.fleet
        ]
        with open(args.out + ".ready", "w") as f:
            f.write(" ".join(str(p.pid) for p in listeners))
        while not stop:
            time.sleep(0.2)
            reap_nonblocking()
        for listener in listeners:
            listener.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while descendants(me) and time.monotonic() < deadline:
            reap_nonblocking()
            time.sleep(0.05)
        end_leftovers(me)
    else:
        tool = subprocess.Popen(args.command, stdin=subprocess.DEVNULL)
        done = threading.Event()
        peaks = [0]

        def sample():
            while not done.is_set():
                peaks[0] = max(peaks[0], tree_rss(me))
                done.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status = os.waitpid(tool.pid, 0)
        result["wall_s"] = time.monotonic() - started
        result["exit_code"] = os.waitstatus_to_exitcode(status)
        done.set()
        sampler.join()
        peak = peaks[0]
        result["left_behind"] = len(descendants(me))
        end_leftovers(me)
    reap_all()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    result.update(
        user_s=usage.ru_utime,
        sys_s=usage.ru_stime,
        max_process_rss_kib=usage.ru_maxrss,
        peak_tree_rss_kib=peak // 1024,
    )
    with open(args.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
