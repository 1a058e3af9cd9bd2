"""Register change → OPC UA data-change notification latency, through the whole hub.

Setup (all on loopback, one process): a pymodbus device server with 100 holding registers, a
mapping of 100 uint16 points (scale 0.1) polled every 100 ms into one submodel of 100 xs:double
Properties (and one more that no device writes, for the baseline), the hub (store, SQLite, REST, OPC UA
with Basic256Sha256 SignAndEncrypt, the client's user allowed to read by an access rule), and an
asyncua client subscribed to all the variables (publishing interval 10 ms).

Each round changes one register and waits for the notification of exactly that value. The
figures are printed with the poll period, and compared against two baselines measured in the
same run: the hub's internal floor (a new value applied straight to the store at a random moment →
notification, no Modbus) and the expectation of polling alone (a change lands uniformly within a poll period, so
p50 ≈ period/2 and p99 ≈ 0.99·period).

    .venv/bin/python benchmarks/latency.py [--rounds 300] [--period 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from asyncua import Client, Node, ua
from asyncua.crypto import cert_gen
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from basyx.aas import model
from basyx.aas.adapter.json import write_aas_json_file
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from pydantic import SecretStr

from aas_server.config import (
    AccessOperation,
    AccessRule,
    HubSettings,
    OpcUaSettings,
    RestSettings,
    Role,
    SecuritySettings,
    UserSettings,
)
from aas_server.devices.modbus_server import ModbusDeviceServer
from aas_server.mapping.schema import Table
from aas_server.model.events import ValueChanged, utc_now
from aas_server.opcua.node_ids import node_id_for
from aas_server.runtime.hub import Hub

POINTS = 100
FLOOR = "Floor"
SUBMODEL_ID = "urn:aas-server:benchmark:sm:latency"
CLIENT_URI = "urn:aas-server:benchmark:client"


def write_model(folder: Path) -> Path:
    submodel = model.Submodel(
        SUBMODEL_ID,
        id_short="Latency",
        submodel_element=[
            *(model.Property(f"P{index:03d}", float, 0.0) for index in range(POINTS)),
            model.Property(FLOOR, float, 0.0),  # not mapped: the baseline's values go straight to the store
        ],
    )
    path = folder / "model.json"
    with path.open("w", encoding="utf-8") as file:
        write_aas_json_file(file, model.DictIdentifiableStore([submodel]))
    return path


def write_mapping(folder: Path, port: int, period: float) -> Path:
    mapping = {
        "devices": [
            {"name": "bench", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": port, "unit_id": 1,
             "addressing": "zero-based", "timeout": 1.0}
        ],
        "points": [
            {"name": f"p{index:03d}", "device": "bench", "table": "holding_register", "address": index,
             "data_type": "uint16", "scale": 0.1, "unit": "CEL",
             "target": {"submodel": SUBMODEL_ID, "path": f"P{index:03d}"}, "access": "read",
             "poll_interval": period}
            for index in range(POINTS)
        ],
    }  # fmt: skip
    path = folder / "mapping.yaml"
    path.write_text(yaml.safe_dump(mapping), encoding="utf-8")
    return path


def client_certificate(folder: Path) -> tuple[Path, Path]:
    key = cert_gen.generate_private_key()
    certificate = cert_gen.generate_self_signed_app_certificate(
        key, "latency benchmark", {}, [x509.UniformResourceIdentifier(CLIENT_URI), x509.DNSName(socket.gethostname())],
        extended=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )  # fmt: skip
    certificate_path, key_path = folder / "client.der", folder / "client.pem"
    certificate_path.write_bytes(certificate.public_bytes(Encoding.DER))
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return certificate_path, key_path


class Notifications:
    def __init__(self) -> None:
        self.waiting: dict[tuple[str, float], asyncio.Future[float]] = {}

    def expect(self, node_id: str, value: float) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[(node_id, round(value, 6))] = future
        return future

    def datachange_notification(self, node: Node, value: Any, data: Any) -> None:
        if not isinstance(value, float):
            return
        future = self.waiting.pop((str(node.nodeid.Identifier), round(value, 6)), None)
        if future is not None and not future.done():
            future.set_result(time.perf_counter())


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def measure(rounds: int, period: float, publishing_interval: float = 10.0) -> dict[str, Any]:
    """Latencies in seconds; ``publishing_interval`` (ms) of the client's subscription, 0 for "as fast as possible"."""
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        device = ModbusDeviceServer(port=0, size=128)
        await device.start()
        try:
            settings = HubSettings(
                data_dir=folder / "data",
                twins=[write_model(folder)],
                mappings=[write_mapping(folder, device.port, period)],
                rest=RestSettings(port=0),
                opcua=OpcUaSettings(
                    port=0,
                    users=[UserSettings(name="bench", password=SecretStr("bench"), role=Role.READ_ONLY)],
                    trust_all_client_certificates=True,  # benchmark only: its client certificate is made per run
                ),
                # The client reads and monitors under the access rules, as a deployed read-only user would.
                security=SecuritySettings(
                    rules=[AccessRule(roles=[Role.READ_ONLY.value], operations=[AccessOperation.READ])]
                ),
                log_level="WARNING",
            )
            certificate, key = client_certificate(folder)
            async with Hub(settings) as hub:
                assert hub.opcua is not None
                client = Client(hub.opcua.endpoint_url, timeout=10)
                client.application_uri = CLIENT_URI
                await client.set_security(
                    SecurityPolicyBasic256Sha256, str(certificate), str(key), mode=ua.MessageSecurityMode.SignAndEncrypt
                )
                client.set_user("bench")
                client.set_password("bench")
                async with client:
                    namespace = hub.opcua.namespace_index
                    handler = Notifications()
                    subscription = await client.create_subscription(publishing_interval, handler)
                    nodes = [
                        client.get_node(ua.NodeId(ua.String(node_id_for(SUBMODEL_ID, path)), ua.Int16(namespace)))
                        for path in [*(f"P{i:03d}" for i in range(POINTS)), FLOOR]
                    ]
                    await subscription.subscribe_data_change(nodes, sampling_interval=ua.Double(0))
                    random_source = random.Random(7)

                    async def one(path: str, value: float, change: Callable[[], None]) -> float:
                        arrived = handler.expect(node_id_for(SUBMODEL_ID, path), value)
                        started = time.perf_counter()
                        change()
                        return (await asyncio.wait_for(arrived, 5.0)) - started

                    def via_device(index: int, raw: int) -> Callable[[], None]:
                        return lambda: device.set_registers(Table.HOLDING_REGISTER, index, [raw])

                    def via_store(value: float) -> Callable[[], None]:
                        def apply() -> None:
                            now = utc_now()
                            hub.store.apply(ValueChanged(SUBMODEL_ID, FLOOR, value, now, server_time=now))

                        return apply

                    full: list[float] = []
                    for number in range(rounds):
                        index, raw = number % POINTS, 1000 + number
                        full.append(await one(f"P{index:03d}", raw / 10, via_device(index, raw)))
                        await asyncio.sleep(random_source.uniform(0, period))  # decorrelate from the poll phase
                    # Baseline: the same notification path without the device and the poller, on a Property
                    # no device writes, with a new value at a random moment after the last one like above.
                    floor: list[float] = []
                    for number in range(min(rounds, 200)):
                        value = 1.5 + number
                        floor.append(await one(FLOOR, value, via_store(value)))
                        await asyncio.sleep(random_source.uniform(0, period))
                    await subscription.delete()
        finally:
            await device.stop()
    return {"full": full, "floor": floor}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--period", type=float, default=0.1, help="poll period in seconds")
    arguments = parser.parse_args()
    result = asyncio.run(measure(arguments.rounds, arguments.period))
    full_ms = [value * 1000 for value in result["full"]]
    floor_ms = [value * 1000 for value in result["floor"]]
    period_ms = arguments.period * 1000
    figures = {
        "points": POINTS,
        "poll_period_ms": period_ms,
        "rounds": len(full_ms),
        "register_to_notification_ms": {
            "p50": round(percentile(full_ms, 0.5), 1),
            "p99": round(percentile(full_ms, 0.99), 1),
            "mean": round(statistics.fmean(full_ms), 1),
            "max": round(max(full_ms), 1),
        },
        "baseline_store_to_notification_ms": {
            "p50": round(percentile(floor_ms, 0.5), 1),
            "p99": round(percentile(floor_ms, 0.99), 1),
        },
        "ratio_p50_to_polling_expectation": round(percentile(full_ms, 0.5) / (period_ms / 2), 2),
        "ratio_p99_to_polling_expectation": round(percentile(full_ms, 0.99) / (0.99 * period_ms), 2),
    }
    print(json.dumps(figures, indent=2))
    latency = figures["register_to_notification_ms"]
    print(
        f"register change -> OPC UA notification, {POINTS} points polled every {period_ms:.0f} ms: "
        f"p50 {latency['p50']} ms, p99 {latency['p99']} ms "
        f"(store -> notification floor p50 {figures['baseline_store_to_notification_ms']['p50']} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
