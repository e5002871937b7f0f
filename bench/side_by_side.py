#!/usr/bin/env python3
"""The side-by-side benchmark: the same hosts x 5 steps with orchestrate,
ansible-playbook, pyinfra, parallel-ssh and plain OpenSSH.

Run it through bench/side-by-side.sh (which builds the release binary and
the pinned Python tools' venv first):

    bench/side-by-side.sh 100 250 500

Every host is one address of 127.0.0.0/8 served by a real OpenSSH sshd
(16 addresses per sshd process, sshd's limit), running as the unprivileged
user the test suite uses (orchestrate-test, made by scripts/deps/ssh.sh).
Each step is `echo step-K $(hostname) > /dev/null; test -d /tmp`. The tools
run interleaved (all five, then all five again), three repetitions each,
and each run is checked, from the tool's own output, to have succeeded on
every host; a run that did not is reported as failed, not timed.

Measured per run, each by a subreaper (bench/reap.py) so that processes
re-parented mid-run are counted too:
- wall time of the tool's process, from its start to its exit;
- controller CPU: the tool and every process under it (user + sys),
  including ControlPersist masters it leaves behind, which are ended and
  counted;
- server CPU: every sshd process and what it ran (a fresh fleet per run,
  stopped after it, so that all of it has been waited for);
- peak memory: the largest sum of RSS over the tool's process tree.

Results go to bench/results/ (one JSON line per run) and a Markdown table
on standard output.
"""

import argparse
import datetime
import json
import os
import platform
import pwd
import shutil
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
VENV_BIN = os.path.join(HERE, ".venv", "bin")
PY = os.path.join(VENV_BIN, "python")
ORCHESTRATE = os.path.join(REPO, "target", "release", "orchestrate")
USER = "orchestrate-test"
PORT = 22022
STEPS = 5
TOOLS = ["orchestrate", "ansible", "pyinfra", "parallel-ssh", "openssh"]


def step(k):
    return f"echo step-{k} $(hostname) > /dev/null; test -d /tmp"


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def address(i):
    return f"127.201.{i // 250}.{i % 250 + 1}"


class Fleet:
    """The sshd processes (under one subreaper) for `hosts` addresses."""

    def __init__(self, work, hosts):
        self.work, self.hosts = work, hosts
        self.addresses = [address(i) for i in range(hosts)]
        self.configs = []
        for group in range(0, hosts, 16):
            config = os.path.join(work, "sshd", f"sshd-{group:04d}.conf")
            listen = "".join(
                f"ListenAddress {a}:{PORT}\n" for a in self.addresses[group : group + 16]
            )
            with open(config, "w") as f:
                f.write(
                    listen
                    + f"HostKey {work}/sshd/host_ed25519\n"
                    f"PidFile {config}.pid\n"
                    f"AuthorizedKeysFile {work}/sshd/authorized_keys\n"
                    "StrictModes no\nUsePAM no\nPubkeyAuthentication yes\n"
                    "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                    "MaxStartups 1000:90:2000\nMaxSessions 100\nPrintMotd no\n"
                    "PrintLastLog no\nUseDNS no\nLogLevel ERROR\n"
                    "Subsystem sftp internal-sftp\n"
                )
            chown(config)
            self.configs.append(config)

    def start(self, out):
        for stale in (out, out + ".ready"):
            if os.path.exists(stale):
                os.remove(stale)
        self.out = out
        self.reaper = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "reap.py"), "--out", out, "--user", USER,
             "--fleet", *self.configs],
            stdin=subprocess.DEVNULL,
        )
        # Ready when every address listens: checked in /proc/net/tcp, not
        # by connecting (a probe would cost sshd a fork, counted as its CPU).
        want = {(a, PORT) for a in self.addresses}
        deadline = time.monotonic() + 30
        while not want <= listening():
            if time.monotonic() > deadline or self.reaper.poll() is not None:
                sys.exit(f"sshd did not start; see {self.work}/sshd/*.log")
            time.sleep(0.05)

    def stop(self):
        self.reaper.send_signal(signal.SIGTERM)
        self.reaper.wait()
        with open(self.out) as f:
            return json.load(f)


def listening():
    found = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":
                continue
            host, port = fields[1].split(":")
            octets = [str(int(host[i : i + 2], 16)) for i in (6, 4, 2, 0)]
            found.add((".".join(octets), int(port, 16)))
    return found


