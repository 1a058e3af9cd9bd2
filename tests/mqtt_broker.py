"""A private Mosquitto broker for tests: its own process, config file and loopback port.

``MosquittoBroker`` runs ``mosquitto -c <config>`` with a generated configuration in a directory of
its own (one listener on ``127.0.0.1:<port>``, anonymous clients allowed, persistence optional) and
waits until the port accepts TCP connections. A test stops, kills and restarts it to play a broker
outage; a restart reuses the port, so clients reconnect to the address they know::

    with MosquittoBroker(tmp_path) as broker:
        connect_to(broker.host, broker.port)
        broker.stop()      # SIGTERM: clients see the connection close
        broker.restart()   # same port; persisted sessions and retained messages survive with persistence=True

The fixtures ``mosquitto`` (one broker for the session) and ``mosquitto_factory`` (brokers of a
test's own, to stop and restart) live in ``tests/conftest.py``. The binary is looked up with
``find_mosquitto``: on ``PATH``, in ``/usr/sbin`` or ``/usr/local/sbin``, else installed with
``apt-get`` when the tests run as root on Debian or Ubuntu; otherwise ``BrokerUnavailableError``
says what to install.

``MqttListener`` (a subscriber that records what arrives) and ``publish``/``publish_many`` are
plain paho clients for the other side of a test.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from paho.mqtt import client as mqtt
from paho.mqtt import publish as paho_publish
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

SEARCHED_PLACES = (Path("/usr/sbin/mosquitto"), Path("/usr/local/sbin/mosquitto"))
INSTALL_HINT = (
    "the MQTT tests need the Mosquitto broker (version 2): install it with `apt-get install mosquitto` "
    "(Debian/Ubuntu), `dnf install mosquitto` (Fedora), `brew install mosquitto` (macOS), "
    "or put a `mosquitto` binary on PATH"
)


class BrokerUnavailableError(RuntimeError):
    """Mosquitto is not installed and could not be installed, or the broker did not start."""


def find_mosquitto(install: bool = True) -> Path:
    """The ``mosquitto`` binary; installed with ``apt-get install -y mosquitto`` when missing and allowed.

    Installing needs root and ``apt-get``; Debian's package may also start a system broker on port
    1883, which the tests leave alone (each ``MosquittoBroker`` is a process of its own).
    """
    found = _locate()
    if found is not None:
        return found
    if install and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        _apt_install()
        found = _locate()
        if found is not None:
            return found
    raise BrokerUnavailableError(f"mosquitto not found on PATH nor in /usr/sbin; {INSTALL_HINT}")


def _locate() -> Path | None:
    on_path = shutil.which("mosquitto")
    if on_path:
        return Path(on_path)
    return next((place for place in SEARCHED_PLACES if place.is_file() and os.access(place, os.X_OK)), None)


def _apt_install() -> None:
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "--no-install-recommends", "mosquitto"]
    if subprocess.run(command, env=environment, capture_output=True, check=False).returncode == 0:
        return
    subprocess.run(["apt-get", "update"], env=environment, capture_output=True, check=False)
    result = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BrokerUnavailableError(f"`apt-get install -y mosquitto` failed: {result.stderr.strip()}; {INSTALL_HINT}")


def _password_line(name: str, password: str) -> str:
    """A Mosquitto password file line: ``name:$6$<salt>$<SHA-512 of password and salt>``, both base64."""
    salt = secrets.token_bytes(12)
    digest = hashlib.sha512(password.encode() + salt).digest()
    return f"{name}:$6${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}\n"


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a test certificate authority and a broker certificate it issued for 127.0.0.1 and localhost."""

    ca_certificate: Path
    certificate: Path
    private_key: Path


