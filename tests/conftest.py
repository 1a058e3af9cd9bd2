"""Shared fixtures."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.mqtt_broker import BrokerUnavailableError, MosquittoBroker
from tests.node_opcua import NodeOpcua, node_opcua_modules
from tests.support import ClientCertificate, make_client_certificate, reference_dir


@pytest.fixture
def reference() -> Path:
    """The reference material; skips with a reason when absent, fails instead in CI (``AAS_REQUIRE_REFERENCE``)."""
    directory = reference_dir()
    if not (directory / "idta-templates").is_dir():
        if os.environ.get("AAS_REQUIRE_REFERENCE"):
            pytest.fail(f"reference material missing at {directory} (AAS_REFERENCE_DIR)")
        pytest.skip(f"reference material not found at {directory}; set AAS_REFERENCE_DIR")
    return directory


@pytest.fixture(scope="session")
def opcua_client_certificate(tmp_path_factory: pytest.TempPathFactory) -> ClientCertificate:
    """A self-signed OPC UA client application certificate, made once per test session."""
    return make_client_certificate(tmp_path_factory.mktemp("client-pki"))


@pytest.fixture(scope="session")
def node_opcua(tmp_path_factory: pytest.TempPathFactory) -> NodeOpcua:
    """node-opcua (tests/node_opcua.py), installed once into the user's cache; skipped without npm unless required."""
    return NodeOpcua(node_opcua_modules(), tmp_path_factory.mktemp("node-opcua"))


def _start_broker(directory: Path, **options: Any) -> MosquittoBroker:
    """A started private Mosquitto broker; a missing binary fails the test with what to install (never skips)."""
    try:
        broker = MosquittoBroker(directory, **options)
        broker.start()
    except BrokerUnavailableError as error:
        pytest.fail(str(error), pytrace=False)
    return broker


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """One private Mosquitto broker on a loopback port for the whole session.

    Shared by tests: use topics of your own (a unique prefix) and do not stop it; a test that stops
    or restarts its broker takes one from ``mosquitto_factory``.
    """
    broker = _start_broker(tmp_path_factory.mktemp("mosquitto"))
    yield broker
    broker.stop()


@pytest.fixture
def mosquitto_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., MosquittoBroker]]:
    """Starts brokers of the test's own (``MosquittoBroker`` options as keywords); all are stopped afterwards."""
    brokers: list[MosquittoBroker] = []

    def start(**options: Any) -> MosquittoBroker:
        broker = _start_broker(tmp_path_factory.mktemp("mosquitto"), **options)
        brokers.append(broker)
        return broker

    yield start
    for broker in brokers:
        broker.stop()
