"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