def chown(path):
    if os.geteuid() == 0:
        entry = pwd.getpwnam(USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def prepare_keys(work):
    os.makedirs(f"{work}/sshd", exist_ok=True)
    os.makedirs(f"{work}/client", exist_ok=True)
    chown(f"{work}/sshd")
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{work}/sshd/host_ed25519")
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{work}/client/id_ed25519")
    for name in ("host_ed25519", "host_ed25519.pub"):
        chown(f"{work}/sshd/{name}")
    shutil.copy(f"{work}/client/id_ed25519.pub", f"{work}/sshd/authorized_keys")
    chown(f"{work}/sshd/authorized_keys")
    with open(f"{work}/sshd/host_ed25519.pub") as f:
        return " ".join(f.read().split()[:2])


class Tools:
    """Each tool's files for `hosts`, its command line, and its check."""

    def __init__(self, work, hosts, host_key):
        self.work, self.hosts = work, hosts
        self.key = f"{work}/client/id_ed25519"
        self.known_hosts = f"{work}/client/known_hosts-{hosts}"
        self.forks = min(hosts, 100)
        self.addresses = [address(i) for i in range(hosts)]
        with open(self.known_hosts, "w") as f:
            for a in self.addresses:
                f.write(f"[{a}]:{PORT} {host_key}\n")
        self.dir = {t: f"{work}/{t}-{hosts}" for t in TOOLS}
        for d in self.dir.values():
            os.makedirs(d, exist_ok=True)
        self.write_orchestrate()
        self.write_ansible()
        self.write_pyinfra()
        self.write_pssh()
        with open(f"{self.dir['openssh']}/hosts", "w") as f:
            f.write("\n".join(self.addresses) + "\n")

    def write_orchestrate(self):
        d = self.dir["orchestrate"]
        hosts = "".join(
            f"      - {{ name: h{i:04d}, address: {a}, port: {PORT}, os: linux }}\n"
            for i, a in enumerate(self.addresses)
        )
        with open(f"{d}/inventory.yml", "w") as f:
            f.write(
                f"defaults:\n  transport: ssh\n  user: {USER}\n"
                f"  ssh: {{ identity_file: '{self.key}', known_hosts: '{self.known_hosts}' }}\n"
                f"clients:\n  bench:\n    hosts:\n{hosts}"
            )
        steps = "".join(
            f"      - name: step {k}\n        sh: {json.dumps(step(k))}\n"
            for k in range(1, STEPS + 1)
        )
        with open(f"{d}/playbook.yml", "w") as f:
            f.write(
                f"name: side by side\nwaves: [\"100%\"]\nconcurrency: {self.forks}\n"
                f"phases:\n  - name: work\n    steps:\n{steps}"
            )

    def write_ansible(self):
        d = self.dir["ansible"]
        with open(f"{d}/inventory.ini", "w") as f:
            f.write("[bench]\n")
            for i, a in enumerate(self.addresses):
                f.write(f"h{i:04d} ansible_host={a}\n")
            f.write(
                f"[bench:vars]\nansible_port={PORT}\nansible_user={USER}\n"
                f"ansible_ssh_private_key_file={self.key}\n"
                "ansible_python_interpreter=/usr/bin/python3\n"
            )
        tasks = "".join(
            f"    - name: step {k}\n      ansible.builtin.shell: {json.dumps(step(k))}\n"
            for k in range(1, STEPS + 1)
        )
        with open(f"{d}/playbook.yml", "w") as f:
            f.write(f"- hosts: bench\n  gather_facts: false\n  tasks:\n{tasks}")
        # A short ControlPath folder: the socket path must fit in 108 bytes.
        self.control_dir = f"/tmp/obench-cp-{os.getpid()}"
        os.makedirs(self.control_dir, exist_ok=True)
        with open(f"{d}/ansible.cfg", "w") as f:
            f.write(
                f"[defaults]\nforks = {self.forks}\nhost_key_checking = True\n"
                "retry_files_enabled = False\ninterpreter_python = /usr/bin/python3\n"
                "[ssh_connection]\npipelining = True\n"
                f"control_path_dir = {self.control_dir}\n"
                "ssh_args = -C -o ControlMaster=auto -o ControlPersist=60s "
                f"-o KexAlgorithms=curve25519-sha256 -o UserKnownHostsFile={self.known_hosts} "
                "-o StrictHostKeyChecking=yes\n"
            )

    def write_pyinfra(self):
        d = self.dir["pyinfra"]
        with open(f"{d}/inventory.py", "w") as f:
            data = {
                "ssh_port": PORT,
                "ssh_user": USER,
                "ssh_key": self.key,
                "ssh_known_hosts_file": self.known_hosts,
                "ssh_strict_host_key_checking": "yes",
            }
            f.write(f"bench = ({json.dumps(self.addresses)}, {json.dumps(data)})\n")
        with open(f"{d}/deploy.py", "w") as f:
            f.write("from pyinfra.operations import server\n")
            for k in range(1, STEPS + 1):
                f.write(f"server.shell(name='step {k}', commands=[{step(k)!r}])\n")

    def write_pssh(self):
        d = self.dir["parallel-ssh"]
        with open(f"{d}/run.py", "w") as f:
            f.write(
                "import sys\n"
                "from pssh.clients import ParallelSSHClient\n"
                f"hosts = open({d + '/hosts'!r}).read().split()\n"
                f"client = ParallelSSHClient(hosts, user={USER!r}, pkey={self.key!r}, "
                f"port={PORT}, pool_size={self.forks}, num_retries=0)\n"
                "ok = {h: 0 for h in hosts}\n"
                f"for k in range(1, {STEPS + 1}):\n"
                "    output = client.run_command("
                "f'echo step-{k} $(hostname) > /dev/null; test -d /tmp', stop_on_errors=False)\n"
                "    client.join(output)\n"
                "    for out in output:\n"
                "        if out.exception is None and out.exit_code == 0:\n"
                "            ok[out.host] += 1\n"
                f"print(sum(1 for n in ok.values() if n == {STEPS}), 'hosts ran every step')\n"
            )
        with open(f"{d}/hosts", "w") as f:
            f.write("\n".join(self.addresses) + "\n")

    def command(self, tool):
        d = self.dir[tool]
        if tool == "orchestrate":
            for stale in ("state.db", "state.db-wal", "state.db-shm", "report.json"):
                if os.path.exists(f"{d}/{stale}"):
                    os.remove(f"{d}/{stale}")
            return [ORCHESTRATE, "run", "playbook.yml", "-i", "inventory.yml",
                    "--forks", str(self.forks), "--yes", "--state", "state.db",
                    "--report-json", "report.json", "--format", "json"]
        if tool == "ansible":
            return [f"{VENV_BIN}/ansible-playbook", "-i", "inventory.ini", "playbook.yml"]
        if tool == "pyinfra":
            return [f"{VENV_BIN}/pyinfra", "-y", "--parallel", str(self.forks),
                    "inventory.py", "deploy.py"]
        if tool == "parallel-ssh":
            return [PY, "run.py"]
        joined = " && ".join(step(k) for k in range(1, STEPS + 1)) + " && echo ok"
        return ["xargs", "-a", "hosts", "-P", str(self.forks), "-I", "HOST",
                "ssh", "-n", "-T", "-o", "BatchMode=yes", "-o", "ControlMaster=no",
                "-o", "KexAlgorithms=curve25519-sha256",
                "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "StrictHostKeyChecking=yes", "-i", self.key, "-p", str(PORT),
                "-l", USER, "HOST", joined]

    def env(self, tool):
        env = dict(os.environ, NO_COLOR="1", ANSIBLE_NOCOLOR="1", PYTHONUNBUFFERED="1")
        if tool == "ansible":
            env.update(ANSIBLE_CONFIG=f"{self.dir['ansible']}/ansible.cfg",
                       ANSIBLE_HOME=f"{self.work}/ansible-home")
        return env

    def succeeded(self, tool, stdout):
        """How many hosts the tool's own output says ran every step."""
        n = self.hosts
        if tool == "orchestrate":
            with open(f"{self.dir[tool]}/report.json") as f:
                report = json.load(f)
            return sum(
                1
                for c in report["clients"]
                for h in c["hosts"]
                if h["status"] == "succeeded"
                and [s["status"] for s in h["steps"]] == ["ok"] * STEPS
            )
        if tool == "ansible":
            recap = stdout.split("PLAY RECAP")[-1]
            return sum(
                1
                for line in recap.splitlines()
                if f"ok={STEPS} " in line and "unreachable=0 " in line and "failed=0 " in line
            )
        if tool == "pyinfra":
            # pyinfra's results table: one row per host with its counts;
            # every operation must have succeeded, none errored.
            return pyinfra_successes(stdout, self.addresses)
        if tool == "parallel-ssh":
            words = stdout.split()
            return int(words[0]) if words else 0
        return sum(1 for line in stdout.splitlines() if line.strip() == "ok")


def pyinfra_successes(stdout, addresses):
    """Hosts that pyinfra says succeeded on all 5 operations: each operation
    prints `[host] Success` per host."""
    counts = {}
    for line in stdout.splitlines():
        line = line.strip()
        if line.endswith("Success") and line.startswith("["):
            host = line[1 : line.index("]")]
            counts[host] = counts.get(host, 0) + 1
    return sum(1 for a in addresses if counts.get(a, 0) == STEPS)


def run_once(tools, fleet, tool, runs_dir, rep):
    stem = f"{runs_dir}/{tools.hosts}-{tool}-{rep}"
    fleet.start(stem + ".server.json")
    out_file = stem + ".stdout"
    with open(out_file, "w") as out:
        subprocess.run(
            [sys.executable, os.path.join(HERE, "reap.py"), "--out", stem + ".controller.json",
             "--", *tools.command(tool)],
            cwd=tools.dir[tool], env=tools.env(tool), stdout=out, stderr=subprocess.STDOUT,
            check=False,
        )
    server = fleet.stop()
    with open(stem + ".controller.json") as f:
        controller = json.load(f)
    with open(out_file) as f:
        stdout = f.read()
    ok = tools.succeeded(tool, stdout)
    return {
        "tool": tool,
        "hosts": tools.hosts,
        "rep": rep,
        "hosts_succeeded": ok,
        "exit_code": controller["exit_code"],
        "wall_s": controller["wall_s"],
        "controller_cpu_s": controller["user_s"] + controller["sys_s"],
        "server_cpu_s": server["user_s"] + server["sys_s"],
        "peak_tree_rss_mib": controller["peak_tree_rss_kib"] / 1024,
        "max_process_rss_mib": controller["max_process_rss_kib"] / 1024,
        "load_1m": os.getloadavg()[0],
        "command": tools.command(tool),
    }


def versions():
    def first_line(*cmd):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True)
            return (out.stdout + out.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"

    commit = first_line("git", "-C", REPO, "rev-parse", "--short", "HEAD")
    return {
        "orchestrate": f"{first_line(ORCHESTRATE, '--version')} (commit {commit}, release build)",
        "ansible-core": first_line(f"{VENV_BIN}/ansible-playbook", "--version"),
        "pyinfra": first_line(f"{VENV_BIN}/pyinfra", "--version"),
        "parallel-ssh": first_line(
            PY, "-c", "import importlib.metadata as m; print('parallel-ssh', m.version('parallel-ssh'))"
        ),
        "openssh": first_line("ssh", "-V"),
        "python": first_line(PY, "--version"),
        "kernel": platform.release(),
    }


def median(runs, key):
    return statistics.median(r[key] for r in runs)


def table(results, hosts_list):
    lines = []
    for hosts in hosts_list:
        rows = {t: [r for r in results if r["hosts"] == hosts and r["tool"] == t] for t in TOOLS}
        good = {t: rs for t, rs in rows.items() if rs and all(r["hosts_succeeded"] == hosts for r in rs)}
        peers = [t for t in good if t not in ("orchestrate", "openssh")]
        fastest = min(peers, key=lambda t: median(good[t], "wall_s")) if peers else None
        loads = [r["load_1m"] for rs in rows.values() for r in rs]
        lines.append(
            f"\n### {hosts} hosts x {STEPS} steps (load average during the runs "
            f"{min(loads):.1f} to {max(loads):.1f})\n"
        )
        lines.append("| tool | wall | controller CPU | per host-step | server CPU | peak memory | hosts OK |")
        lines.append("|------|-----:|---------------:|--------------:|-----------:|------------:|---------:|")
        for t in TOOLS:
            rs = rows[t]
            if not rs:
                continue
            wall = median(rs, "wall_s")
            cpu = median(rs, "controller_cpu_s")
            ok = "/".join(str(r["hosts_succeeded"]) for r in rs)
            lines.append(
                f"| {t} | {wall:.2f} s | {cpu:.2f} s | {cpu / (hosts * STEPS) * 1000:.2f} ms "
                f"| {median(rs, 'server_cpu_s'):.2f} s | {median(rs, 'peak_tree_rss_mib'):.0f} MiB | {ok} |"
            )
        if "orchestrate" in good:
            o = median(good["orchestrate"], "wall_s")
            parts = []
            if fastest:
                parts.append(
                    f"orchestrate / fastest peer ({fastest}): {o / median(good[fastest], 'wall_s'):.2f}"
                )
            if "openssh" in good:
                parts.append(f"orchestrate / OpenSSH floor: {o / median(good['openssh'], 'wall_s'):.2f}")
            lines.append("\n" + "; ".join(parts) + " (median wall times)")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("hosts", nargs="+", type=int)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument(
        "--table",
        nargs="+",
        metavar="JSONL",
        help="print the table of earlier runs from their bench/results/ files (merged) and stop; "
        "for sizes run in parts, e.g. Ansible at 500 hosts with --reps 1",
    )
    args = parser.parse_args()
    if args.table:
        print_table_of(args.table, args.hosts)
        return
    tools_wanted = args.tools.split(",")
    if max(args.hosts) > 250 * 250:
        sys.exit("too many hosts")
    work = f"/tmp/orchestrate-bench-{os.getpid()}"
    os.makedirs(work)
    chown(work)
    os.chmod(work, 0o755)
    # Each run's output and measurements stay in the scratch folder; the
    # results, one JSON line per run, in bench/results/.
    runs_dir = f"{work}/runs"
    os.makedirs(runs_dir)
    results_dir = os.path.join(HERE, "results")
    os.makedirs(results_dir, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    jsonl = os.path.join(results_dir, f"side-by-side-{stamp}.jsonl")
    host_key = prepare_keys(work)
    info = versions()
    print("versions:", json.dumps(info, indent=1), file=sys.stderr)
    results = []
    try:
        for hosts in args.hosts:
            fleet = Fleet(work, hosts)
            tools = Tools(work, hosts, host_key)
            for rep in range(1, args.reps + 1):
                for tool in tools_wanted:
                    result = run_once(tools, fleet, tool, runs_dir, rep)
                    results.append(result)
                    with open(jsonl, "a") as f:
                        f.write(json.dumps(result) + "\n")
                    print(
                        f"{hosts:5d} {tool:13s} rep {rep}: {result['wall_s']:6.2f} s wall, "
                        f"{result['controller_cpu_s']:6.2f} s ctl CPU, {result['server_cpu_s']:6.2f} s srv CPU, "
                        f"{result['peak_tree_rss_mib']:5.0f} MiB, {result['hosts_succeeded']}/{hosts} ok, "
                        f"load {result['load_1m']:.1f}",
                        file=sys.stderr,
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_report(stamp, info, results, args.hosts, [jsonl])


def print_report(stamp, info, results, hosts_list, jsonls):
    print(f"## Side by side ({stamp})\n")
    print("Versions: " + "; ".join(f"{k}: {v}" for k, v in info.items()))
    print(table(results, hosts_list))
    print("\nCommand lines (in each tool's folder of the bench's scratch directory):\n")
    seen = set()
    for r in results:
        if r["tool"] not in seen:
            seen.add(r["tool"])
            print(f"- {r['tool']}: `{' '.join(r['command'])}`")
    print("\nRaw results: " + ", ".join(os.path.relpath(j, REPO) for j in jsonls))


def print_table_of(jsonls, hosts_list):
    """The report of runs recorded earlier (versions as installed now)."""
    results = []
    for path in jsonls:
        with open(path) as f:
            results.extend(json.loads(line) for line in f if line.strip())
    stamps = [os.path.basename(p).removeprefix("side-by-side-").removesuffix(".jsonl") for p in jsonls]
    print_report(" + ".join(stamps), versions(), results, hosts_list, jsonls)


if __name__ == "__main__":
    main()
