"""Monitoring rules files: a good file loads and fits its JSON Schema; bad ones are refused naming file, item, field."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml
from basyx.aas.model import datatypes

from aas_server.analytics.rules import (
    DeviationRule,
    ElementKind,
    LimitsRule,
    LimitState,
    RulesError,
    element_kind,
    load_rules,
    parse_rules,
    rules_json_schema,
)
from aas_server.errors import ConfigurationError

SUBMODEL = "urn:example:submodel:filler:operational-data"

GOOD_FILE = f"""\
rules:
  - name: filler-pressure
    kind: limits
    element: {{submodel: "{SUBMODEL}", path: Pressure}}
    severity: 700
    message: "pressure {{level}}: {{value}} bar (limit {{limit}})"
    hihi: 8
    hi: 6.5
    lo: 1.5
    lolo: 0.5
    deadband: 0.2
    on_delay: 2
    off_delay: 5
    level_severity: {{HighHigh: 900}}
    confirm: true
    max_shelve_time: 3600
  - name: filler-temperature-rise
    kind: rate
    element: {{submodel: "{SUBMODEL}", path: Temperature}}
    severity: 400
    message: "temperature rising {{rate}} K/s"
    limit: 0.5
    window: 30
    direction: rising
  - name: level-sensor-stuck
    kind: stuck
    element: {{submodel: "{SUBMODEL}", path: Tank.Level}}
    severity: 300
    message: "level unchanged for {{duration}} s"
    duration: 600
    tolerance: 0.01
  - name: filler-offline
    kind: bad_quality
    element: {{submodel: "{SUBMODEL}", path: Pressure}}
    severity: 600
    message: "no data ({{quality}})"
    duration: 30
  - name: filler-fault
    kind: state
    element: {{submodel: "{SUBMODEL}", path: Fault}}
    severity: 800
    message: "filler fault"
  - name: filler-speed-deviation
    kind: deviation
    element: {{submodel: "{SUBMODEL}", path: Speed}}
    setpoint: {{submodel: "{SUBMODEL}", path: SpeedSetpoint}}
    severity: 500
    message: "speed {{value}} is {{deviation}} off {{setpoint}}"
    limit: 50
    deadband: 5
