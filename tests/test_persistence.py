"""SQLite persistence: the model and the last values come back after a restart."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from basyx.aas import model

from aas_server.model.events import Quality, QualityReason, ValueChanged
from aas_server.persistence.sqlite import SqliteRepository


def _identifiables() -> list[model.Identifiable]:
    submodel = model.Submodel("urn:test:sm", id_short="Data", submodel_element=[model.Property("Speed", float, 1.5)])
    shell = model.AssetAdministrationShell(
        model.AssetInformation(model.AssetKind.INSTANCE, global_asset_id="urn:test:asset"),
        "urn:test:aas",
        id_short="Shell",
        submodel={model.ModelReference.from_referable(submodel)},
    )
    return [shell, submodel]


async def test_model_and_values_survive_reopening(tmp_path: Path) -> None:
    database = tmp_path / "hub.sqlite"
    time = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    async with SqliteRepository(database) as repository:
        assert not await repository.has_model()
        await repository.save_identifiables(_identifiables())
        await repository.persist_values([ValueChanged("urn:test:sm", "Speed", 42.25, time, origin="rest")])
        await repository.persist_values(
            [ValueChanged("urn:test:sm", "Speed", None, time, Quality.BAD, QualityReason.NO_COMMUNICATION)]
        )
    async with SqliteRepository(database) as repository:
        assert await repository.has_model()
        loaded = await repository.load_identifiables()
        assert [identifiable.id for identifiable in loaded] == ["urn:test:aas", "urn:test:sm"]
        assert isinstance(loaded[1], model.Submodel)
        (stored,) = await repository.load_values()
        assert stored.typed_value(float) == 42.25  # a bad sample keeps the last value
        assert stored.quality is Quality.BAD
        assert stored.source_time == time
        assert await repository.integrity_check() == "ok"


async def test_saving_an_identifiable_again_replaces_it_in_place(tmp_path: Path) -> None:
    async with SqliteRepository(tmp_path / "hub.sqlite") as repository:
        shell, submodel = _identifiables()
        await repository.save_identifiables([shell, submodel])
        assert isinstance(submodel, model.Submodel)
        submodel.id_short = "Renamed"
        await repository.save_identifiables([submodel])
        loaded = await repository.load_identifiables()
        assert [identifiable.id_short for identifiable in loaded] == ["Shell", "Renamed"]
