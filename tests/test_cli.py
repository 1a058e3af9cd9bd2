"""The command line: import and export of packages through the hub's database."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from aas_server.exchange import count_elements, read_package_file

NAMEPLATE = "IDTA_02006-3-0_Template_Digital_Nameplate"


def _cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aas_server", *arguments], capture_output=True, text=True, timeout=120)


def _settings(tmp_path: Path) -> Path:
    settings = tmp_path / "hub.yaml"
    settings.write_text(f"data_dir: {tmp_path / 'data'}\n", encoding="utf-8")
    return settings


def test_import_reports_repairs_and_strict_mode_refuses(reference: Path, tmp_path: Path) -> None:
    source = reference / "idta-templates" / f"{NAMEPLATE}.json"
    report = tmp_path / "report.json"
    lenient = _cli("import", str(source), "--report", str(report))
    assert lenient.returncode == 0, lenient.stderr
    assert NAMEPLATE in lenient.stdout
    reports = json.loads(report.read_text(encoding="utf-8"))
    assert reports[0]["issues"], "the published nameplate template needs repairs; the report must list them"
    assert all(issue["path"] for issue in reports[0]["issues"])
    strict = _cli("import", str(source), "--strict")
    assert strict.returncode == 2
    assert "Traceback" not in strict.stderr


def test_import_into_the_database_then_export_every_format(reference: Path, tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    source = reference / "idta-templates" / f"{NAMEPLATE}.aasx"
    imported = _cli("import", str(source), "--config", str(settings))
    assert imported.returncode == 0, imported.stderr
    again = _cli("import", str(source), "--config", str(settings))
    assert "exists already; skipped" in again.stderr
    expected = count_elements(read_package_file(source).identifiables)
    for extension in ("aasx", "json", "xml"):
        output = tmp_path / f"export.{extension}"
        exported = _cli("export", str(output), "--config", str(settings))
        assert exported.returncode == 0, exported.stderr
        result = read_package_file(output, strict=True)
        assert count_elements(result.identifiables) == expected, extension


def test_a_package_that_is_not_one_is_refused_with_exit_2(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.aasx"
    bogus.write_bytes(b"PK\x03\x04 this is not really a zip")
    result = _cli("import", str(bogus))
    assert result.returncode == 2
    assert "bogus.aasx" in result.stderr
    assert "Traceback" not in result.stderr


def _readme_mapping_block() -> str:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Mapping files", 1)[1]
    return section.split("```yaml\n", 1)[1].split("```", 1)[0]


def test_schema_mapping_prints_a_json_schema_that_accepts_the_readme_and_demo_files_and_refuses_a_typo() -> None:
    import jsonschema_rs
    import yaml

    result = _cli("schema", "mapping")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["title"] == "AAS server device mapping file"
    validator = jsonschema_rs.validator_for(schema)
    demo = Path(__file__).resolve().parent.parent / "mappings" / "bottling-line.yaml"
    for text in (_readme_mapping_block(), demo.read_text(encoding="utf-8")):
        document = json.loads(json.dumps(yaml.safe_load(text)))  # as JSON: object keys are strings
        errors = [error.message for error in validator.iter_errors(document)]
        assert errors == []
    broken = json.loads(json.dumps(yaml.safe_load(_readme_mapping_block())))
    broken["points"][0]["scael"] = 2
    assert not validator.is_valid(broken)


def test_the_annotated_mapping_file_in_the_readme_is_valid(tmp_path: Path) -> None:
    mapping = tmp_path / "readme-mapping.yaml"
    mapping.write_text(_readme_mapping_block(), encoding="utf-8")
    result = _cli("check", str(mapping))
    assert result.returncode == 0, result.stderr
    assert "mapping ok (3 devices, 8 points)" in result.stdout
    mapping.write_text(_readme_mapping_block().replace("target_unit: KPA", "target_unit: AMP"), encoding="utf-8")
    refused = _cli("check", str(mapping))
    assert refused.returncode == 2
    assert "(boiler.pressure).target_unit: " in refused.stderr
