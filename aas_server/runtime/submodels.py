"""Submodels the hub derives at start (alarms, predictive maintenance, time series, AID/AIMC), put
into the store and referred to from their shells, by one helper instead of a copy per feature."""

from __future__ import annotations

import copy
from collections.abc import Callable

from basyx.aas import model

from aas_server.errors import NotFoundError
from aas_server.store.twin_store import TwinStore


def refers_to(shell: model.AssetAdministrationShell, submodel_id: str) -> bool:
    """Whether ``shell`` holds a reference to the submodel ``submodel_id``."""
    return any(reference.key and reference.key[-1].value == submodel_id for reference in shell.submodel)


def _always(existing: model.Submodel, new: model.Submodel) -> bool:
    return True


async def install_submodel(
    store: TwinStore,
    shell_id: str,
    submodel: model.Submodel,
    *,
    replace_when: Callable[[model.Submodel, model.Submodel], bool] = _always,
    missing_shell_ok: bool = False,
) -> None:
    """Create ``submodel`` in ``store`` (or replace the one there, if ``replace_when(existing, submodel)``) and
    refer to it from shell ``shell_id``, unless the shell already does.

    A missing shell raises ``NotFoundError``, or is passed over with ``missing_shell_ok``.
    """
    try:
        existing = store.submodel(submodel.id)
    except NotFoundError:
        await store.create(submodel)
    else:
        if replace_when(existing, submodel):
            await store.replace(submodel)
    try:
        shell = store.shell(shell_id)
    except NotFoundError:
        if missing_shell_ok:
            return
        raise
    if refers_to(shell, submodel.id):
        return
    shell = copy.deepcopy(shell)
    shell.submodel.add(model.ModelReference((model.Key(model.KeyTypes.SUBMODEL, submodel.id),), model.Submodel))
    await store.replace(shell)