def make_tls_files(folder: Path) -> TlsFiles:
    """A fresh CA and a broker certificate (SAN ``127.0.0.1``, ``localhost``) in ``folder``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aas-server test CA")])
    ca_certificate = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(folder / "ca.pem", folder / "broker.pem", folder / "broker-key.pem")
    folder.mkdir(parents=True, exist_ok=True)
    files.ca_certificate.write_bytes(ca_certificate.public_bytes(serialization.Encoding.PEM))
    files.certificate.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    files.private_key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return files


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the OS just chose as free on ``host`` (free now; a broker takes it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class MosquittoBroker:
    """A Mosquitto process of its own on ``host:port`` (loopback), configured in ``directory``.

    ``port`` 0 lets the OS choose a free port at the first ``start``; later starts reuse it.
    ``persistence`` keeps sessions, queued QoS 1/2 messages and retained messages in
    ``directory`` across ``stop``/``restart`` (saved on SIGTERM; ``kill`` loses what was not saved).
    ``users`` (name -> password) turns anonymous access off and requires one of them; ``tls``
    (certificate and private key files, PEM) makes the listener speak MQTT over TLS only.
    ``extra_config`` lines are appended to the generated configuration (for example
    ``max_queued_messages 10``). The broker's own log is in ``log_file``.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        directory: Path,
        *,
        port: int = 0,
        persistence: bool = False,
        users: Mapping[str, str] | None = None,
        tls: TlsFiles | None = None,
        extra_config: tuple[str, ...] = (),
        start_timeout: float = 10.0,
    ) -> None:
        self.directory = directory
        self.port = port
        self.persistence = persistence
        self.users = dict(users) if users is not None else None
        self.tls = tls
        self.extra_config = extra_config
        self.start_timeout = start_timeout
        self.config_file = directory / "mosquitto.conf"
        self.log_file = directory / "mosquitto.log"
        self._binary = find_mosquitto()
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> None:
        """Start the broker and return once it accepts TCP connections; ``BrokerUnavailableError`` if it does not."""
        if self.running:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.port == 0:
            self.port = free_port(self.host)
        self.config_file.write_text(self._configuration(), encoding="utf-8")
        self._log = self.log_file.open("ab")
        self._process = subprocess.Popen(
            [str(self._binary), "-c", str(self.config_file)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_until_accepting()
        except BrokerUnavailableError:
            self.kill()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker with SIGTERM (it closes client connections and saves persisted state) and wait for it."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        self._release()

    def kill(self) -> None:
        """Kill the broker with SIGKILL: connections drop without a goodbye and nothing is saved."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self._release()

    def restart(self) -> None:
        """Stop (if running) and start again on the same port."""
        self.stop()
        self.start()

    def log_text(self) -> str:
        """What the broker logged so far (for assertion messages)."""
        return self.log_file.read_text(encoding="utf-8", errors="replace") if self.log_file.exists() else ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def _configuration(self) -> str:
        lines = [f"listener {self.port} {self.host}"]
        if self.tls is not None:
            lines += [f"certfile {self.tls.certificate}", f"keyfile {self.tls.private_key}"]
        if self.users is None:
            lines.append("allow_anonymous true")
        else:
            password_file = self.directory / "passwords"
            password_file.write_text("".join(_password_line(n, p) for n, p in self.users.items()), encoding="utf-8")
            password_file.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {password_file}"]
        lines += [
            "log_dest stderr",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "connection_messages true",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # Started as root, mosquitto switches to the user named here (default "mosquitto").
            lines.append(f"user {pwd.getpwuid(os.geteuid()).pw_name}")
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.directory}/", "autosave_interval 0"]
        else:
            lines.append("persistence false")
        lines += self.extra_config
        return "\n".join(lines) + "\n"

    def _wait_until_accepting(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            process = self._process
            if process is None or process.poll() is not None:
                code = None if process is None else process.returncode
                raise BrokerUnavailableError(
                    f"mosquitto exited with code {code} while starting on port {self.port}: {self.log_text()[-2000:]}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise BrokerUnavailableError(
                        f"mosquitto did not accept connections on {self.host}:{self.port} "
                        f"within {self.start_timeout} s: {self.log_text()[-2000:]}"
                    ) from None
                time.sleep(0.02)

    def _release(self) -> None:
        self._process = None
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None


@dataclass(frozen=True)
class ReceivedMessage:
    topic: str
    payload: bytes
    qos: int
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class MqttListener:
    """A paho client that subscribes to ``topic_filter`` and records what arrives, for assertions.

    ``start`` returns once the broker acknowledged the subscription (SUBACK); ``granted_qos`` is
    what it granted. Messages are appended to ``messages`` from paho's network thread. ``start``
    and ``stop`` block for a few milliseconds; call them with ``asyncio.to_thread`` from a coroutine.
    """

    def __init__(self, host: str, port: int, topic_filter: str, qos: int = 1, timeout: float = 5.0) -> None:
        self.topic_filter = topic_filter
        self.qos = qos
        self.timeout = timeout
        self.messages: list[ReceivedMessage] = []
        self.granted_qos: int | None = None
        self._host, self._port = host, port
        self._subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-listener-{secrets.token_hex(4)}")
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def start(self) -> Self:
        self._client.connect(self._host, self._port, keepalive=30)
        self._client.loop_start()
        if not self._subscribed.wait(self.timeout):
            self.stop()
            raise AssertionError(f"no SUBACK for {self.topic_filter!r} within {self.timeout} s")
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def payloads(self) -> list[Any]:
        """The JSON payloads received so far."""
        return [message.json() for message in list(self.messages)]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason: ReasonCode, properties: Any
    ) -> None:
        if not reason.is_failure:
            client.subscribe(self.topic_filter, qos=self.qos)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode], properties: Any
    ) -> None:
        self.granted_qos = reasons[0].value
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.append(ReceivedMessage(message.topic, bytes(message.payload), message.qos, message.retain))


def publish(host: str, port: int, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> None:
    """Publish one message with a client of its own and return once the broker acknowledged it (blocks briefly)."""
    publish_many(host, port, [(topic, payload)], qos=qos, retain=retain)


def publish_many(
    host: str, port: int, messages: list[tuple[str, bytes | str]], qos: int = 1, retain: bool = False
) -> None:
    """Publish messages in order over one connection (the broker forwards them in that order)."""
    paho_publish.multiple(
        [{"topic": topic, "payload": payload, "qos": qos, "retain": retain} for topic, payload in messages],
        hostname=host,
        port=port,
        client_id=f"test-publisher-{secrets.token_hex(4)}",
    )
