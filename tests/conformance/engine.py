"""Running the IDTA ``aas-test-engines`` API suites (SSP-002 read profiles) and reading their results.

``run_suite(base_url, suite)`` runs one suite synchronously (the engines talk blocking ``requests``:
call it through ``asyncio.to_thread`` when the server runs on the caller's loop) and returns a
``SuiteReport``: the engine's counts of passed positive and negative checks and every failed
check with its request, the engine's expectation and the answer it got.

How the four suites meet the server (``SUITES``):

- *AAS Repository* and *Submodel Repository* run against the API root (``/api/v3.0``).
- *AAS Service* and *Submodel Service* address a single shell or submodel at ``/aas/...`` and
  ``/submodel/...``; as the engines' own server checks do, they run against the repository
  superpath of one object (``/shells/{id}``, ``/submodels/{id}``) with that prefix removed.
  Three kinds of request the service suites send relative to the object are service-level
  interfaces in Part 2 and are sent to the API root instead: ``/description``, ``/serialization``
  and the ``/shells`` listing the serialization check uses to find an id. The service root itself
  (the engines' path ``/``) is requested without a trailing slash.

The engines keep their result tree in a module-global stack, so suites must not run concurrently.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import requests
from aas_test_engines import api, config, http
from aas_test_engines.test_cases.v3_0 import api as engine_suites
from aas_test_engines.test_cases.v3_0.interfaces.shared import ApiTestSuite

from tests.conformance.dataset import ALL_ELEMENTS_SUBMODEL_ID, CONFORMANCE_SHELL_ID

PROFILE_PREFIX = "https://admin-shell.io/aas/API/3/0/"

_ERROR_LEVELS = frozenset({"ERROR", "CRITICAL"})
_SERVICE_LEVEL_PATHS = ("/description", "/serialization", "/shells")


def _base64url(identifier: str) -> str:
    return base64.urlsafe_b64encode(identifier.encode()).decode("ascii").rstrip("=")


@dataclass(frozen=True)
class Suite:
    """One engine suite: its profile and where on the server it is mounted."""

    name: str
    profile: str
    service_root: str = ""
    """Path below the API root that the suite's ``/aas`` or ``/submodel`` prefix stands for."""
    removed_prefix: str = ""
    """The suite's path prefix for the single object (``/aas``, ``/submodel``), removed from requests."""


def suites_for(shell_id: str, submodel_id: str) -> dict[str, Suite]:
    """The four SSP-002 read profiles, the service ones mounted on the shell and submodel given."""
    return {
        suite.name: suite
        for suite in (
            Suite("aas-repository", PROFILE_PREFIX + "AssetAdministrationShellRepositoryServiceSpecification/SSP-002"),
            Suite("submodel-repository", PROFILE_PREFIX + "SubmodelRepositoryServiceSpecification/SSP-002"),
            Suite(
                "aas-service",
                PROFILE_PREFIX + "AssetAdministrationShellServiceSpecification/SSP-002",
                f"/shells/{_base64url(shell_id)}",
                "/aas",
            ),
            Suite(
                "submodel-service",
                PROFILE_PREFIX + "SubmodelServiceSpecification/SSP-002",
                f"/submodels/{_base64url(submodel_id)}",
                "/submodel",
            ),
        )
    }


SUITES: dict[str, Suite] = suites_for(CONFORMANCE_SHELL_ID, ALL_ELEMENTS_SUBMODEL_ID)
"""The four SSP-002 read profiles of Part 2 that ``aas-test-engines`` 1.0 checks, on the conformance data set."""


@dataclass(frozen=True)
class FailedCheck:
    """One check the engine marked as failed (level ERROR or CRITICAL)."""

    name: str
    """Where in the suite: operation / Negative|Positive Tests / check (/ element kind)."""
    request: str
    expected: str
    got: str

    def __str__(self) -> str:
        return f"{self.name}\n    request:  {self.request}\n    expected: {self.expected}\n    got:      {self.got}"


@dataclass(frozen=True)
class EngineCrash:
    """An operation whose checks the engine could not run: it raised while walking the server's answers."""

    operation: str
    error: str
    where: str
    """The engine function that raised (``module:function``)."""

    def __str__(self) -> str:
        return f"{self.operation}: the engine raised {self.error} in {self.where}"


@dataclass
class SuiteReport:
    """The outcome of one suite run."""

    suite: Suite
    positive_passed: int = 0
    positive_total: int = 0
    negative_passed: int = 0
    negative_total: int = 0
    failures: list[FailedCheck] = field(default_factory=list)
    crashes: list[EngineCrash] = field(default_factory=list)
    """Operations left out because the engine raised on them (the others still ran)."""

    @property
    def passed(self) -> bool:
        return not self.failures and not self.crashes

    def summary(self) -> str:
        """Counts and the failed checks, for an assertion message."""
        lines = [
            f"{self.suite.name} ({self.suite.profile}): positive {self.positive_passed}/{self.positive_total}, "
            f"negative {self.negative_passed}/{self.negative_total}, {len(self.failures)} failed checks"
        ]
        lines.extend(str(failure) for failure in self.failures)
        lines.extend(str(crash) for crash in self.crashes)
        return "\n".join(lines)


