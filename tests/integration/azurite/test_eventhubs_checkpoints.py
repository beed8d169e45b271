"""The Event Hubs source's blob checkpoints and partition ownership on Azurite.

The checkpoint store is the real `BlobCheckpointStore` that the source builds from
`checkpoint_connection_string`, on an Azurite container on 127.0.0.1. The event hub side
is the unit tests' fake client (no Event Hubs emulator is needed): it claims partitions
and reads checkpoints through that same store, as the SDK's load balancer does, and hands
out the SDK's own received `EventData`. Nothing connects anywhere but 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from azure.eventhub.extensions.checkpointstoreblob import BlobCheckpointStore
from azure.storage.blob import BlobServiceClient
from tests.unit.test_eventhubs_source import (
    GROUP,
    HUB,
    NAMESPACE,
    FakeHub,
    drain,
    events_of,
    make_source,
    positions,
)

from paymetrics.sources import Checkpoint

Azurite = Any  # the `azurite` fixture's object (tests/integration/azurite/conftest.py)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("azurite")]


@pytest.fixture
def container(azurite: Azurite, azurite_container: str) -> str:
    with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        service.create_container(azurite_container)
    return azurite_container


@pytest.fixture
def store(azurite: Azurite, container: str) -> Iterator[BlobCheckpointStore]:
    """A second store on the same container: what another worker (or lag tooling) sees."""
    with BlobCheckpointStore.from_connection_string(azurite.connection_string, container) as s:
        yield s


def options(azurite: Azurite, container: str) -> dict[str, str]:
    return {
        "checkpoint_connection_string": azurite.connection_string,
        "checkpoint_container": container,
    }


def checkpoints(store: BlobCheckpointStore) -> dict[str, dict[str, Any]]:
    return {c["partition_id"]: c for c in store.list_checkpoints(NAMESPACE, HUB, GROUP)}


def ownership(partition: str, owner: str, **extra: Any) -> dict[str, Any]:
    return {
        "fully_qualified_namespace": NAMESPACE,
        "eventhub_name": HUB,
        "consumer_group": GROUP,
        "partition_id": partition,
        "owner_id": owner,
        **extra,
    }


def test_ack_writes_blob_checkpoints_that_list_checkpoints_returns(
    azurite: Azurite, container: str, store: BlobCheckpointStore
) -> None:
    hub = FakeHub(
        {"0": events_of(b"e%d" % i for i in range(5)), "1": events_of([b"a", b"b", b""])},
        real_store=True,
    )
    with make_source(hub, options=options(azurite, container)) as source:
        source.open({})
        assert type(hub.client.store) is BlobCheckpointStore  # the one the source built
        assert checkpoints(store) == {}
        batches = drain(source)
    assert positions(batches, "0") == [1, 2, 3, 4, 5]
    assert positions(batches, "1") == [1, 2]
    found = checkpoints(store)
    assert {p: (c["sequence_number"], c["offset"]) for p, c in found.items()} == {
        "0": (4, "4096"),
        "1": (2, "2048"),  # the trailing blank line is passed, as in the database
    }
    owners = {o["partition_id"]: o for o in store.list_ownership(NAMESPACE, HUB, GROUP)}
    assert set(owners) == {"0", "1"}
    assert {o["owner_id"] for o in owners.values()} == {hub.client.owner_id}
    assert all(o["etag"] for o in owners.values())


def test_ownership_claims_are_won_and_lost_by_etag(store: BlobCheckpointStore) -> None:
    """As the SDK's load balancer does it: list, then claim with the listed etag.

    (Azurite, unlike Azure, lets a claim without an etag overwrite an existing ownership
    blob, so that case is not checked here.)"""
    (first,) = store.claim_ownership([ownership("0", "worker-a")])
    assert first["etag"]
    (seen_by_b,) = store.list_ownership(NAMESPACE, HUB, GROUP)
    assert seen_by_b["owner_id"] == "worker-a"
    (stolen,) = store.claim_ownership([{**seen_by_b, "owner_id": "worker-b"}])
    assert stolen["etag"].strip('"') != seen_by_b["etag"].strip('"')
    assert store.claim_ownership([{**seen_by_b, "owner_id": "worker-a"}]) == []  # stale etag
    (listed,) = store.list_ownership(NAMESPACE, HUB, GROUP)
    assert (listed["partition_id"], listed["owner_id"], listed["etag"].strip('"')) == (
        "0",
        "worker-b",
        stolen["etag"].strip('"'),
    )


def test_a_restart_skips_what_the_database_holds_when_the_blob_lags(
    azurite: Azurite, container: str, store: BlobCheckpointStore
) -> None:
    store.update_checkpoint(
        {**ownership("0", ""), "sequence_number": 1, "offset": "1024"}
    )  # written before a crash; the database went on to position 4
    hub = FakeHub({"0": events_of(b"e%d" % i for i in range(5))}, real_store=True)
    with make_source(hub, options=options(azurite, container)) as source:
        source.open({"0": Checkpoint("0", 4)})
        batches = drain(source)
    assert hub.client.receive_kwargs["starting_position"] == {"0": 3}
    assert positions(batches) == [5]  # 3 and 4 came again from the blob checkpoint: dropped
    assert checkpoints(store)["0"]["sequence_number"] == 4


def test_a_partition_taken_over_keeps_the_blob_checkpoint_of_its_new_owner(
    azurite: Azurite, container: str, store: BlobCheckpointStore
) -> None:
    events = events_of(b"e%d" % i for i in range(6))
    hub = FakeHub({"0": events}, real_store=True, splitter=lambda _p, e: [e[:3], e[3:]])
    with make_source(hub, options=options(azurite, container)) as source:
        source.open({})
        batches = source.batches(100)
        first, second = next(batches), next(batches)
        source.ack(first)
        assert checkpoints(store)["0"]["sequence_number"] == 2
        hub.client.lose("0")
        store.update_checkpoint({**ownership("0", ""), "sequence_number": 5, "offset": "5120"})
        source.ack(second)  # the other worker's checkpoint stays
        assert checkpoints(store)["0"]["sequence_number"] == 5
