"""The shell side of the WinRM test endpoint: what a Command runs and how.

A real endpoint runs cmd.exe or PowerShell; this one hands what it receives to
`sh` in a sandbox directory, which is all the protocol tests need:

* `powershell ... -EncodedCommand B64` is decoded (UTF-16LE) and its text run
  by `sh -c`; stderr then comes back as a CLIXML error stream (`#< CLIXML`),
  the way powershell.exe reports errors to a non-console caller.
* The transport's bootstrap (an encoded command whose first line is
  `#orchestrate-helper: script-on-stdin`) reads its script from stdin, as
  the bootstrap does in PowerShell: a line count, that many lines, then the
  script's own stdin. So the command starts only once those lines have come
  by Send (they can come in any number of pieces); stdin closed before they
  all came exits 125 and runs nothing.
* `cmd /d /q /k ...` is cmd.exe reading its commands from stdin: everything
  sent, up to the end of stdin, minus the closing `exit %ERRORLEVEL%`, is run
  by `sh -c`.
* `powershell ... -File C:\\x.ps1` runs the mapped file with `sh`.
* `cmd /c X` runs `sh -c X`; anything else runs `sh -c LINE`.
* Windows paths `C:\\a\\b` map to `<root>/C/a/b`.
* The transport's own PowerShell helpers (upload, remove), recognised by their
  `#orchestrate-helper: NAME` first line, are carried out by an equivalent sh
  script, since no PowerShell runs here.
* `Restart-Computer` asks the server to simulate a reboot (of the address the
  command came to; the endpoint's other addresses stay up).
* With a table of responses (`--responses FILE`, see `Responses`), every
  other PowerShell script is answered from the table, as Windows would answer
  it, instead of being run; with `--log FILE` every script received is
  written down (`Log`).
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from xml.sax.saxutils import escape


def map_path(root: str, win_path: str) -> str:
    """`C:\\Windows\\Temp\\x` → `<root>/C/Windows/Temp/x`."""
    m = re.match(r"^([A-Za-z]):[\\/](.*)$", win_path)
    if not m:
        return os.path.join(root, win_path.replace("\\", "/"))
    return os.path.join(root, m.group(1).upper(), m.group(2).replace("\\", "/"))


def sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def ps_string_var(script: str, name: str) -> str | None:
    m = re.search(r"^\$" + name + r"\s*=\s*'((?:[^']|'')*)'\s*$", script, re.M)
    return m.group(1).replace("''", "'") if m else None


def clixml(stderr: bytes) -> bytes:
    """Wraps error text the way powershell.exe serialises its error stream."""
    text = stderr.decode("utf-8", "replace")
    parts = []
    for line in text.splitlines():
        body = escape(line).replace("\r", "")
        parts.append('<S S="Error">%s_x000D__x000A_</S>' % body)
    doc = '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">%s</Objs>' % "".join(parts)
    return b"#< CLIXML\r\n" + doc.encode("utf-8")


class Responses:
    """Canned answers to PowerShell scripts, for hosts that cannot run them.

    The file (JSON) is a list of entries, tried in order; the first whose
    `match` (a Python regular expression, searched in the decoded script,
    multi-line) matches, and whose `times` is not used up, answers:

        {"name": "msiexec KES",               # for the log (default: match)
         "match": "msiexec\\.exe .*/x",
         "stdout": "text", "stderr": "text", "exit_code": 3010,
         "times": 1,                           # answers only the first N matches, per host
         "reboot": false,                      # the host reboots after answering
         "hosts": {"acme-ws02": {"exit_code": 1603, "stdout": "..."}}}

    `hosts` overrides any field for the named hosts (`--host NAME=ADDRESS`),
    `times` included. A script no entry matches gets exit code 127 and says
    so on stderr, so a table that misses a step fails loudly.
    """

    def __init__(self, path: str) -> None:
        with open(path, encoding="utf-8") as f:
            self.entries = json.load(f)
        for entry in self.entries:
            entry["_re"] = re.compile(entry["match"], re.M)
        self.used: dict[tuple[str, int], int] = {}
        self.lock = threading.Lock()

    def answer(self, host: str, script: str) -> dict:
        with self.lock:
            for i, entry in enumerate(self.entries):
                if not entry["_re"].search(script):
                    continue
                fields = {k: v for k, v in entry.items() if k not in ("hosts", "_re")}
                fields.update(entry.get("hosts", {}).get(host, {}))
                times = fields.get("times")
                used = self.used.get((host, i), 0)
                if times is not None and used >= times:
                    continue
                self.used[(host, i)] = used + 1
                fields.setdefault("name", entry["match"])
                return fields
        first = script.strip().split("\n", 1)[0][:120]
        return {"name": None, "stderr": "no response in the table for: %s\n" % first, "exit_code": 127}


class Log:
    """Every command an endpoint receives, one JSON object a line:
    {"seq", "time", "host", "address", "kind", "script", "response", "exit_code"}.
    `kind` is powershell, cmd, upload, remove or reboot; `response` is the
    name of the table entry that answered (null when the script ran)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.seq = 0

    def write(self, **record) -> None:
        with self.lock:
            self.seq += 1
            record = {"seq": self.seq, "time": time.time(), **record}
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")