def _engine_client(base_url: str, suite: Suite) -> Any:
    """An engine ``HttpClient`` mounting ``suite`` on the server at ``base_url`` as described above."""
    sent: dict[str, str] = {}
    session = requests.Session()
    session.trust_env = False  # loopback: no proxy from the environment

    class MountedClient(http.HttpClient):
        """Sends the engine's requests to the paths described in the module docstring; remembers where."""

        sent: dict[str, str]
        session: requests.Session

        def descend(self, prefix: str) -> MountedClient:
            result = MountedClient(self.host, self.verify, self.remove_path_prefix, self.additional_headers)
            result.prefixes = [*self.prefixes, prefix]
            result.sent = self.sent
            result.session = self.session
            return result

        def send(self, request: Any) -> Any:
            path = "".join(self.prefixes) + request.make_url()
            relative = path
            removed = suite.removed_prefix
            if removed and (relative == removed or relative.startswith((removed + "/", removed + "?"))):
                relative = relative[len(removed) :]
            if suite.service_root and relative.startswith(_SERVICE_LEVEL_PATHS):
                url = base_url + relative
            else:
                if relative.startswith("/") and relative.split("?")[0] == "/":
                    relative = relative[1:]
                url = base_url + suite.service_root + relative
            self.sent[path] = url.removeprefix(base_url)
            body = None if request.body is None else json.dumps(request.body)
            headers = {**self.additional_headers, **request.headers}
            return session.request(method=request.method, url=url, data=body, headers=headers, timeout=30)

    client = MountedClient(base_url + suite.service_root)
    client.sent = sent
    client.session = session
    return client


def _text(result: Any) -> str:
    return str(result.message).strip()


def _failed_checks(
    result: Any, trail: tuple[str, ...], request: str, answer: str, sent: dict[str, str]
) -> Iterator[FailedCheck]:
    """The failing checks under ``result``: the deepest failing nodes, with the last request seen on the way."""
    if result.ok():
        return
    children = list(result.sub_results)
    for child in children:
        text = _text(child)
        if text.startswith("Invoke "):
            path = text.removeprefix("Invoke ")
            request = path if sent.get(path, path) == path else f"{path} (sent as {sent[path]})"
        elif text.startswith("Response: "):
            answer = text.removeprefix("Response: ")
    failing_branches = [child for child in children if not child.ok() and child.sub_results]
    if failing_branches:
        for child in failing_branches:
            yield from _failed_checks(child, (*trail, _text(result)), request, answer, sent)
        return
    reasons = [_text(child) for child in children if not child.ok()] or [_text(result)]
    yield FailedCheck(" / ".join((*trail[1:], _text(result))), request, "; ".join(reasons), answer)


def _crash(error: Exception) -> EngineCrash:
    """Which operation's suite the engine was running when it raised, and where it raised."""
    operation = "(engine)"
    where = "(unknown)"
    trace = error.__traceback__
    while trace is not None:
        frame = trace.tb_frame
        suite = frame.f_locals.get("self")
        if isinstance(suite, ApiTestSuite):
            operation = str(suite.operation)
        where = f"{frame.f_globals.get('__name__')}:{frame.f_code.co_name}"
        trace = trace.tb_next
    return EngineCrash(operation, repr(error), where)


def _run_once(base_url: str, suite: Suite, report: SuiteReport, operation: str) -> None:
    """Run one ``operation`` of the suite and add its counts, failures or crash to ``report``."""
    client = _engine_client(base_url, suite)
    selection = config.TestCaseFilter(operation)
    try:
        result, matrix = api.execute_tests(client, config.CheckApiConfig(suite=suite.profile, filter=selection))
    except Exception as error:  # the engines raise on answers they cannot walk
        report.crashes.append(_crash(error))
        return
    finally:
        client.session.close()
    report.positive_passed += matrix.valid_accepted
    report.positive_total += matrix.valid_accepted + matrix.valid_rejected
    report.negative_passed += matrix.invalid_rejected
    report.negative_total += matrix.invalid_accepted + matrix.invalid_rejected
    report.failures.extend(_failed_checks(result, (), "(none)", "(no response)", client.sent))


def run_suite(base_url: str, suite: Suite) -> SuiteReport:
    """Run ``suite`` against the API at ``base_url`` (``http://host:port/api/v3.0``); blocking.

    The suite's operations run one at a time (what the engine runs for one operation does not
    depend on the others), so when the engine raises on one (it cannot walk some valid answers,
    e.g. a SubmodelElementCollection without ``value``), that crash is recorded in ``crashes`` and
    the other operations are still checked.
    """
    report = SuiteReport(suite)
    for _, suite_class in engine_suites.available_suites[suite.profile]:
        _run_once(base_url, suite, report, str(suite_class.operation))
    return report