"""

KNOWN = {
    (SUBMODEL, "Pressure"): ElementKind.NUMBER,
    (SUBMODEL, "Temperature"): ElementKind.NUMBER,
    (SUBMODEL, "Tank.Level"): ElementKind.NUMBER,
    (SUBMODEL, "Fault"): ElementKind.BOOLEAN,
    (SUBMODEL, "Speed"): ElementKind.NUMBER,
    (SUBMODEL, "SpeedSetpoint"): ElementKind.NUMBER,
    (SUBMODEL, "OperatorNote"): ElementKind.TEXT,
}


def good_data() -> dict[str, Any]:
    data = yaml.safe_load(GOOD_FILE)
    assert isinstance(data, dict)
    return data


def test_a_good_file_loads_with_every_rule_kind(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(GOOD_FILE, encoding="utf-8")
    rules = load_rules(path, KNOWN)
    assert [rule.kind for rule in rules.rules] == ["limits", "rate", "stuck", "bad_quality", "state", "deviation"]
    limits = rules.rules[0]
    assert isinstance(limits, LimitsRule)
    assert (limits.lolo, limits.lo, limits.hi, limits.hihi) == (0.5, 1.5, 6.5, 8.0)
    assert limits.level_severity == {LimitState.HIGH_HIGH: 900}
    deviation = rules.rules[5]
    assert isinstance(deviation, DeviationRule)
    assert deviation.setpoint.path == "SpeedSetpoint"


def test_the_json_schema_accepts_the_good_file_and_names_the_place_of_a_bad_one() -> None:
    validator = jsonschema_rs.validator_for(rules_json_schema())
    assert validator.is_valid(good_data())
    bad = good_data()
    bad["rules"][0]["hi"] = "6.5"
    bad["rules"][3]["severity"] = 0
    places = sorted(list(error.instance_path) for error in validator.iter_errors(bad))
    assert places == [["rules", 0], ["rules", 3]]
    unknown_key = good_data()
    unknown_key["rules"][4]["treshold"] = 1
    assert [list(error.instance_path) for error in validator.iter_errors(unknown_key)] == [["rules", 4]]


def _set(index: int, field: str, value: object) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        data["rules"][index][field] = value

    return change


def _delete(index: int, field: str) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        del data["rules"][index][field]

    return change


def _drop_limits(data: dict[str, Any]) -> None:
    for key in ("hihi", "hi", "lo", "lolo"):
        del data["rules"][0][key]


BAD_FILES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("threshold-string", _set(0, "hi", "6.5"), "rules[0] (filler-pressure).hi: Input should be a valid number"),
    ("threshold-bool", _set(0, "lo", True), "rules[0] (filler-pressure).lo: Input should be a valid number"),
    ("lo-above-hi", _set(0, "lo", 7.0), "rules[0] (filler-pressure).hi: hi (6.5) must be above lo (7)"),
    ("hihi-below-hi", _set(0, "hihi", 6.0), "rules[0] (filler-pressure).hihi: hihi (6) must be above hi (6.5)"),
    (
        "no-limit",
        _drop_limits,
        "rules[0] (filler-pressure).hi: a limits rule needs at least one of hihi, hi, lo, lolo",
    ),
    ("severity-0", _set(4, "severity", 0), "rules[4] (filler-fault).severity: Input should be greater than or equal"),
    ("severity-1001", _set(4, "severity", 1001), "rules[4] (filler-fault).severity: Input should be less than or"),
    ("negative-delay", _set(1, "on_delay", -1), "rules[1] (filler-temperature-rise).on_delay: Input should be greater"),
    ("unknown-kind", _set(2, "kind", "vibration"), "rules[2] (level-sensor-stuck).kind: unknown or missing rule kind"),
    ("no-kind", _delete(2, "kind"), "rules[2] (level-sensor-stuck).kind: unknown or missing rule kind"),
    ("unknown-field", _set(4, "treshold", 1), "rules[4] (filler-fault).treshold: Extra inputs are not permitted"),
    (
        "unknown-placeholder",
        _set(2, "message", "stuck at {limit}"),
        "rules[2] (level-sensor-stuck).message: unknown placeholder {limit}; "
        "known here: duration, name, severity, value",
    ),
    ("broken-template", _set(4, "message", "fault {"), "rules[4] (filler-fault).message: not a valid message template"),
    (
        "rate-deadband",
        _set(1, "deadband", 0.5),
        "rules[1] (filler-temperature-rise).deadband: deadband (0.5) must be below limit (0.5)",
    ),
    (
        "bad-path",
        _set(4, "element", {"submodel": SUBMODEL, "path": "Fault[x]"}),
        "rules[4] (filler-fault).element.path",
    ),
    ("duplicate-name", _set(4, "name", "filler-pressure"), "rules[4] (filler-pressure).name: duplicate rule name"),
]


@pytest.mark.parametrize(("change", "expected"), [case[1:] for case in BAD_FILES], ids=[case[0] for case in BAD_FILES])
def test_a_bad_file_is_refused_naming_file_item_and_field(
    change: Callable[[dict[str, Any]], None], expected: str
) -> None:
    data = good_data()
    change(data)
    with pytest.raises(RulesError) as refused:
        parse_rules(copy.deepcopy(data), "plant/rules.yaml", KNOWN)
    assert isinstance(refused.value, ConfigurationError)
    lines = str(refused.value).splitlines()
    assert len(lines) == 1, str(refused.value)
    assert lines[0].startswith(f"plant/rules.yaml: {expected}"), str(refused.value)


REFERENCE_PROBLEMS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "unknown-element",
        _set(0, "element", {"submodel": SUBMODEL, "path": "Presure"}),
        f"rules[0] (filler-pressure).element: no element 'Presure' in submodel '{SUBMODEL}'",
    ),
    (
        "unknown-submodel",
        _set(4, "element", {"submodel": "urn:example:other", "path": "Fault"}),
        "rules[4] (filler-fault).element: no element 'Fault' in submodel 'urn:example:other'",
    ),
    (
        "unknown-setpoint",
        _set(5, "setpoint", {"submodel": SUBMODEL, "path": "SpeedSet"}),
        "rules[5] (filler-speed-deviation).setpoint: no element 'SpeedSet'",
    ),
    (
        "setpoint-is-element",
        _set(5, "setpoint", {"submodel": SUBMODEL, "path": "Speed"}),
        "rules[5] (filler-speed-deviation).setpoint: the set-point is the watched element itself",
    ),
    (
        "limit-on-text",
        _set(0, "element", {"submodel": SUBMODEL, "path": "OperatorNote"}),
        "rules[0] (filler-pressure).element: a limits rule cannot watch 'OperatorNote', which holds text values",
    ),
    (
        "limit-on-boolean",
        _set(1, "element", {"submodel": SUBMODEL, "path": "Fault"}),
        "rules[1] (filler-temperature-rise).element: a rate rule cannot watch 'Fault', which holds boolean values",
    ),
]


@pytest.mark.parametrize(
    ("change", "expected"), [case[1:] for case in REFERENCE_PROBLEMS], ids=[case[0] for case in REFERENCE_PROBLEMS]
)
def test_a_rule_on_an_element_that_does_not_exist_or_does_not_fit_is_refused(
    change: Callable[[dict[str, Any]], None], expected: str
) -> None:
    data = good_data()
    change(data)
    parse_rules(copy.deepcopy(data), "plant/rules.yaml")  # the file alone is valid
    with pytest.raises(RulesError) as refused:
        parse_rules(data, "plant/rules.yaml", KNOWN)
    assert str(refused.value).startswith(f"plant/rules.yaml: {expected}"), str(refused.value)


def test_every_problem_is_reported_at_once() -> None:
    data = good_data()
    data["rules"][0]["element"]["path"] = "Nope"
    data["rules"][5]["setpoint"]["path"] = "AlsoNope"
    with pytest.raises(RulesError) as refused:
        parse_rules(data, "rules.yaml", KNOWN)
    assert len(str(refused.value).splitlines()) == 2


def test_a_yaml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - name: x\n    kind: [limits\n", encoding="utf-8")
    with pytest.raises(RulesError) as refused:
        load_rules(path)
    assert str(refused.value).startswith(f"{path}:4:"), str(refused.value)


def test_an_empty_file_has_no_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("", encoding="utf-8")
    assert load_rules(path).rules == []


def test_element_kinds_follow_the_value_type() -> None:
    assert element_kind(datatypes.Double) is ElementKind.NUMBER
    assert element_kind(datatypes.UnsignedShort) is ElementKind.NUMBER
    assert element_kind(datatypes.Decimal) is ElementKind.NUMBER
    assert element_kind(datatypes.Boolean) is ElementKind.BOOLEAN
    assert element_kind(datatypes.String) is ElementKind.TEXT
    assert element_kind(datatypes.DateTime) is ElementKind.OTHER
    assert element_kind(None) is ElementKind.OTHER