class Command:
    """One running process, its buffered output and its exit code.

    With `reader` (a `StdinScript`), the process is not started yet: what
    Send delivers goes to the reader until it has the whole script; then
    `on_script(script)` says what to run (argv, and a table's answer), and
    whatever came after the script is the process's stdin."""

    def __init__(
        self,
        argv: list[str] | None,
        cwd: str,
        powershell: bool,
        reboot_after: bool = False,
        exit_code: int | None = None,
        reader: "StdinScript | None" = None,
        on_script=None,
    ) -> None:
        self.id = str(uuid.uuid4()).upper()
        self.powershell = powershell
        self.cwd = cwd
        self.reader, self.on_script = reader, on_script
        self.cond = threading.Condition()
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.open_streams = 2
        self.exit_code: int | None = None
        self.proc = None
        self.killed = False
        self.reboot_after, self.forced_exit = False, None
        if argv is not None:
            self.launch(argv, reboot_after, exit_code)

    def launch(self, argv: list[str], reboot_after: bool, exit_code: int | None) -> None:
        # The host reboots once this command's end has been received.
        self.reboot_after = reboot_after
        # A table's answer: Windows exit codes do not fit in a POSIX status.
        self.forced_exit = exit_code
        self.proc = subprocess.Popen(
            argv,
            cwd=self.cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr), daemon=True).start()

    def _pump(self, pipe, buf: bytearray) -> None:
        while True:
            data = pipe.read1(65536)
            if not data:
                break
            with self.cond:
                buf.extend(data)
                self.cond.notify_all()
        code = self.proc.wait()
        with self.cond:
            self.open_streams -= 1
            if self.open_streams == 0:
                self.exit_code = code if code >= 0 else 128 - code
                if self.forced_exit is not None:
                    self.exit_code = self.forced_exit
                if self.powershell and self.stderr:
                    converted = clixml(bytes(self.stderr))
                    self.stderr.clear()
                    self.stderr.extend(converted)
            self.cond.notify_all()

    def send(self, data: bytes, end: bool) -> None:
        with self.cond:
            if self.proc is None:
                if self.killed:
                    return
                script, data = self.reader.feed(data, end)
                if script is None and not end:
                    return
                if script is None:
                    # stdin ended before the whole script came: run nothing
                    self.launch(["sh", "-c", "exit 125"], False, None)
                else:
                    argv, reboot_after, exit_code = self.on_script(script)
                    self.launch(argv, reboot_after, exit_code)
        try:
            if data:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
            if end:
                self.proc.stdin.close()
        except (BrokenPipeError, ValueError):
            pass

    def receive(self, timeout: float, limit: int = 96 * 1024):
        """Waits for output or the end, up to `timeout` seconds.

        Returns (stdout, stderr, exit_code or None), or None on timeout.
        PowerShell's stderr is held back until the end (it is one CLIXML
        document)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                ready_err = self.stderr and (not self.powershell or self.exit_code is not None)
                if self.stdout or ready_err or self.exit_code is not None:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
            # let a little more output gather, like the real service batches it
            out = bytes(self.stdout[:limit])
            del self.stdout[: len(out)]
            err = b""
            if not self.powershell or self.exit_code is not None:
                err = bytes(self.stderr[:limit])
                del self.stderr[: len(err)]
            done = self.exit_code is not None and not self.stdout and not self.stderr
            return out, err, (self.exit_code if done else None)

    def terminate(self) -> None:
        with self.cond:
            if self.proc is None:
                # killed before its script came: it never ran
                self.killed = True
                self.open_streams = 0
                self.exit_code = 1
                self.cond.notify_all()
                return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class StdinScript:
    """Reads a script from a command's stdin as the transport's readers do.

    `payload`: the bootstrap's format, a line count, then that many lines
    (the script), then the script's own stdin. `cmd`: cmd.exe reading
    commands, everything up to the end of stdin."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.buf = bytearray()

    def feed(self, data: bytes, end: bool) -> tuple[str | None, bytes]:
        """Returns (script, the bytes after it) once the script is whole."""
        self.buf.extend(data)
        if self.kind == "cmd":
            if not end:
                return None, b""
            text = self.buf.decode("utf-8", "replace").replace("\r\n", "\n")
            text = re.sub(r"\n*exit %ERRORLEVEL%\n$", "\n", text)
            return text, b""
        head, nl, rest = bytes(self.buf).partition(b"\n")
        if not nl:
            return None, b""
        # "N" or, from Windows over SSH, "N MARKER" (the bootstrap's pid file)
        want = int((head.split() or [b"0"])[0])
        lines = rest.split(b"\n", want)
        if len(lines) <= want:
            return None, b""
        script = b"\n".join(lines[:want]) + (b"\n" if want else b"")
        return script.decode("utf-8", "replace"), lines[want]


