#!/usr/bin/env python3
"""A WinRM (MS-WSMV) test endpoint for the transport's tests.

It speaks the published protocol closely enough for real clients (pywinrm and
ours) to work against it: WS-Management shell operations (Create, Command,
Send, Receive, Signal, Delete) over HTTP or HTTPS, Basic or NTLM
authentication, and NTLM message encryption (`multipart/encrypted`,
`application/HTTP-SPNEGO-session-encrypted`). NTLM is pyspnego's acceptor, an
implementation independent of the Rust client's, fed a per-process credential
file (`NTLM_USER_FILE`). Like a default Windows listener it refuses
unencrypted messages over plain HTTP unless `--allow-unencrypted` is given.

What commands do is in shells.py (they run in `sh` in a sandbox directory,
or, with `--responses FILE`, PowerShell scripts are answered from a table of
responses shaped like real Windows output; `--log FILE` records every script
received, per host, in order).
Receive waits at most the request's OperationTimeout (capped by
`--max-operation-timeout`) and then answers with the operation-timeout fault
2150858793, so long commands need several polls. `Restart-Computer` (or a table
entry with `"reboot": true`) makes the address it came to drop every
connection, stop listening for `--reboot-delay` seconds and come back on the
same port, with its shells gone; the endpoint's other addresses, other
simulated hosts, stay up.

It listens only on the loopback addresses given (`--host ADDRESS` or
`--host NAME=ADDRESS`, repeatable; NAME is the host's name in the table's
per-host overrides and in the log) and prints `LISTENING <port> <address>`
for each, then `READY`.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import socket
import ssl
import struct
import sys
import tempfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import spnego

from shells import Log, Responses, Shell

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
}
SHELL_NS = NS["rsp"]
ANON = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
HEAD = (
    '<s:Envelope xml:lang="en-US" xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
    'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
    'xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer" '
    'xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" '
    'xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" '
    'xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd">'
)
BOUNDARY = b"--Encrypted Boundary"
PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
TIMEOUT_TEXT = "The WS-Management service cannot complete the operation within the time specified in OperationTimeout."


class Fault(Exception):
    def __init__(self, code: int, subcode: str, text: str, value: str = "s:Sender") -> None:
        super().__init__(text)
        self.code, self.subcode, self.text, self.value = code, subcode, text, value


class Endpoint:
    """State shared by all listeners: settings, shells, open connections."""

    def __init__(self, args) -> None:
        self.args = args
        self.shells: dict[str, Shell] = {}
        self.lock = threading.Lock()
        # open connections and listeners, by the address they belong to
        self.sockets: dict[socket.socket, str] = {}
        self.servers: dict[str, ThreadingHTTPServer] = {}
        self.addresses: list[tuple[str, int]] = []
        self.names: dict[str, str] = dict(args.names)
        self.rebooting: set[str] = set()
        self.responses = Responses(args.responses) if args.responses else None
        self.log = Log(args.log) if args.log else None
        self.ssl_ctx = None
        if args.tls_dir:
            cert, key = ensure_certs(args.tls_dir)
            self.ssl_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ssl_ctx.load_cert_chain(cert, key)
        self.user = args.user
        self.password = args.password
        self.auth = set(args.auth.split(","))

    def listen(self) -> None:
        for host in self.args.host:
            port = self.listen_on(host, self.args.port)
            self.addresses.append((host, port))

    def listen_on(self, host: str, port: int) -> int:
        server = ThreadingHTTPServer((host, port), Handler, bind_and_activate=False)
        server.allow_reuse_address = True
        server.daemon_threads = True
        server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            server.server_bind()
            server.server_activate()
        except OSError:
            server.server_close()
            raise
        server.endpoint = self
        server.host_address = host
        if self.ssl_ctx is not None:
            server.socket = self.ssl_ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        self.servers[host] = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        return server.server_address[1]

    def reboot(self, host: str) -> None:
        """Simulates a reboot of the host at address `host`. A reboot asked
        for while one is under way (say `Restart-Computer` after an installer
        that exits 1641 restarts the machine itself) joins it, as on Windows."""
        with self.lock:
            if host in self.rebooting:
                return
            self.rebooting.add(host)
        try:
            self._reboot(host)
        finally:
            with self.lock:
                self.rebooting.discard(host)

    def _reboot(self, host: str) -> None:
        time.sleep(0.3)
        port = dict(self.addresses)[host]
        server = self.servers.pop(host, None)
        if server is not None:
            server.shutdown()
            server.server_close()
        with self.lock:
            for sock, address in list(self.sockets.items()):
                if address == host:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
            for shell_id, shell in list(self.shells.items()):
                if shell.address == host:
                    shell.close()
                    del self.shells[shell_id]
        if self.log is not None:
            self.log.write(host=self.names.get(host, host), address=host, kind="down", script="", response=None, exit_code=None)
        time.sleep(self.args.reboot_delay)
        for attempt in range(50):
            try:
                self.listen_on(host, port)
                break
            except OSError as e:  # the port may be in use for a moment
                if attempt == 49:
                    print("REBOOT FAILED %s %s" % (host, e), flush=True)
                    return
                time.sleep(0.1)
        if self.log is not None:
            self.log.write(host=self.names.get(host, host), address=host, kind="up", script="", response=None, exit_code=None)
        print("REBOOTED", flush=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()
        self.ep: Endpoint = self.server.endpoint
        self.ntlm = None
        self.authenticated = False
        with self.ep.lock:
            self.ep.sockets[self.request] = self.server.host_address

    def finish(self) -> None:
        with self.ep.lock:
            self.ep.sockets.pop(self.request, None)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, fmt, *args) -> None:
        if self.ep.args.verbose:
            sys.stderr.write("endpoint: " + (fmt % args) + "\n")

    # ---- HTTP and authentication -------------------------------------

    def reply(self, status: int, body: bytes = b"", headers: dict | None = None, content_type: str | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def challenge(self) -> None:
        self.send_response(401)
        if "ntlm" in self.ep.auth:
            self.send_header("WWW-Authenticate", "Negotiate")
        if "basic" in self.ep.auth:
            self.send_header("WWW-Authenticate", 'Basic realm="WSMAN"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.ntlm = None
        self.authenticated = False

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length) if length else b""
        auth = self.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        scheme = scheme.lower()
        tls = self.ep.ssl_ctx is not None
        if scheme == "basic":
            if "basic" not in self.ep.auth:
                return self.challenge()
            user, _, password = base64.b64decode(token).decode("utf-8", "replace").partition(":")
            if not self.user_matches(user) or password != self.ep.password:
                return self.challenge()
            if not tls and not self.ep.args.allow_unencrypted:
                return self.refuse_unencrypted()
            self.authenticated = False
            return self.process(body, encrypted=False)
        if scheme in ("negotiate", "ntlm"):
            if "ntlm" not in self.ep.auth:
                return self.challenge()
            raw = base64.b64decode(token)
            if raw[8:12] == struct.pack("<I", 1) or self.ntlm is None:
                self.ntlm = spnego.server(protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm)
                self.authenticated = False
            try:
                out = self.ntlm.step(raw)
            except Exception as e:  # wrong user or password
                self.log_message("NTLM failed: %s", e)
                return self.challenge()
            if not self.ntlm.complete:
                hdr = {"WWW-Authenticate": "Negotiate " + base64.b64encode(out).decode()}
                return self.reply(401, headers=hdr)
            self.authenticated = True
            if not body:
                return self.reply(200)
            return self.process(body, encrypted=False)
        if not self.authenticated:
            return self.challenge()
        ctype = self.headers.get("Content-Type", "")
        if ctype.startswith("multipart/encrypted"):
            try:
                plain = self.unseal(body)
            except Exception as e:
                self.log_message("cannot decrypt: %s", e)
                return self.challenge()
            return self.process(plain, encrypted=True)
        return self.process(body, encrypted=False)

    def user_matches(self, user: str) -> bool:
        want = self.ep.user.lower()
        short = lambda u: re.split(r"[\\@]", u)[1 if "\\" in u else 0]  # noqa: E731
        return user.lower() == want or short(user.lower()) == short(want)

    def refuse_unencrypted(self) -> None:
        fault = Fault(
            5,
            "w:AccessDenied",
            "The WinRM service refused an unencrypted message: AllowUnencrypted is false on this "
            "endpoint, so plain HTTP needs message encryption (NTLM sealing) or HTTPS.",
        )
        self.reply(500, fault_envelope(fault, "uuid:" + str(uuid.uuid4())).encode(), content_type="application/soap+xml;charset=UTF-8")

    def unseal(self, body: bytes) -> bytes:
        parts = [p for p in body.split(BOUNDARY + b"\r\n") if p]
        header, payload = parts[0], parts[1]
        expected = int(re.search(rb"Length=(\d+)", header).group(1))
        if payload.endswith(BOUNDARY + b"--\r\n"):
            payload = payload[: -len(BOUNDARY + b"--\r\n")]
        payload = payload.replace(b"\tContent-Type: application/octet-stream\r\n", b"", 1)
        sig_len = struct.unpack("<I", payload[:4])[0]
        sig, data = payload[4 : 4 + sig_len], payload[4 + sig_len :]
        plain = self.ntlm.unwrap_winrm(sig, data)
        if len(plain) != expected:
            raise ValueError("length mismatch")
        return plain

    def seal(self, plain: bytes) -> bytes:
        wrapped = self.ntlm.wrap_winrm(plain)
        return (
            BOUNDARY + b"\r\n"
            b"\tContent-Type: " + PROTOCOL.encode() + b"\r\n"
            b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=" + str(len(plain)).encode() + b"\r\n"
            + BOUNDARY + b"\r\n"
            b"\tContent-Type: application/octet-stream\r\n"
            + struct.pack("<I", len(wrapped.header)) + wrapped.header + wrapped.data
            + BOUNDARY + b"--\r\n"
        )

    def process(self, body: bytes, encrypted: bool) -> None:
        if not encrypted and self.ep.ssl_ctx is None and not self.ep.args.allow_unencrypted:
            return self.refuse_unencrypted()
        status, reply, after = 200, b"", None
        try:
            reply_text, after = self.ep_dispatch(body)
            reply = reply_text.encode("utf-8")
        except Fault as fault:
            status = 500
            reply = fault_envelope(fault, self.message_id).encode("utf-8")
        if encrypted:
            ctype = 'multipart/encrypted;protocol="%s";boundary="Encrypted Boundary"' % PROTOCOL
            self.reply(status, self.seal(reply), content_type=ctype)
        else:
            self.reply(status, reply, content_type="application/soap+xml;charset=UTF-8")
        if after:
            threading.Thread(target=after, daemon=True).start()

    # ---- WS-Management ------------------------------------------------

    def ep_dispatch(self, body: bytes):
        root = ET.fromstring(body)
        header = root.find("s:Header", NS)
        self.message_id = text(header, "a:MessageID")
        action = text(header, "a:Action")
        timeout = parse_duration(text(header, "w:OperationTimeout") or "PT60S")
        timeout = min(timeout, self.ep.args.max_operation_timeout)
        shell_id = None
        for sel in header.iterfind("w:SelectorSet/w:Selector", NS):
            if sel.get("Name") == "ShellId":
                shell_id = sel.text
        options = {o.get("Name"): o.text for o in header.iterfind("w:OptionSet/w:Option", NS)}
        rbody = root.find("s:Body", NS)
        op = action.rsplit("/", 1)[-1]
        if op == "Create":
            address = self.server.host_address
            shell = Shell(
                self.ep.args.root,
                options.get("WINRS_CODEPAGE", "437"),
                self.ep.args.corrupt_uploads,
                host=self.ep.names.get(address, address),
                address=address,
                responses=self.ep.responses,
                log=self.ep.log,
            )
            with self.ep.lock:
                self.ep.shells[shell.id] = shell
            addr = "http%s://%s:%d/wsman" % ("s" if self.ep.ssl_ctx else "", *self.server.server_address[:2])
            inner = (
                "<x:ResourceCreated><a:Address>%s</a:Address><a:ReferenceParameters>"
                "<w:ResourceURI>http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd</w:ResourceURI>"
                '<w:SelectorSet><w:Selector Name="ShellId">%s</w:Selector></w:SelectorSet>'
                "</a:ReferenceParameters></x:ResourceCreated>" % (addr, shell.id)
            )
            return self.envelope("http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse", inner), None
        shell = self.find_shell(shell_id)
        if op == "Delete":
            with self.ep.lock:
                self.ep.shells.pop(shell.id, None)
            shell.close()
            return self.envelope("http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse", None), None
        if op == "Command":
            line = rbody.find("rsp:CommandLine", NS)
            command = (text(line, "rsp:Command") or "").strip()
            args = [a.text or "" for a in line.iterfind("rsp:Arguments", NS)]
            cmd, reboot = shell.start(" ".join([command] + args))
            inner = "<rsp:CommandResponse><rsp:CommandId>%s</rsp:CommandId></rsp:CommandResponse>" % cmd.id
            host = self.server.host_address
            after = (lambda: self.ep.reboot(host)) if reboot else None
            return self.envelope(SHELL_NS + "/CommandResponse", inner), after
        if op == "Send":
            stream = rbody.find("rsp:Send/rsp:Stream", NS)
            cmd = self.find_command(shell, stream.get("CommandId"))
            cmd.send(base64.b64decode(stream.text or ""), stream.get("End", "false").lower() == "true")
            return self.envelope(SHELL_NS + "/SendResponse", "<rsp:SendResponse/>"), None
        if op == "Receive":
            desired = rbody.find("rsp:Receive/rsp:DesiredStream", NS)
            cmd = self.find_command(shell, desired.get("CommandId"))
            # keep the answer within the MaxEnvelopeSize the client asked for
            max_env = int(text(header, "w:MaxEnvelopeSize") or "153600")
            got = cmd.receive(timeout, limit=max(1024, (max_env - 4096) * 3 // 8))
            if got is None:
                raise Fault(2150858793, "w:TimedOut", TIMEOUT_TEXT, value="s:Receiver")
            out, err, code = got
            streams = []
            for name, data in (("stdout", out), ("stderr", err)):
                if data:
                    streams.append('<rsp:Stream Name="%s" CommandId="%s">%s</rsp:Stream>' % (name, cmd.id, base64.b64encode(data).decode()))
            after = None
            if code is not None and cmd.reboot_after:
                cmd.reboot_after = False
                host = self.server.host_address
                after = lambda: self.ep.reboot(host)  # noqa: E731
            if code is not None:
                for name in ("stdout", "stderr"):
                    streams.append('<rsp:Stream Name="%s" CommandId="%s" End="true"></rsp:Stream>' % (name, cmd.id))
                state = (
                    '<rsp:CommandState CommandId="%s" State="%s/CommandState/Done"><rsp:ExitCode>%d</rsp:ExitCode></rsp:CommandState>'
                    % (cmd.id, SHELL_NS, code)
                )
            else:
                state = '<rsp:CommandState CommandId="%s" State="%s/CommandState/Running"></rsp:CommandState>' % (cmd.id, SHELL_NS)
            inner = "<rsp:ReceiveResponse>%s%s</rsp:ReceiveResponse>" % ("".join(streams), state)
            return self.envelope(SHELL_NS + "/ReceiveResponse", inner), after
        if op == "Signal":
            sig = rbody.find("rsp:Signal", NS)
            cmd = shell.get(sig.get("CommandId"))
            if cmd is not None:
                code = text(sig, "rsp:Code") or ""
                if code.endswith("/terminate") or code.endswith("/ctrl_c"):
                    cmd.terminate()
            return self.envelope(SHELL_NS + "/SignalResponse", "<rsp:SignalResponse/>"), None
        raise Fault(2150858817, "w:ActionNotSupported", "The action is not supported by the service: %s" % action)

    def find_shell(self, shell_id: str | None) -> Shell:
        with self.ep.lock:
            shell = self.ep.shells.get(shell_id or "")
            idle = self.ep.args.shell_idle_timeout
            if shell is not None and idle and time.monotonic() - shell.last_used > idle:
                # like the service's IdleTimeOut: an idle shell is reaped
                del self.ep.shells[shell.id]
                shell.close()
                shell = None
            if shell is not None:
                shell.last_used = time.monotonic()
        if shell is None:
            raise Fault(
                2150858843,
                "w:InvalidSelectors",
                "The request for the Windows Remote Shell with ShellId %s failed because the shell was not found on "
                "the server. Possible causes are: the specified ShellId is incorrect or the shell no longer exists on "
                "the server. Provide the correct ShellId or create a new shell and try again." % shell_id,
            )
        return shell

    def find_command(self, shell: Shell, command_id: str | None):
        cmd = shell.get(command_id or "")
        if cmd is None:
            raise Fault(2150858843, "w:InvalidSelectors", "The command with CommandId %s was not found in the shell." % command_id)
        return cmd

    def envelope(self, action: str, inner: str | None) -> str:
        body = "<s:Body>%s</s:Body>" % inner if inner else "<s:Body></s:Body>"
        return (
            HEAD + "<s:Header><a:Action>%s</a:Action><a:MessageID>uuid:%s</a:MessageID><a:To>%s</a:To>"
            "<a:RelatesTo>%s</a:RelatesTo></s:Header>%s</s:Envelope>"
            % (action, str(uuid.uuid4()).upper(), ANON, self.message_id, body)
        )


def fault_envelope(fault: Fault, relates_to: str) -> str:
    return (
        HEAD + "<s:Header><a:Action>http://schemas.dmtf.org/wbem/wsman/1/wsman/fault</a:Action>"
        "<a:MessageID>uuid:%s</a:MessageID><a:To>%s</a:To><a:RelatesTo>%s</a:RelatesTo></s:Header>"
        "<s:Body><s:Fault><s:Code><s:Value>%s</s:Value><s:Subcode><s:Value>%s</s:Value></s:Subcode></s:Code>"
        '<s:Reason><s:Text xml:lang="en-US">%s</s:Text></s:Reason><s:Detail>'
        '<f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="%d" Machine="127.0.0.1">'
        "<f:Message>%s</f:Message></f:WSManFault></s:Detail></s:Fault></s:Body></s:Envelope>"
        % (str(uuid.uuid4()).upper(), ANON, relates_to, fault.value, fault.subcode, fault.text, fault.code, fault.text)
    )


def text(node, path: str) -> str | None:
    found = node.find(path, NS) if node is not None else None
    return found.text if found is not None else None


def parse_duration(value: str) -> float:
    m = re.match(r"^PT(?:(\d+)H)?(?:(\d+)M)?(?:([\d.]+)S)?$", value.strip())
    if not m:
        return 60.0
    h, mi, s = m.groups()
    return int(h or 0) * 3600 + int(mi or 0) * 60 + float(s or 0)


def ensure_certs(directory: str) -> tuple[str, str]:
    """A test CA and a server certificate for 127.0.0.0/8 and localhost."""
    cert_path, key_path = os.path.join(directory, "server.pem"), os.path.join(directory, "server.key")
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return cert_path, key_path
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    os.makedirs(directory, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "orchestrate test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName("localhost")] + [x509.IPAddress(ipaddress.ip_address("127.0.0.%d" % i)) for i in range(1, 41)]
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "winrm-test-endpoint")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    with open(os.path.join(directory, "ca.pem"), "wb") as f:
        f.write(ca.public_bytes(pem))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(pem))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--host", action="append", help="loopback address to listen on, or NAME=ADDRESS (repeatable)")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--tls-dir", help="serve HTTPS with the certificate in this directory (made if missing)")
    p.add_argument("--auth", default="ntlm,basic", help="enabled methods: ntlm,basic")
    p.add_argument("--user", default="vagrant")
    p.add_argument("--password", default="vagrant")
    p.add_argument("--allow-unencrypted", action="store_true")
    p.add_argument("--max-operation-timeout", type=float, default=60.0)
    p.add_argument("--reboot-delay", type=float, default=2.0)
    p.add_argument("--shell-idle-timeout", type=float, default=0, help="reap shells idle this long (0: never)")
    p.add_argument("--keepalive-timeout", type=float, default=0, help="close idle connections after this long (0: never)")
    p.add_argument("--root", help="sandbox directory commands run in")
    p.add_argument("--corrupt-uploads", action="store_true", help="uploads get a byte more (to test the hash check)")
    p.add_argument("--responses", help="answer PowerShell scripts from this JSON table (see shells.Responses)")
    p.add_argument("--log", help="append every command received to this file, one JSON object a line")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    args.host = args.host or ["127.0.0.1"]
    args.names = [h.split("=", 1)[::-1] for h in args.host if "=" in h]
    args.host = [h.split("=", 1)[-1] for h in args.host]
    for host in args.host:
        if not host.startswith("127."):
            p.error("only loopback addresses (127.0.0.0/8) are allowed: %s" % host)
    work = tempfile.mkdtemp(prefix="winrm-endpoint-")
    args.root = args.root or os.path.join(work, "root")
    os.makedirs(args.root, exist_ok=True)
    # pyspnego's NTLM acceptor reads its users from this file.
    # NTLMv2 mixes the domain the client names into the hash, so the user is
    # listed under each form a client may send: DOMAIN\\user, user@domain, user.
    domain, _, user = args.user.rpartition("\\")
    user, _, upn_domain = user.partition("@")
    domain = domain or upn_domain
    user_file = os.path.join(work, "ntlm-users")
    with open(user_file, "w") as f:
        for line_domain, line_user in ((domain, user), ("", user), ("", "%s@%s" % (user, domain)), (".", user)):
            f.write("%s:%s:%s\n" % (line_domain, line_user, args.password))
    os.environ["NTLM_USER_FILE"] = user_file
    if args.keepalive_timeout:
        Handler.timeout = args.keepalive_timeout
    endpoint = Endpoint(args)
    endpoint.listen()
    for host, port in endpoint.addresses:
        print("LISTENING %d %s" % (port, host), flush=True)
    print("READY", flush=True)
    try:
        sys.stdin.read()  # run until the test closes our stdin or kills us
    except KeyboardInterrupt:
        pass
    os._exit(0)


if __name__ == "__main__":
    main()
