"""String node ids of the OPC UA projection, derived stably from AAS identifiers and idShort paths.

Every node id is unambiguous: an idShort path never contains ``/`` or ``$`` (AAS Part 1,
constraint AASd-002), so splitting a node id at its last ``/`` gives back the identifier and, after
it, either an idShort path (a submodel element) or a ``$``-marker (a shell, a submodel or one of
their properties). The folders carry no ``/`` at all.
"""

from __future__ import annotations

ENVIRONMENT_FOLDER = "AASEnvironment"
SHELLS_FOLDER = "AASEnvironment.Shells"
SUBMODELS_FOLDER = "AASEnvironment.Submodels"


def node_id_for(submodel_id: str, id_short_path: str) -> str:
    """The string node id of a submodel element: ``<submodel id>/<idShort path>``.

    Use it in namespace ``settings.namespace_uri``: ``ns=<index>;s=<this>``.
    """
    return f"{submodel_id}/{id_short_path}"


def element_property_node_id(submodel_id: str, id_short_path: str, name: str) -> str:
    """A property of a submodel element node (``SemanticId``, ``EngineeringUnits``, ``Min``...)."""
    return f"{submodel_id}/{id_short_path}${name}"


def submodel_node_id(submodel_id: str) -> str:
    """The object node of a submodel: ``<submodel id>/$submodel``."""
    return f"{submodel_id}/$submodel"


def submodel_property_node_id(submodel_id: str, name: str) -> str:
    """A property of a submodel node (``Id``, ``IdShort``, ``SemanticId``)."""
    return f"{submodel_id}/$submodel.{name}"


def shell_node_id(shell_id: str) -> str:
    """The object node of an asset administration shell: ``<shell id>/$shell``."""
    return f"{shell_id}/$shell"


def shell_property_node_id(shell_id: str, name: str) -> str:
    """A property of a shell node (``Id``, ``IdShort``, ``GlobalAssetId``)."""
    return f"{shell_id}/$shell.{name}"


DICTIONARY_FOLDER = "AASEnvironment.ConceptDictionary"


def dictionary_entry_node_id(semantic_id: str) -> str:
    """The dictionary entry (OPC 10000-19) of a semanticId: ``<semantic id>/$dictionaryEntry``."""
    return f"{semantic_id}/$dictionaryEntry"
