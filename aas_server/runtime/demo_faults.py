"""Fault injection at run time: InjectFault(Kind) and ClearFaults() Operations of the simulated line.

The hub adds a small submodel, ``FaultInjection`` (id ``fault_submodel_id(device)``), to the store
in memory (it is not saved: it exists exactly while the simulator runs) and registers the two
Operations in the ``OperationRegistry``, so REST ``…/invoke`` and OPC UA method calls reach them
under the access rules' ``invoke`` right. ``InjectFault`` answers the active faults (``Faults``,
comma-separated); an unknown ``Kind`` is refused naming the known ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from basyx.aas import model

from aas_server.devices.bottling_line import FAULT_KINDS, BottlingLineSimulator
from aas_server.errors import InvalidRequestError, NotFoundError
from aas_server.store.operations import OperationRegistry
from aas_server.store.twin_store import TwinStore


def fault_submodel_id(device: str) -> str:
    """The id of the simulated device's fault-injection submodel."""
    return f"urn:aas-server:simulator:{device}:fault-injection"


def _string(id_short: str, description: str) -> model.Property:
    return model.Property(
        id_short, model.datatypes.String, None, description=model.MultiLanguageTextType({"en": description})
    )


def fault_submodel(device: str) -> model.Submodel:
    kinds = ", ".join(FAULT_KINDS)
    return model.Submodel(
        fault_submodel_id(device),
        id_short="FaultInjection",
        description=model.MultiLanguageTextType({"en": f"Faults of the simulated device {device} (demo)"}),
        submodel_element=[
            model.Operation(
                "InjectFault",
                input_variable=[_string("Kind", f"one of: {kinds}")],
                output_variable=[_string("Faults", "the active faults, comma-separated")],
                description=model.MultiLanguageTextType({"en": f"Start a fault: {kinds}"}),
            ),
            model.Operation(
                "ClearFaults",
                output_variable=[_string("Faults", "the active faults (none)")],
                description=model.MultiLanguageTextType({"en": "End every fault"}),
            ),
        ],
    )


def install_fault_operations(
    store: TwinStore, operations: OperationRegistry, simulator: BottlingLineSimulator, device: str
) -> str:
    """Add the fault-injection submodel (unless a stored one has its id) and implement its Operations."""
    submodel_id = fault_submodel_id(device)
    try:
        store.submodel(submodel_id)
    except NotFoundError:
        store.add(fault_submodel(device))

    async def inject(arguments: Mapping[str, Any]) -> Mapping[str, Any]:
        kind = arguments.get("Kind")
        if kind not in FAULT_KINDS:
            raise InvalidRequestError(f"InjectFault: Kind {kind!r} is not one of {', '.join(FAULT_KINDS)}")
        simulator.inject_fault(kind)
        return {"Faults": ",".join(simulator.faults)}

    async def clear(arguments: Mapping[str, Any]) -> Mapping[str, Any]:
        simulator.clear_faults()
        return {"Faults": ""}

    operations.register(submodel_id, "InjectFault", inject)
    operations.register(submodel_id, "ClearFaults", clear)
    return submodel_id
