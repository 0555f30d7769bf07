"""The ClientApp: the organization's NumPyClient, wrapped once so it can also take part in fedledger rounds.

Node config (``flower-supernode --node-config``): ``partition-id``, ``num-partitions``, optionally
``attack`` (``scaling`` / ``signflip``: a Byzantine client, for the demo) and, for fedledger rounds,
``fedledger-api-url`` and ``fedledger-key-file`` (see ``client.flower.organization_from_context``).
"""

from __future__ import annotations

from flwr.app import Context

from client.flower import fedledger_client_app, organization_from_context
from fedledger_flower_example.task import PARAM_NAMES, DigitsClient, partition


def client_fn(context: Context) -> DigitsClient:
    node, run = context.node_config, context.run_config
    partition_id = int(node["partition-id"])
    X, y = partition(partition_id, int(node["num-partitions"]))
    return DigitsClient(
        X,
        y,
        epochs=int(run["local-epochs"]),
        lr=float(run["learning-rate"]),
        seed=partition_id,
        attack=str(node.get("attack", "")),
    )


# The one wrapper call: plain Flower rounds train as before; fedledger rounds are sealed, signed and submitted.
app = fedledger_client_app(client_fn, organization_from_context, param_names=PARAM_NAMES, auto_enroll=True)