class Shell:
    def __init__(
        self,
        root: str,
        codepage: str,
        corrupt_uploads: bool = False,
        host: str = "",
        address: str = "",
        responses: Responses | None = None,
        log: Log | None = None,
    ) -> None:
        self.id = str(uuid.uuid4()).upper()
        self.root = root
        self.host, self.address = host, address
        self.responses, self.log = responses, log
        # What the last translate() saw: kind, script text, answer.
        self.seen: tuple[str, str, dict | None] = ("cmd", "", None)
        self.corrupt_uploads = corrupt_uploads
        self.codepage = codepage
        self.commands: dict[str, Command] = {}
        self.lock = threading.Lock()
        self.last_used = time.monotonic()

    def start(self, command_line: str) -> tuple[Command, bool]:
        """Starts a command; returns it and whether it asks for a reboot."""
        reader = self.stdin_reader(command_line)
        if reader is not None:
            # The script comes by Send; the command starts when it is whole.
            def on_script(script: str):
                if reader.kind == "cmd":
                    self.seen = ("cmd", script, None)
                    argv, powershell, reboot = ["sh", "-c", script], False, False
                else:
                    argv, powershell, reboot = self.powershell_text(script)
                answer = self.record(command_line)
                return argv, bool(reboot or (answer and answer.get("reboot"))), (
                    int(answer.get("exit_code", 0)) if answer else None
                )

            cmd = Command(None, self.root, reader.kind == "payload", reader=reader, on_script=on_script)
            with self.lock:
                self.commands[cmd.id] = cmd
            return cmd, False
        argv, powershell, reboot = self.translate(command_line)
        answer = self.record(command_line)
        cmd = Command(
            argv,
            self.root,
            powershell,
            reboot_after=bool(answer and answer.get("reboot")),
            exit_code=int(answer.get("exit_code", 0)) if answer else None,
        )
        with self.lock:
            self.commands[cmd.id] = cmd
        return cmd, reboot

    def record(self, command_line: str) -> dict | None:
        """Logs what translate() saw, with the command line it came on."""
        kind, script, answer = self.seen
        if self.log is not None:
            self.log.write(
                host=self.host,
                address=self.address,
                kind=kind,
                script=script,
                command_line=command_line,
                response=answer.get("name") if answer else None,
                exit_code=answer.get("exit_code", 0) if answer else None,
            )
        return answer

    def stdin_reader(self, line: str) -> StdinScript | None:
        """A reader if `line` starts a program that reads its script from stdin."""
        words = line.strip().split()
        lower = [w.lower() for w in words]
        if lower[:4] == ["cmd", "/d", "/q", "/k"]:
            return StdinScript("cmd")
        if lower and lower[0] in ("powershell", "powershell.exe", "pwsh", "pwsh.exe"):
            for flag in ("-encodedcommand", "-enc", "-e", "-ec"):
                if flag in lower and lower.index(flag) + 1 < len(words):
                    text = base64.b64decode(words[lower.index(flag) + 1]).decode("utf-16-le")
                    if text.lstrip().startswith("#orchestrate-helper: script-on-stdin"):
                        return StdinScript("payload")
        return None

    def get(self, command_id: str) -> Command | None:
        with self.lock:
            return self.commands.get(command_id)

    def close(self) -> None:
        with self.lock:
            for cmd in self.commands.values():
                cmd.terminate()
            self.commands.clear()

    def translate(self, line: str) -> tuple[list[str], bool, bool]:
        self.seen = ("cmd", line.strip(), None)
        words = line.strip().split()
        if words and words[0].lower() in ("powershell", "powershell.exe", "pwsh", "pwsh.exe"):
            lower = [w.lower() for w in words]
            for flag in ("-encodedcommand", "-enc", "-e", "-ec"):
                if flag in lower:
                    i = lower.index(flag)
                    text = base64.b64decode(words[i + 1]).decode("utf-16-le")
                    return self.powershell_text(text)
            if "-file" in lower:
                i = lower.index("-file")
                path = " ".join(words[i + 1 :]).strip().strip('"')
                try:
                    with open(map_path(self.root, path), "rb") as f:
                        text = f.read().decode("utf-8-sig")
                except OSError as e:
                    return ["sh", "-c", "echo %s >&2; exit 1" % sh_quote(str(e))], True, False
                return self.powershell_text(text)
            rest = line.strip().split(None, 1)[1] if len(words) > 1 else ""
            rest = re.sub(r"(?i)^(-\w+\s+)*-command\s+", "", rest)
            return self.powershell_text(rest)
        m = re.match(r"(?i)^cmd(\.exe)?\s+/c\s+(.*)$", line.strip(), re.S)
        if m:
            return ["sh", "-c", m.group(2)], False, False
        return ["sh", "-c", line], False, False

    def powershell_text(self, text: str) -> tuple[list[str], bool, bool]:
        first = text.lstrip().split("\n", 1)[0].strip()
        self.seen = ("powershell", text, None)
        if re.match(r"(?i)^restart-computer\b", text.strip()):
            self.seen = ("reboot", text, None)
            return ["sh", "-c", "true"], True, True
        if first.startswith("#orchestrate-helper:"):
            helper = first.split(":", 1)[1].strip()
            self.seen = (helper, text, None)
            path = ps_string_var(text, "path") or ""
            mapped = sh_quote(map_path(self.root, path))
            if helper == "upload":
                # As the PowerShell does: into `$tmp` beside `$path`, then,
                # if its SHA-256 is `$want`, renamed over `$path`
                # (without `$tmp`: straight into `$path`).
                temp = ps_string_var(text, "tmp")
                want = ps_string_var(text, "want") or ""
                written = sh_quote(map_path(self.root, temp)) if temp else mapped
                corrupt = "printf X >> %s; " % written if self.corrupt_uploads else ""
                script = (
                    'set -e; mkdir -p "$(dirname %s)"; base64 -di > %s; %s'
                    "got=$(sha256sum %s | cut -d' ' -f1)" % (mapped, written, corrupt, written)
                )
                if temp:
                    script += (
                        '; if [ "$got" != %s ]; then rm -f %s; '
                        'echo "the copy on the host has SHA-256 $got, expected %s" >&2; exit 1; fi; '
                        "mv -f %s %s" % (sh_quote(want), written, want, written, mapped)
                    )
                script += '; echo "$got"'
            elif helper == "remove":
                script = "rm -f %s" % mapped
            else:
                script = "echo unknown helper %s >&2; exit 1" % sh_quote(helper)
            return ["sh", "-c", script], True, False
        if self.responses is not None:
            answer = self.responses.answer(self.host, text)
            self.seen = ("powershell", text, answer)
            script = "printf '%%s' %s; printf '%%s' %s >&2" % (
                sh_quote(answer.get("stdout", "")),
                sh_quote(answer.get("stderr", "")),
            )
            return ["sh", "-c", script], True, False
        return ["sh", "-c", text], True, False
