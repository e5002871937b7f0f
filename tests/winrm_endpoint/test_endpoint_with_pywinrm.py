"""Checks the WinRM test endpoint with an independent client, pywinrm.

The Rust transport's tests trust this endpoint to behave like Windows; these
tests make sure a client that works against real Windows (pywinrm, with
requests-ntlm/pyspnego on its side) works against it too, for the same
scenarios: NTLM with message encryption over HTTP, Basic over HTTPS, stdin,
exit codes, PowerShell's CLIXML errors, several Receive polls, wrong
passwords and the refusal of unencrypted NTLM over HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import winrm
from winrm.exceptions import InvalidCredentialsError, WinRMError, WinRMOperationTimeoutError

HERE = os.path.dirname(os.path.abspath(__file__))
# pywinrm warns when REQUESTS_CA_BUNDLE is set in the environment; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class Endpoint:
    def __init__(self, tmp_path, *args: str, hosts=("127.0.0.1",)) -> None:
        host_args = [a for h in hosts for a in ("--host", h)]
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "server.py"), *host_args, "--root", str(tmp_path / "root"), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.addresses = []
        for _ in hosts:
            line = self.proc.stdout.readline().split()
            assert line and line[0] == "LISTENING", line
            self.addresses.append((line[2], int(line[1])))
        self.port = self.addresses[0][1]
        assert self.proc.stdout.readline().strip() == "READY"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def http_ntlm(tmp_path):
    ep = Endpoint(tmp_path, "--user", "TESTDOM\\alice", "--password", "Secr3t!", "--max-operation-timeout", "1")
    ep.root = tmp_path / "root"
    yield ep
    ep.stop()


@pytest.fixture
def https_basic(tmp_path):
    ep = Endpoint(tmp_path, "--tls-dir", str(tmp_path / "tls"), "--auth", "basic", "--user", "bob", "--password", "pw")
    ep.ca = str(tmp_path / "tls" / "ca.pem")
    yield ep
    ep.stop()


def ntlm_protocol(ep, password="Secr3t!", encryption="always", user="TESTDOM\\alice") -> winrm.Protocol:
    return winrm.Protocol(
        endpoint="http://127.0.0.1:%d/wsman" % ep.port,
        transport="ntlm",
        username=user,
        password=password,
        message_encryption=encryption,
        operation_timeout_sec=1,
        read_timeout_sec=5,
    )


def run(protocol: winrm.Protocol, command: str, args=(), stdin: bytes | None = None):
    shell = protocol.open_shell(codepage=65001)
    try:
        cid = protocol.run_command(shell, command, list(args))
        if stdin is not None:
            protocol.send_command_input(shell, cid, stdin, end=True)
        out, err, code = protocol.get_command_output(shell, cid)
        protocol.cleanup_command(shell, cid)
        return out, err, code
    finally:
        protocol.close_shell(shell)


def test_ntlm_encrypted_http_command_and_exit_code(http_ntlm):
    p = ntlm_protocol(http_ntlm)
    out, err, code = run(p, "cmd", ["/c", "echo hello; echo oops >&2; exit 3"])
    assert (out, err, code) == (b"hello\n", b"oops\n", 3)


def test_ntlm_user_forms(http_ntlm):
    for user in ("alice", "alice@TESTDOM"):
        out, _, code = run(ntlm_protocol(http_ntlm, user=user), "echo", ["ok"])
        assert (out, code) == (b"ok\n", 0)


def test_ntlm_stdin_and_several_receive_polls(http_ntlm):
    p = ntlm_protocol(http_ntlm)
    out, _, code = run(p, "cmd /c", ["sleep 2.5; tr a-z A-Z"], stdin=b"quiet please\n")
    assert (out, code) == (b"QUIET PLEASE\n", 0)


def test_powershell_encoded_command_and_clixml(http_ntlm):
    session = winrm.Session("http://127.0.0.1:%d/wsman" % http_ntlm.port, auth=("TESTDOM\\alice", "Secr3t!"), transport="ntlm")
    result = session.run_ps("echo from-ps; echo bad thing >&2; exit 1")
    assert result.status_code == 1
    assert result.std_out == b"from-ps\n"
    assert b"bad thing" in result.std_err and b"CLIXML" not in result.std_err


def test_wrong_password_is_401(http_ntlm):
    with pytest.raises(InvalidCredentialsError):
        run(ntlm_protocol(http_ntlm, password="wrong"), "echo", ["x"])


def test_unencrypted_ntlm_over_http_is_refused(http_ntlm):
    with pytest.raises(WinRMError) as info:
        run(ntlm_protocol(http_ntlm, encryption="never"), "echo", ["x"])
    assert "AllowUnencrypted" in str(info.value)


def test_basic_over_https_with_ca(https_basic):
    p = winrm.Protocol(
        endpoint="https://127.0.0.1:%d/wsman" % https_basic.port,
        transport="basic",
        username="bob",
        password="pw",
        ca_trust_path=https_basic.ca,
        server_cert_validation="validate",
    )
    out, err, code = run(p, "cmd", ["/c", "printf 'x\\ny'; exit 0"])
    assert (out, code) == (b"x\ny", 0)


def test_basic_over_https_untrusted_certificate_fails(https_basic):
    p = winrm.Protocol(
        endpoint="https://127.0.0.1:%d/wsman" % https_basic.port,
        transport="basic",
        username="bob",
        password="pw",
        server_cert_validation="validate",
    )
    with pytest.raises(Exception) as info:
        run(p, "echo", ["x"])
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value) or "certificate" in str(info.value).lower()


def test_basic_wrong_password(https_basic):
    p = winrm.Protocol(
        endpoint="https://127.0.0.1:%d/wsman" % https_basic.port,
        transport="basic",
        username="bob",
        password="nope",
        ca_trust_path=https_basic.ca,
    )
    with pytest.raises(InvalidCredentialsError):
        run(p, "echo", ["x"])


def test_reboot_drops_shells_and_comes_back(tmp_path):
    ep = Endpoint(tmp_path, "--user", "alice", "--password", "pw", "--reboot-delay", "1")
    try:
        p = ntlm_protocol(ep, user="alice", password="pw")
        script = base64.b64encode("Restart-Computer -Force".encode("utf-16-le")).decode()
        out, _, code = run(p, "powershell", ["-NoProfile", "-NonInteractive", "-EncodedCommand", script])
        assert code == 0
        assert ep.proc.stdout.readline().strip() == "REBOOTED"
        deadline = time.monotonic() + 10
        while True:
            try:
                out, _, code = run(ntlm_protocol(ep, user="alice", password="pw"), "echo", ["back"])
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert (out, code) == (b"back\n", 0)
    finally:
        ep.stop()


def encoded(script: str) -> list[str]:
    return ["-NoProfile", "-NonInteractive", "-EncodedCommand", base64.b64encode(script.encode("utf-16-le")).decode()]


# The first line is what the endpoint knows the transport's bootstrap by
# (src/transport/wrapper.rs); the rest stands for its PowerShell.
BOOTSTRAP = "#orchestrate-helper: script-on-stdin\n$orchestrateIn = [Console]::OpenStandardInput()\n"


def test_a_script_sent_to_stdin_runs_and_never_reaches_the_command_line(tmp_path):
    log = tmp_path / "received.jsonl"
    ep = Endpoint(tmp_path, "--user", "alice", "--password", "pw", "--log", str(log))
    try:
        p = ntlm_protocol(ep, user="alice", password="pw")
        shell = p.open_shell(codepage=65001)
        try:
            script = "echo s3cret-on-stdin\ntr a-z A-Z\nexit 4\n"
            payload = ("3\n" + script + "own data\n").encode()
            cid = p.run_command(shell, "powershell", encoded(BOOTSTRAP))
            # In two Sends, the first ending inside the script's first line.
            p.send_command_input(shell, cid, payload[:7])
            p.send_command_input(shell, cid, payload[7:], end=True)
            out, _, code = p.get_command_output(shell, cid)
            assert (out, code) == (b"s3cret-on-stdin\nOWN DATA\n", 4)
            record = [json.loads(line) for line in log.read_text().splitlines()][-1]
            assert record["kind"] == "powershell" and record["script"] == script
            assert "s3cret" not in record["command_line"]
            assert "s3cret" not in base64.b64decode(record["command_line"].split()[-1]).decode("utf-16-le")

            # stdin closed before the whole script came: nothing of it runs.
            cid = p.run_command(shell, "powershell", encoded(BOOTSTRAP))
            p.send_command_input(shell, cid, b"2\ntouch ran\n", end=True)
            _, _, code = p.get_command_output(shell, cid)
            assert code == 125 and not (tmp_path / "root" / "ran").exists()

            # cmd.exe reading its commands from stdin, then `exit %ERRORLEVEL%`.
            cid = p.run_command(shell, "cmd", ["/d", "/q", "/k", "rem", "orchestrate"])
            p.send_command_input(shell, cid, b"echo via cmd s3cret\r\nfalse\r\n\r\nexit %ERRORLEVEL%\r\n", end=True)
            out, _, code = p.get_command_output(shell, cid)
            assert (out, code) == (b"via cmd s3cret\n", 1)
            record = [json.loads(line) for line in log.read_text().splitlines()][-1]
            assert record["kind"] == "cmd" and "s3cret" in record["script"]
            assert "s3cret" not in record["command_line"]
        finally:
            p.close_shell(shell)
    finally:
        ep.stop()


def test_several_addresses_in_parallel(tmp_path):
    hosts = ["127.0.0.%d" % i for i in range(2, 8)]
    ep = Endpoint(tmp_path, "--user", "alice", "--password", "pw", hosts=hosts)
    try:
        def one(address):
            host, port = address
            p = winrm.Protocol(
                endpoint="http://%s:%d/wsman" % (host, port), transport="ntlm", username="alice", password="pw",
                message_encryption="always",
            )
            return run(p, "echo", [host])

        with ThreadPoolExecutor(len(hosts)) as pool:
            results = list(pool.map(one, ep.addresses))
        assert [r[0] for r in results] == [("%s\n" % h).encode() for h in hosts]
    finally:
        ep.stop()


def test_terminate_and_delete_a_running_command(http_ntlm):
    p = ntlm_protocol(http_ntlm)
    shell = p.open_shell(codepage=65001)
    cid = p.run_command(shell, "cmd", ["/c", "echo begun; sleep 30"])
    started = time.monotonic()
    out = b""
    while b"begun" not in out:
        try:
            out += p.get_command_output_raw(shell, cid)[0]
        except WinRMOperationTimeoutError:
            pass
    with pytest.raises(WinRMOperationTimeoutError):
        p.get_command_output_raw(shell, cid)
    p.cleanup_command(shell, cid)  # Signal terminate
    p.close_shell(shell)  # Delete
    assert time.monotonic() - started < 10


def test_upload_helper_with_chunked_stdin_and_hash(http_ntlm):
    # The shape of the Rust transport's upload: a PowerShell helper reading
    # base64 lines from stdin, fed by several Send messages, printing SHA-256.
    p = ntlm_protocol(http_ntlm)
    data = os.urandom(300_000)
    script = "#orchestrate-helper: upload\n$path = 'C:\\Windows\\Temp\\orchestrate-py\\blob.bin'\n"
    shell = p.open_shell(codepage=65001)
    cid = p.run_command(shell, "powershell", encoded(script), console_mode_stdin=False)
    lines = [base64.b64encode(data[i : i + 48 * 1024]) + b"\n" for i in range(0, len(data), 48 * 1024)]
    for i, line in enumerate(lines):
        p.send_command_input(shell, cid, line, end=i == len(lines) - 1)
    out, err, code = p.get_command_output(shell, cid)
    p.close_shell(shell)
    assert code == 0, err
    assert out.decode().strip() == hashlib.sha256(data).hexdigest()
    with open(os.path.join(str(http_ntlm.root), "C", "Windows", "Temp", "orchestrate-py", "blob.bin"), "rb") as f:
        assert f.read() == data


def test_responses_table_per_host_times_log_and_reboot_of_one_address(tmp_path):
    # The Windows playbook flow test's setup: scripts answered from a table
    # (per-host overrides, successive answers), every script logged, and a
    # reboot that takes down only the host that asked for it.
    table = tmp_path / "responses.json"
    table.write_text(
        """[
  {"name": "status", "match": "Get-MpComputerStatus", "stdout": "{\\"RealTimeProtectionEnabled\\":true}",
   "hosts": {"ws02": {"stdout": "{\\"RealTimeProtectionEnabled\\":false}"}}},
  {"name": "msi", "match": "msiexec", "exit_code": 3010, "times": 1, "reboot": true},
  {"name": "msi again", "match": "msiexec", "stdout": "already gone", "exit_code": 1605}
]"""
    )
    log = tmp_path / "log.jsonl"
    ep = Endpoint(
        tmp_path, "--user", "alice", "--password", "pw", "--reboot-delay", "1",
        "--responses", str(table), "--log", str(log), hosts=("ws01=127.0.0.2", "ws02=127.0.0.3"),
    )
    try:
        def ps(address, script):
            host, port = address
            p = winrm.Protocol(endpoint="http://%s:%d/wsman" % (host, port), transport="ntlm", username="alice",
                               password="pw", message_encryption="always", operation_timeout_sec=1, read_timeout_sec=5)
            return run(p, "powershell", encoded(script))

        ws01, ws02 = ep.addresses
        assert ps(ws01, "Get-MpComputerStatus | ConvertTo-Json")[::2] == (b'{"RealTimeProtectionEnabled":true}', 0)
        assert ps(ws02, "Get-MpComputerStatus | ConvertTo-Json")[::2] == (b'{"RealTimeProtectionEnabled":false}', 0)
        assert ps(ws01, "Start-Process msiexec.exe /x")[2] == 3010
        assert ep.proc.stdout.readline().strip() == "REBOOTED"
        _, err, code = ps(ws02, "Get-Date")
        assert code == 127 and b"no response in the table for: Get-Date" in err
        assert ps(ws01, "Start-Process msiexec.exe /x") == (b"already gone", b"", 1605)
        # The transport's own helpers still work with a table.
        host, port = ws02
        p = winrm.Protocol(endpoint="http://%s:%d/wsman" % (host, port), transport="ntlm", username="alice",
                           password="pw", message_encryption="always", operation_timeout_sec=1, read_timeout_sec=5)
        helper = "#orchestrate-helper: upload\n$path = 'C:\\Windows\\Temp\\x.ps1'\n"
        out, err, code = run(p, "powershell", encoded(helper), stdin=base64.b64encode(b"Get-Date") + b"\n")
        assert code == 0 and out.decode().strip() == hashlib.sha256(b"Get-Date").hexdigest(), err
        records = [json.loads(line) for line in log.read_text().splitlines()]
        assert [(r["host"], r["kind"], r["response"]) for r in records] == [
            ("ws01", "powershell", "status"),
            ("ws02", "powershell", "status"),
            ("ws01", "powershell", "msi"),
            ("ws01", "down", None),
            ("ws01", "up", None),
            ("ws02", "powershell", None),
            ("ws01", "powershell", "msi again"),
            ("ws02", "upload", None),
        ]
    finally:
        ep.stop()
