"""The command line: import and export of packages through the hub's database."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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


def _bad_inputs(folder: Path) -> dict[str, Path]:
    """Files a user may get wrong, each with what is wrong named in its name."""
    files = {
        "missing": folder / "missing.json",
        "folder": folder / "a-folder",
        "truncated.json": folder / "truncated.json",
        "truncated.xml": folder / "truncated.xml",
        "not-a-zip.aasx": folder / "not-a-zip.aasx",
        "binary.yaml": folder / "binary.yaml",
        "syntax.yaml": folder / "syntax.yaml",
        "field.yaml": folder / "field.yaml",
        "no-data-dir.yaml": folder / "no-data-dir.yaml",
        "twins-missing.yaml": folder / "twins-missing.yaml",
        "ok.yaml": folder / "ok.yaml",
        "a-file": folder / "a-file",
        "year.json": folder / "year.json",
    }
    files["folder"].mkdir()
    files["truncated.json"].write_text('{"submodels": [', encoding="utf-8")
    files["truncated.xml"].write_text(
        '<environment xmlns="https://admin-shell.io/aas/3/0"><submodels>', encoding="utf-8"
    )
    files["not-a-zip.aasx"].write_bytes(b"PK\x03\x04 not really a zip")
    files["binary.yaml"].write_bytes(b"\xff\xfe\x00binary")
    files["syntax.yaml"].write_text("rest: [\n  port: 1\n", encoding="utf-8")
    files["field.yaml"].write_text("rest:\n  port: not-a-port\n", encoding="utf-8")
    files["no-data-dir.yaml"].write_text(f"data_dir: {files['a-file'] / 'data'}\n", encoding="utf-8")
    files["a-file"].write_text("", encoding="utf-8")
    far_future = {"modelType": "Property", "idShort": "Due", "valueType": "xs:date", "value": "99999-01-01"}
    submodel = {"modelType": "Submodel", "id": "urn:example:sm:year", "submodelElements": [far_future]}
    files["year.json"].write_text(json.dumps({"submodels": [submodel]}), encoding="utf-8")
    files["twins-missing.yaml"].write_text(
        f"data_dir: {folder / 'data'}\ntwins: [{folder / 'no-twins.yaml'}]\n", encoding="utf-8"
    )
    files["ok.yaml"].write_text(f"data_dir: {folder / 'data'}\n", encoding="utf-8")
    return files


CLI_MISTAKES: list[tuple[list[str], str]] = [
    (["check", "{missing}"], "{missing}: "),
    (["check", "{folder}"], "{folder}: "),
    (["check", "{truncated.json}"], "{truncated.json}: "),
    (["check", "{truncated.xml}"], "{truncated.xml}: "),
    (["check", "{not-a-zip.aasx}"], "{not-a-zip.aasx}: "),
    (["check", "{binary.yaml}"], "{binary.yaml}: not UTF-8"),
    (["check", "{syntax.yaml}"], "{syntax.yaml}:3:1: YAML syntax error"),
    (["check", "{field.yaml}"], "{field.yaml}: rest.port: "),
    (["import", "{missing}"], "{missing}: No such file"),
    (["import", "--strict", "{year.json}"], "years outside 0001..9999"),
    (["import", "{folder}"], "{folder}: Is a directory"),
    (["import", "{truncated.json}", "{truncated.xml}", "{not-a-zip.aasx}"], "{not-a-zip.aasx}: "),
    (["import", "{truncated.json}", "--report", "{folder}/no/report.json"], "{folder}/no/report.json: No such"),
    (["import", "{truncated.xml}", "--config", "{syntax.yaml}"], "{truncated.xml}: "),
    (["export", "{folder}/out.json", "--config", "{missing}"], "{missing}: cannot read file"),
    (["export", "{folder}/out.json", "--config", "{binary.yaml}"], "{binary.yaml}: not UTF-8"),
    (["export", "{folder}/no/out.json", "--config", "{ok.yaml}"], "{folder}/no/out.json: No such file"),
    (["export", "{folder}/out.json", "--config", "{twins-missing.yaml}"], "no-twins.yaml: cannot read file"),
    (["export", "{folder}/out.json", "--config", "{no-data-dir.yaml}"], "{a-file}"),
    (["nodeset", "types", "{folder}/no/types.xml"], "{folder}/no/types.xml: No such file"),
    (["nodeset", "export", "{folder}/out.xml", "--config", "{field.yaml}"], "{field.yaml}: rest.port: "),
    (["serve", "--config", "{missing}"], "{missing}: cannot read file"),
    (["serve", "--config", "{twins-missing.yaml}"], "no-twins.yaml: cannot read file"),
    (["serve", "--config", "{no-data-dir.yaml}"], "{a-file}"),
    (["demo", "--data-dir", "{a-file}/data"], "{a-file}/data: "),
]


def _filled(text: str, files: dict[str, Path]) -> str:
    for name, path in files.items():
        text = text.replace("{" + name + "}", str(path))
    return text


@pytest.mark.parametrize(
    ("arguments", "expected"), [pytest.param(*mistake, id=" ".join(mistake[0])) for mistake in CLI_MISTAKES]
)
def test_every_command_reports_bad_input_with_exit_2_and_the_file_without_a_traceback(
    tmp_path: Path, arguments: list[str], expected: str
) -> None:
    files = _bad_inputs(tmp_path)
    result = _cli(*(_filled(argument, files) for argument in arguments))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert _filled(expected, files) in result.stderr, result.stderr
