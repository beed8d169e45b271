"""`eventhubs://…`: the Event Hubs source and `simulate --to eventhubs://…`, without a hub.

The events are the SDK's own received objects: an AMQP message with the service's
annotations, encoded and decoded by the SDK's codec and wrapped by
`EventData._from_message`, as its receiver does. Partition contexts are real
`PartitionContext`s over a `CheckpointStore`. Only the network side of the clients is
fake (`FakeConsumerClient`, `FakeProducerClient`), and their method signatures are checked
against the real `EventHubConsumerClient` / `EventHubProducerClient`.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from azure.eventhub import (
    CheckpointStore,
    CloseReason,
    EventData,
    EventDataBatch,
    EventHubConsumerClient,
    EventHubProducerClient,
    PartitionContext,
)
from azure.eventhub._constants import (
    PROP_LAST_ENQUEUED_SEQUENCE_NUMBER,
    PROP_OFFSET,
    PROP_PARTITION_KEY,
    PROP_SEQ_NUMBER,
    PROP_TIMESTAMP,
)
from azure.eventhub._pyamqp._decode import decode_payload
from azure.eventhub._pyamqp._encode import encode_payload
from azure.eventhub._pyamqp.message import Message
from azure.eventhub._pyamqp.types import TYPE, VALUE, AMQPTypes
from azure.eventhub.exceptions import AuthenticationError, ConnectionLostError, EventHubError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paymetrics.pipeline import Pipeline, PipelineOptions, RunStats
from paymetrics.simulator import SimulatorConfig, write_jsonl
from paymetrics.simulator.publish import EVENTHUBS_CONNECTION_STRING_ENV, publish_eventhubs
from paymetrics.sources import Checkpoint, RawBatch, open_source
from paymetrics.sources.eventhubs import ClientSettings, EventHubsSource, event_bytes
from paymetrics.storage import open_store

NAMESPACE = "contoso.servicebus.windows.net"
HUB = "payments"
GROUP = "paymetrics"
SPEC = f"//contoso/{HUB}?consumer_group={GROUP}&poll_seconds=0.02"
SOURCE_ID = f"eventhubs:{HUB}?consumer_group={GROUP}"
ENQUEUED_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SECRET = "c2VjcmV0LWtleS12YWx1ZS10aGF0LW11c3Qtbm90LWxlYWs="
STORAGE_SECRET = "U3RvcmFnZUFjY291bnRLZXlUaGF0TXVzdE5vdExlYWs9PQ=="
CONNECTION_STRING = (
    f"Endpoint=sb://{NAMESPACE}/;SharedAccessKeyName=listen;SharedAccessKey={SECRET}"
)
# A closed port on 127.0.0.1: nothing here ever connects to it.
STORAGE_CONNECTION_STRING = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    f"AccountKey={STORAGE_SECRET};BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;"
)


# -- the SDK's received events ---------------------------------------------------------


def received(
    sequence_number: int,
    body: bytes | Sequence[bytes] | None,
    *,
    key: bytes | None = None,
    last_enqueued: int | None = None,
) -> EventData:
    """An `EventData` as the SDK's receiver builds it from the wire."""
    annotations: dict[bytes, Any] = {
        PROP_SEQ_NUMBER: {TYPE: AMQPTypes.long, VALUE: sequence_number},
        PROP_OFFSET: str(sequence_number * 1024).encode(),
        PROP_TIMESTAMP: {TYPE: AMQPTypes.timestamp, VALUE: ENQUEUED_MS + sequence_number},
    }
    if key is not None:
        annotations[PROP_PARTITION_KEY] = key
    delivery = None
    if last_enqueued is not None:
        delivery = {
            PROP_LAST_ENQUEUED_SEQUENCE_NUMBER: {TYPE: AMQPTypes.long, VALUE: last_enqueued}
        }
    data = None if body is None else [body] if isinstance(body, bytes) else list(body)
    wire = bytearray()
    encode_payload(
        wire, Message(delivery_annotations=delivery, message_annotations=annotations, data=data)
    )
    return EventData._from_message(decode_payload(memoryview(bytes(wire))))


def events_of(bodies: Iterable[bytes | None], *, first: int = 0) -> list[EventData]:
    return [received(first + i, body) for i, body in enumerate(bodies)]


# -- the network side of the consumer client -------------------------------------------


class MemoryStore(CheckpointStore):  # type: ignore[misc]
    """The blob store's contract in memory; outlives a source, as a container does."""

    def __init__(self) -> None:
        self.checkpoints: dict[str, dict[str, Any]] = {}
        self.ownership: dict[str, dict[str, Any]] = {}
        self.updates: list[tuple[str, dict[str, Any]]] = []
        self.fail_with: Exception | None = None

    def list_ownership(
        self, fully_qualified_namespace: str, eventhub_name: str, consumer_group: str, **kwargs: Any
    ) -> list[dict[str, Any]]:
        return [dict(o) for o in self.ownership.values()]

    def claim_ownership(
        self, ownership_list: Iterable[dict[str, Any]], **kwargs: Any
    ) -> list[dict[str, Any]]:
        for ownership in ownership_list:
            self.ownership[ownership["partition_id"]] = dict(ownership)
        return list(ownership_list)

    def update_checkpoint(self, checkpoint: dict[str, Any], **kwargs: Any) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.updates.append((threading.current_thread().name, dict(checkpoint)))
        self.checkpoints[checkpoint["partition_id"]] = dict(checkpoint)

    def list_checkpoints(
        self, fully_qualified_namespace: str, eventhub_name: str, consumer_group: str, **kwargs: Any
    ) -> list[dict[str, Any]]:
        return [dict(c) for c in self.checkpoints.values()]

    def set_checkpoint(self, partition: str, sequence_number: int) -> None:
        """A blob checkpoint as the SDK writes it (`update_checkpoint(event)`)."""
        self.checkpoints[partition] = {
            "fully_qualified_namespace": NAMESPACE,
            "eventhub_name": HUB,
            "consumer_group": GROUP,
            "partition_id": partition,
            "offset": str(sequence_number * 1024),
            "sequence_number": sequence_number,
        }

    def close(self) -> None:
        pass


Splitter = Callable[[str, list[EventData]], list[list[EventData]]]


class FakeHub:
    """Partitions of received events, and the consumer clients made on them.

    `store` plays the blob container (unit tests); with `real_store` the clients use the
    store the source built instead (the Azurite tests)."""

    def __init__(
        self,
        partitions: Mapping[str, Sequence[EventData]],
        *,
        store: CheckpointStore | None = None,
        real_store: bool = False,
        splitter: Splitter | None = None,
        replay_from: Mapping[str, int] | None = None,
        errors: Sequence[tuple[str, str | None, Exception]] = (),
        receive_error: Exception | None = None,
    ) -> None:
        self.partitions = {p: list(events) for p, events in partitions.items()}
        self.store = store if store is not None else MemoryStore()
        self.real_store = real_store
        self.splitter = splitter
        self.replay_from = dict(replay_from or {})
        self.errors = list(errors)
        self.receive_error = receive_error
        self.clients: list[FakeConsumerClient] = []

    def factory(self, settings: ClientSettings) -> FakeConsumerClient:
        client = FakeConsumerClient(self, settings)
        self.clients.append(client)
        return client

    @property
    def client(self) -> FakeConsumerClient:
        return self.clients[-1]


class FakeConsumerClient:
    """`EventHubConsumerClient` without a network: on `receive_batch` it claims every
    partition (through the checkpoint store), starts each where the SDK would (after the
    blob checkpoint, else at `starting_position`), hands out chunks round robin from its
    own thread, then waits for `close`. Tests may `lose`/`claim` a partition or `send` more."""

    def __init__(self, hub: FakeHub, settings: ClientSettings) -> None:
        self.hub = hub
        self.settings = settings
        store = settings.checkpoint_store if hub.real_store else hub.store
        assert store is not None
        self.store: CheckpointStore = store
        self.owner_id = str(uuid.uuid4())
        self.receive_kwargs: dict[str, Any] = {}
        self.contexts: dict[str, PartitionContext] = {}
        self.delivered = threading.Event()
        self.closed = threading.Event()
        self.more: list[tuple[str, list[EventData]]] = []
        self._more = threading.Condition()
        self.callbacks: dict[str, Any] = {}

    def get_partition_ids(self) -> list[str]:
        return sorted(self.hub.partitions)

    def receive_batch(
        self,
        on_event_batch: Callable[[PartitionContext, list[EventData]], None],
        *,
        max_batch_size: int = 300,
        max_wait_time: float | None = None,
        partition_id: str | None = None,
        owner_level: int | None = None,
        prefetch: int = 300,
        track_last_enqueued_event_properties: bool = False,
        starting_position: str | int | Any | dict[str, Any] | None = None,
        starting_position_inclusive: bool | dict[str, bool] = False,
        on_error: Callable[[PartitionContext | None, Exception], None] | None = None,
        on_partition_initialize: Callable[[PartitionContext], None] | None = None,
        on_partition_close: Callable[[PartitionContext, CloseReason], None] | None = None,
        **kwargs: Any,
    ) -> None:
        self.receive_kwargs = {
            "max_batch_size": max_batch_size,
            "max_wait_time": max_wait_time,
            "prefetch": prefetch,
            "starting_position": starting_position,
            "starting_position_inclusive": starting_position_inclusive,
            "track_last_enqueued_event_properties": track_last_enqueued_event_properties,
        }
        assert on_error is not None
        assert on_partition_initialize is not None
        assert on_partition_close is not None
        self.callbacks = {
            "on_event_batch": on_event_batch,
            "on_error": on_error,
            "on_partition_initialize": on_partition_initialize,
            "on_partition_close": on_partition_close,
        }
        for when, partition, error in self.hub.errors:
            if when == "start":
                on_error(self.contexts.get(partition or ""), error)
        if self.hub.receive_error is not None:
            raise self.hub.receive_error
        names = (NAMESPACE, HUB, GROUP)
        claimed = self.store.claim_ownership(
            [
                {
                    "fully_qualified_namespace": NAMESPACE,
                    "eventhub_name": HUB,
                    "consumer_group": GROUP,
                    "partition_id": p,
                    "owner_id": self.owner_id,
                }
                for p in self.get_partition_ids()
            ]
        )
        checkpoints = {c["partition_id"]: c for c in self.store.list_checkpoints(*names)}
        pending: dict[str, list[list[EventData]]] = {}
        for ownership in claimed:
            partition = ownership["partition_id"]
            context = PartitionContext(*names[:3], partition, self.store)
            self.contexts[partition] = context
            on_partition_initialize(context)
            first = self._first(
                partition,
                checkpoints.get(partition),
                starting_position,
                starting_position_inclusive,
            )
            events = [e for e in self.hub.partitions[partition] if e.sequence_number >= first]
            if partition in self.hub.replay_from:  # a reconnect to an older position
                again = self.hub.replay_from[partition]
                events += [e for e in self.hub.partitions[partition] if e.sequence_number >= again]
            pending[partition] = self._split(partition, events, max_batch_size)
        while any(pending.values()) and not self.closed.is_set():
            for partition in sorted(pending):
                if pending[partition]:
                    self._hand_out(partition, pending[partition].pop(0))
        for context in self.contexts.values():
            on_event_batch(context, [])  # max_wait_time passed without an event
        for when, partition, error in self.hub.errors:
            if when == "delivered":
                on_error(self.contexts.get(partition or ""), error)
        self.delivered.set()
        while not self.closed.is_set():
            with self._more:
                self._more.wait_for(lambda: bool(self.more) or self.closed.is_set(), 0.05)
                batch = self.more.pop(0) if self.more else None
            if batch is not None:
                self._hand_out(*batch)
        for context in list(self.contexts.values()):
            on_partition_close(context, CloseReason.SHUTDOWN)

    def _hand_out(self, partition: str, events: list[EventData]) -> None:
        """As `EventProcessor._on_event_received`: note the last event, call back."""
        context = self.contexts[partition]
        context._last_received_event = events[-1]
        self.callbacks["on_event_batch"](context, events)

    def _first(
        self,
        partition: str,
        checkpoint: Mapping[str, Any] | None,
        starting: Any,
        inclusive: bool | Mapping[str, bool],
    ) -> int:
        """The first sequence number the SDK would read (the blob checkpoint wins)."""
        if checkpoint is not None:
            return int(checkpoint["sequence_number"]) + 1
        position = starting.get(partition, "-1") if isinstance(starting, Mapping) else starting
        if isinstance(inclusive, Mapping):
            inclusive = inclusive.get(partition, False)
        if isinstance(position, int):
            return position if inclusive else position + 1
        if position == "@latest":
            return len(self.hub.partitions[partition])
        assert position in {"-1", None}, position
        return 0

    def _split(self, partition: str, events: list[EventData], size: int) -> list[list[EventData]]:
        if self.hub.splitter is not None:
            return [c for c in self.hub.splitter(partition, events) if c]
        return [events[i : i + size] for i in range(0, len(events), size)]

    def send(self, partition: str, events: list[EventData]) -> None:
        """More events for a partition, handed out by the receiving thread."""
        with self._more:
            self.more.append((partition, events))
            self._more.notify_all()

    def lose(self, partition: str) -> None:
        """Another worker took the partition over (the SDK closes its consumer)."""
        self.callbacks["on_partition_close"](self.contexts[partition], CloseReason.OWNERSHIP_LOST)

    def claim(self, partition: str) -> None:
        """The load balancer claimed the partition again."""
        self.callbacks["on_partition_initialize"](self.contexts[partition])

    def close(self) -> None:
        with self._more:
            self.closed.set()
            self._more.notify_all()


def parameters(function: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize("name", ["receive_batch", "get_partition_ids", "close"])
def test_the_fake_consumer_client_has_the_real_clients_signatures(name: str) -> None:
    assert parameters(getattr(FakeConsumerClient, name)) == parameters(
        getattr(EventHubConsumerClient, name)
    )


# -- helpers ----------------------------------------------------------------------------


def make_source(
    hub: FakeHub, spec: str = SPEC, options: Mapping[str, str] | None = None
) -> EventHubsSource:
    return EventHubsSource(spec, options=options, client_factory=hub.factory)


def drain(
    source: EventHubsSource,
    *,
    max_events: int = 100,
    idle_seconds: float | None = None,
    ack: bool = True,
) -> list[RawBatch]:
    """Every batch (acknowledged), until `idle_seconds` without an event; by default until
    the fake client has handed out everything and the source has taken it all."""
    if idle_seconds is None:
        client = source._client
        source.should_stop = lambda: client.delivered.is_set() and source._queue.empty()
        idle_seconds = 10.0  # only if something is wrong: fail rather than hang
    source.idle_seconds = idle_seconds
    out = []
    for batch in source.batches(max_events):
        out.append(batch)
        if ack:
            source.ack(batch)
    return out


def run(
    hub: FakeHub,
    checkpoints: Mapping[str, int] | None = None,
    *,
    max_events: int = 100,
    spec: str = SPEC,
    options: Mapping[str, str] | None = None,
) -> list[RawBatch]:
    with make_source(hub, spec, options) as source:
        source.open({p: Checkpoint(p, position) for p, position in (checkpoints or {}).items()})
        return drain(source, max_events=max_events)


def positions(batches: Iterable[RawBatch], partition: str = "0") -> list[int]:
    return [p for b in batches if b.partition == partition for p in b.positions]


# -- the spec and the options -----------------------------------------------------------


def test_a_spec_names_the_source_by_hub_and_consumer_group_only() -> None:
    source = open_source("eventhubs://contoso/payments?consumer_group=$Default")
    assert isinstance(source, EventHubsSource)
    assert source.source_id == "eventhubs:payments?consumer_group=$Default"
    assert source.namespace == NAMESPACE
    assert source.rebalancing is True
    assert source.starting_position == "earliest"
    assert source.poll_seconds == 1.0
    assert source.prefetch is None
    assert source.checkpoint_container == "paymetrics-checkpoints"
    host = open_source(
        "eventhubs://ns-1.servicebus.chinacloudapi.cn/h.x_1?consumer_group=g-1&prefetch=900"
        "&starting_position=latest&poll_seconds=0.5&checkpoint_container=cp-1"
    )
    assert isinstance(host, EventHubsSource)
    assert host.source_id == "eventhubs:h.x_1?consumer_group=g-1"
    assert (host.namespace, host.hub, host.consumer_group) == (
        "ns-1.servicebus.chinacloudapi.cn",
        "h.x_1",
        "g-1",
    )
    assert (host.starting_position, host.poll_seconds, host.prefetch) == ("latest", 0.5, 900)
    assert host.checkpoint_container == "cp-1"
    assert "ns-1.servicebus.chinacloudapi.cn" in repr(host)


@pytest.mark.parametrize(
    ("rest", "problem"),
    [
        ("//contoso/payments", "option consumer_group=NAME is required"),
        ("//contoso/payments?consumer_group=", "option consumer_group=NAME is required"),
        ("/payments?consumer_group=g", "no namespace"),
        ("//contoso/?consumer_group=g", "the path must be one event hub name"),
        ("//contoso/a/b?consumer_group=g", "the path must be one event hub name"),
        ("//bad_ns/payments?consumer_group=g", "the namespace must be a name (contoso)"),
        ("//contoso:5671/payments?consumer_group=g", "the namespace must be a name"),
        ("//contoso/payments?consumer_group=a/b", "is not a consumer group name"),
        (
            "//contoso/payments?consumer_group=g&nope=1",
            "unknown options ['nope']; valid: ['checkpoint_container', 'consumer_group', "
            "'poll_seconds', 'prefetch', 'starting_position']",
        ),
        ("//contoso/payments?consumer_group=g&starting_position=middle", "earliest or latest"),
        ("//contoso/payments?consumer_group=g&poll_seconds=x", "poll_seconds must be a number"),
        ("//contoso/payments?consumer_group=g&poll_seconds=0", "poll_seconds must be a number"),
        ("//contoso/payments?consumer_group=g&prefetch=0", "prefetch must be a whole number"),
        ("//contoso/payments?consumer_group=g&prefetch=x", "prefetch must be a whole number"),
        ("//contoso/payments?consumer_group=g&checkpoint_container=No_", "not a blob container"),
    ],
)
def test_a_bad_spec_names_the_problem(rest: str, problem: str) -> None:
    with pytest.raises(ValueError, match="eventhubs source") as info:
        open_source(f"eventhubs:{rest}")
    message = str(info.value)
    assert message.startswith(f"eventhubs source eventhubs:{rest}: ")
    assert problem in message


def test_every_problem_of_a_spec_is_reported_at_once() -> None:
    with pytest.raises(ValueError, match="eventhubs source") as info:
        open_source("eventhubs://bad_ns/a/b?nope=1&poll_seconds=x&starting_position=now")
    message = str(info.value)
    for problem in (
        "the namespace must be a name",
        "the path must be one event hub name",
        "consumer_group=NAME is required",
        "unknown options ['nope']",
        "poll_seconds must be a number",
        "starting_position must be earliest or latest",
    ):
        assert problem in message
    assert message.count("; ") >= 5


def test_credentials_in_the_url_are_refused_without_being_repeated() -> None:
    with pytest.raises(ValueError, match="no credentials in the URL") as info:
        open_source(f"eventhubs://listen:{SECRET}@contoso/payments?consumer_group=g")
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (
            {"conection_string": SECRET},
            "unknown source.options ['conection_string']; valid: ['checkpoint_account_url', "
            "'checkpoint_connection_string', 'checkpoint_container', 'connection_string']",
        ),
        (
            {
                "checkpoint_connection_string": STORAGE_CONNECTION_STRING,
                "checkpoint_account_url": "https://acct.blob.core.windows.net",
            },
            "give checkpoint_connection_string or checkpoint_account_url, not both",
        ),
        ({"connection_string": ""}, "source.options ['connection_string'] are empty"),
        (
            {"checkpoint_container": "other"},
            "checkpoint_container is 'cp' in the URL but 'other' in source.options",
        ),
        ({"checkpoint_container": "UPPER"}, "not a blob container name"),
    ],
)
def test_bad_options_name_the_valid_ones_and_never_a_secret(
    options: dict[str, str], problem: str
) -> None:
    spec = "eventhubs://contoso/payments?consumer_group=g"
    if options.get("checkpoint_container") == "other":
        spec += "&checkpoint_container=cp"
    with pytest.raises(ValueError, match="eventhubs source") as info:
        open_source(spec, options)
    assert problem in str(info.value)
    assert SECRET not in str(info.value)
    assert STORAGE_SECRET not in str(info.value)


def test_the_container_may_be_given_in_the_url_or_the_options() -> None:
    spec = "eventhubs://contoso/payments?consumer_group=g"
    in_options = open_source(spec, {"checkpoint_container": "cp-opt"})
    assert isinstance(in_options, EventHubsSource)
    assert in_options.checkpoint_container == "cp-opt"
    both = open_source(f"{spec}&checkpoint_container=cp-1", {"checkpoint_container": "cp-1"})
    assert isinstance(both, EventHubsSource)
    assert both.checkpoint_container == "cp-1"


def test_a_connection_string_for_another_hub_is_refused_at_open() -> None:
    other = f"{CONNECTION_STRING};EntityPath=refunds"
    source = make_source(FakeHub({"0": []}), options={"connection_string": other})
    with pytest.raises(ValueError, match="is for event hub 'refunds', the URL names 'payments'"):
        source.open({})
    malformed = make_source(FakeHub({"0": []}), options={"connection_string": f"x={SECRET}"})
    with pytest.raises(ValueError, match="not an Event Hubs connection string") as info:
        malformed.open({})
    assert SECRET not in str(info.value)


def test_secrets_stay_out_of_the_id_repr_errors_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    options = {
        "connection_string": CONNECTION_STRING,
        "checkpoint_connection_string": STORAGE_CONNECTION_STRING,
    }
    store = MemoryStore()
    store.fail_with = RuntimeError(f"403 for AccountKey={STORAGE_SECRET} and {CONNECTION_STRING}")
    hub = FakeHub(
        {"0": events_of([b'{"a":1}', b'{"a":2}'])},
        store=store,
        errors=[("delivered", "0", ConnectionLostError(f"link lost SharedAccessKey={SECRET}"))],
    )
    source = make_source(hub, options=options)
    texts = [source.source_id, repr(source)]
    source.open({})
    settings_seen = hub.client.settings
    assert settings_seen.connection_string == CONNECTION_STRING  # the client gets it, …
    texts.append(repr(settings_seen))  # … its repr does not show it
    texts.append(repr(settings_seen.checkpoint_store))
    assert len(drain(source)) == 1  # the failed blob checkpoint is a warning, not fatal
    source.close()

    fatal = FakeHub(
        {"0": []},
        errors=[("start", None, AuthenticationError(f"bad token for SharedAccessKey={SECRET}"))],
    )
    failing = make_source(fatal, options=options)
    failing.open({})
    with pytest.raises(ValueError, match="load balancing failed: AuthenticationError") as info:
        drain(failing)
    failing.close()
    texts.append(str(info.value))
    texts.append(caplog.text)
    texts.extend(r.getMessage() for r in caplog.records)
    assert "could not update the blob checkpoint" in caplog.text
    assert "partition 0 failed, the client retries" in caplog.text
    for text in texts:
        for secret in (SECRET, STORAGE_SECRET, CONNECTION_STRING, STORAGE_CONNECTION_STRING):
            assert secret not in text, text


def test_without_a_checkpoint_store_it_warns_once_and_still_reads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = FakeHub({"0": events_of([b"x", b"y"])})
    with caplog.at_level(logging.WARNING, "paymetrics.sources.eventhubs"):
        batches = run(hub)
    assert positions(batches) == [1, 2]
    warnings = [r for r in caplog.records if "has no checkpoint store" in r.getMessage()]
    assert len(warnings) == 1
    assert hub.client.settings.checkpoint_store is None


# -- from received events to batches --------------------------------------------------


def test_event_bytes_reads_every_body_the_sdk_can_receive() -> None:
    assert event_bytes(received(0, b'{"a":1}')) == b'{"a":1}'
    assert event_bytes(received(1, [b'{"a":', b"1}"])) == b'{"a":1}'  # two data sections
    assert event_bytes(received(2, b"")) == b""
    assert event_bytes(received(3, None)) == b""  # no body at all: an AMQP null value
    wire = bytearray()
    encode_payload(wire, Message(value=b"raw", message_annotations={PROP_SEQ_NUMBER: 4}))
    assert event_bytes(EventData._from_message(decode_payload(memoryview(bytes(wire))))) == b"raw"
    wire = bytearray()
    encode_payload(wire, Message(sequence=[1, 2], message_annotations={PROP_SEQ_NUMBER: 5}))
    as_text = event_bytes(EventData._from_message(decode_payload(memoryview(bytes(wire)))))
    assert as_text == b"[1, 2]"  # not JSON: dead-lettered with what came in


def test_chunks_become_batches_with_positions_and_checkpoints() -> None:
    events = [
        received(0, b'{"a":1}', key=b"mch_1"),
        received(1, [b'{"b":', b"2}"], key=b"mch_1"),
        received(2, b""),  # a blank line: skipped, but the checkpoint passes it
        received(3, None),
        received(4, b"x"),
        received(5, b""),
        received(6, b""),
    ]
    hub = FakeHub({"0": events}, splitter=lambda _p, e: [e[:5], e[5:]])
    batches = run(hub)
    assert len(batches) == 1  # the second chunk is blank lines only
    (batch,) = batches
    assert batch.source_id == SOURCE_ID
    assert batch.partition == "0"
    assert batch.messages == [b'{"a":1}', b'{"b":2}', b"x"]
    assert batch.positions == [1, 2, 5]
    assert batch.checkpoint == Checkpoint("0", 5)
    kwargs = hub.client.receive_kwargs
    assert kwargs["max_batch_size"] == 100
    assert kwargs["max_wait_time"] == 0.02
    assert kwargs["starting_position"] == "-1"
    assert kwargs["starting_position_inclusive"] is False
    assert kwargs["prefetch"] == 300  # the SDK's default unless prefetch= is given


def test_a_chunk_larger_than_a_batch_is_cut_and_partitions_stay_apart() -> None:
    hub = FakeHub(
        {"0": events_of([b"a"] * 7), "1": events_of([b"b"] * 3)},
        splitter=lambda _p, e: [e],  # one chunk per partition, whatever max_batch_size says
    )
    batches = run(hub, max_events=3)
    assert [len(b) for b in batches if b.partition == "0"] == [3, 3, 1]
    assert positions(batches, "0") == list(range(1, 8))
    assert positions(batches, "1") == [1, 2, 3]
    assert all(b.checkpoint.position == b.positions[-1] for b in batches)


def test_database_checkpoints_are_the_starting_positions_and_skip_stored_events() -> None:
    store = MemoryStore()
    store.set_checkpoint("0", 2)  # the blob checkpoint lags the database (a crash before ack)
    hub = FakeHub(
        {"0": events_of(f"e{i}".encode() for i in range(10)), "1": events_of([b"p", b"q"])},
        store=store,
    )
    batches = run(hub, {"0": 6})
    assert hub.client.receive_kwargs["starting_position"] == {"0": 5, "1": "-1"}
    assert hub.client.receive_kwargs["starting_position_inclusive"] is False
    assert positions(batches, "0") == [7, 8, 9, 10]  # 4..6 came again and were dropped
    assert positions(batches, "1") == [1, 2]
    assert store.checkpoints["0"]["sequence_number"] == 9


def test_latest_starts_partitions_without_a_checkpoint_at_the_end() -> None:
    hub = FakeHub({"0": events_of([b"a", b"b", b"c"]), "1": events_of([b"d", b"e"])})
    assert run(hub, spec=f"{SPEC}&starting_position=latest") == []
    assert hub.client.receive_kwargs["starting_position"] == "@latest"
    resumed = FakeHub({"0": events_of([b"a", b"b", b"c"]), "1": events_of([b"d", b"e"])})
    batches = run(resumed, {"0": 1}, spec=f"{SPEC}&starting_position=latest")
    assert resumed.client.receive_kwargs["starting_position"] == {"0": 0, "1": "@latest"}
    assert positions(batches, "0") == [2, 3]
    assert positions(batches, "1") == []


def test_a_gap_after_the_database_checkpoint_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    store.set_checkpoint("0", 7)  # ahead of the database: events 4..7 were never stored here
    hub = FakeHub({"0": events_of([b"x"] * 10)}, store=store)
    with caplog.at_level(logging.WARNING, "paymetrics.sources.eventhubs"):
        assert positions(run(hub, {"0": 4})) == [9, 10]
    assert "sequence numbers 4..7 were not read by this worker" in caplog.text


# -- stopping and failing ---------------------------------------------------------------


def test_it_stops_when_idle() -> None:
    hub = FakeHub({"0": []})
    with make_source(hub) as source:
        source.open({})
        started = time.monotonic()
        assert drain(source, idle_seconds=0.2) == []
        assert 0.2 <= time.monotonic() - started < 5


def test_should_stop_is_polled_and_on_idle_is_called_while_waiting() -> None:
    hub = FakeHub({"0": events_of([b"a"])})
    stop = threading.Event()
    idle_calls = []
    with make_source(hub) as source:
        source.open({})
        source.should_stop = stop.is_set
        source.on_idle = lambda: idle_calls.append(time.monotonic())
        threading.Timer(0.3, stop.set).start()
        started = time.monotonic()
        batches = list(source.batches(100))
        assert 0.3 <= time.monotonic() - started < 5
    assert positions(batches) == [1]
    assert len(idle_calls) >= 3


def test_close_stops_the_client_and_joins_its_thread() -> None:
    hub = FakeHub({"0": events_of([b"a"] * 50)}, splitter=lambda _p, e: [[x] for x in e])
    source = make_source(hub)
    source.open({})
    batches = source.batches(10)
    next(batches)  # the SDK thread now waits on the full queue
    thread = source._thread
    assert thread is not None
    assert thread.is_alive()
    source.close()
    assert hub.client.closed.is_set()
    assert not thread.is_alive()
    source.close()  # twice is fine


@pytest.mark.parametrize(
    ("errors", "receive_error", "match"),
    [
        (
            [("start", None, AuthenticationError("Unauthorized: token invalid"))],
            None,
            "load balancing failed: AuthenticationError: Unauthorized: token invalid",
        ),
        (  # before any partition is claimed, the load balancer failing is configuration
            [("start", None, EventHubError("The messaging entity could not be found"))],
            None,
            "load balancing failed: EventHubError",
        ),
        (
            [("delivered", "0", EventHubError("com.microsoft:argument-out-of-range"))],
            None,
            "partition 0 failed: EventHubError",
        ),
        ([], EventHubError("connect failed"), "receiving stopped: EventHubError: connect failed"),
    ],
)
def test_sdk_errors_surface_in_batches_naming_the_hub(
    errors: list[tuple[str, str | None, Exception]], receive_error: Exception | None, match: str
) -> None:
    hub = FakeHub({"0": events_of([b"a"])}, errors=errors, receive_error=receive_error)
    with make_source(hub) as source:
        source.open({})
        started = time.monotonic()
        with pytest.raises(ValueError, match=match) as info:
            drain(source, idle_seconds=30)
        assert time.monotonic() - started < 5  # not a hang
    assert str(info.value).startswith(
        f"eventhubs source {SOURCE_ID} (event hub 'payments' in {NAMESPACE}): "
    )


def test_the_sdks_own_recovery_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    hub = FakeHub(
        {"0": events_of([b"a", b"b"])},
        errors=[
            ("delivered", "0", ConnectionLostError("amqp:link:stolen")),  # another worker
            ("delivered", None, EventHubError("blob store timed out")),  # after a claim
        ],
    )
    with caplog.at_level(logging.WARNING, "paymetrics.sources.eventhubs"):
        assert positions(run(hub)) == [1, 2]
    assert "partition 0 failed, the client retries: ConnectionLostError" in caplog.text
    assert "load balancing failed, the client retries: EventHubError" in caplog.text


# -- acknowledging ----------------------------------------------------------------------


def test_ack_writes_the_checkpoint_through_the_partition_context_only_while_owned() -> None:
    store = MemoryStore()
    events = events_of(f"e{i}".encode() for i in range(9))
    hub = FakeHub({"0": events[:6]}, store=store, splitter=lambda _p, e: [e[:2], e[2:4], e[4:]])
    with make_source(hub) as source:
        source.open({})
        batches = source.batches(100)
        first, second, third = next(batches), next(batches), next(batches)
        source.ack(first)
        assert store.checkpoints["0"]["sequence_number"] == 1
        assert store.checkpoints["0"]["offset"] == "1024"
        assert store.updates[-1][0] == threading.current_thread().name  # the pipeline's
        client = hub.client
        client.lose("0")
        source.ack(second)  # stored in the database, but no longer ours: blob left alone
        assert store.checkpoints["0"]["sequence_number"] == 1
        client.claim("0")
        source.ack(third)  # ours again, but delivered under the earlier claim
        assert store.checkpoints["0"]["sequence_number"] == 1
        client.send("0", events[6:])
        fourth = next(batches)
        assert fourth.positions == [7, 8, 9]
        source.ack(fourth)
        assert store.checkpoints["0"]["sequence_number"] == 8
        assert len(store.updates) == 2


def test_a_failed_blob_checkpoint_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    store.fail_with = RuntimeError("blob service unavailable")
    hub = FakeHub({"0": events_of([b"a", b"b"])}, store=store)
    with caplog.at_level(logging.WARNING, "paymetrics.sources.eventhubs"):
        assert positions(run(hub)) == [1, 2]
    assert "could not update the blob checkpoint of partition 0" in caplog.text
    assert "blob service unavailable" in caplog.text


def test_lag_comes_from_the_last_enqueued_sequence_number() -> None:
    hub = FakeHub({"0": [received(i, b"x", last_enqueued=41) for i in range(3)]})
    with make_source(hub) as source:
        source.open({})
        drain(source)
        assert hub.client.receive_kwargs["track_last_enqueued_event_properties"] is True
        assert source.lag() == {"0": 39}  # 42 enqueued, 3 acknowledged


# -- the property -----------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_event_past_the_checkpoint_is_yielded_once_in_order(data: st.DataObject) -> None:
    n = data.draw(st.integers(0, 30), label="events")
    blanks = data.draw(st.sets(st.integers(0, max(n - 1, 0))), label="blanks") if n else set()
    database = data.draw(st.integers(0, n), label="database checkpoint position")
    blob = data.draw(st.none() | st.integers(0, max(database - 1, 0)), label="blob sequence")
    replay = data.draw(st.none() | st.integers(0, n), label="replay from sequence")
    sizes = data.draw(st.lists(st.integers(1, 8), min_size=1, max_size=10), label="chunks")
    max_events = data.draw(st.integers(1, 10), label="max_events")
    events = [received(i, b"" if i in blanks else f"e{i}".encode()) for i in range(n)]

    def splitter(_partition: str, chosen: list[EventData]) -> list[list[EventData]]:
        out, start = [], 0
        for size in itertools.cycle(sizes):
            if start >= len(chosen):
                return out
            out.append(chosen[start : start + size])
            start += size
        raise AssertionError("unreachable")

    store = MemoryStore()
    if blob is not None and database:
        store.set_checkpoint("0", blob)
    hub = FakeHub(
        {"0": events},
        store=store,
        splitter=splitter,
        replay_from={} if replay is None else {"0": replay},
    )
    with make_source(hub, f"//contoso/{HUB}?consumer_group={GROUP}&poll_seconds=0.01") as source:
        source.open({"0": Checkpoint("0", database)} if database else {})
        batches = drain(source, max_events=max_events)
    got = positions(batches)
    assert got == [i + 1 for i in range(database, n) if i not in blanks]
    assert all(len(b) <= max_events for b in batches)
    assert [b.checkpoint.position for b in batches] == sorted(
        {b.checkpoint.position for b in batches}
    )


# -- through the pipeline -----------------------------------------------------------


class RecordingBatch:
    """A real `EventDataBatch` (size accounting, key) that keeps what was added."""

    def __init__(self, batch: EventDataBatch, partition_key: str | None) -> None:
        self.batch = batch
        self.partition_key = partition_key
        self.bodies: list[bytes] = []

    def add(self, event_data: EventData) -> None:
        self.batch.add(event_data)
        self.bodies.append(event_bytes(event_data))

    def __len__(self) -> int:
        return len(self.batch)

    @property
    def size_in_bytes(self) -> int:
        return self.batch.size_in_bytes


class FakeProducerClient:
    """`EventHubProducerClient` without a network: keeps each batch sent."""

    def __init__(self, settings: ClientSettings, *, max_size_in_bytes: int = 1_048_576) -> None:
        self.settings = settings
        self.max_size_in_bytes = max_size_in_bytes
        self.sent: list[RecordingBatch] = []
        self.closed = False

    def create_batch(
        self,
        *,
        partition_id: str | None = None,
        partition_key: str | None = None,
        max_size_in_bytes: int | None = None,
        **kwargs: Any,
    ) -> RecordingBatch:
        real = EventDataBatch(
            max_size_in_bytes=max_size_in_bytes or self.max_size_in_bytes,
            partition_id=partition_id,
            partition_key=partition_key,
        )
        return RecordingBatch(real, partition_key)

    def send_batch(
        self,
        event_data_batch: RecordingBatch,
        *,
        timeout: float | None = None,
        partition_key: str | None = None,
        partition_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        assert not self.closed
        self.sent.append(event_data_batch)

    def close(self, *, flush: bool = True, timeout: float | None = None, **kwargs: Any) -> None:
        self.closed = True

    def __enter__(self) -> FakeProducerClient:
        return self

    def __exit__(self, *args: Any) -> None:
        self.close()


@pytest.mark.parametrize("name", ["create_batch", "send_batch", "close", "__enter__", "__exit__"])
def test_the_fake_producer_has_the_real_clients_signatures(name: str) -> None:
    assert parameters(getattr(FakeProducerClient, name)) == parameters(
        getattr(EventHubProducerClient, name)
    )


def test_the_recording_batch_adds_like_the_real_one() -> None:
    assert parameters(RecordingBatch.add) == parameters(EventDataBatch.add)
    assert parameters(RecordingBatch.__len__) == parameters(EventDataBatch.__len__)


def hub_from(sent: Sequence[RecordingBatch], partitions: int = 4) -> FakeHub:
    """What the service would hold: a keyed batch on its key's partition, the rest spread."""
    hub: dict[str, list[EventData]] = {str(p): [] for p in range(partitions)}
    spread = itertools.cycle(sorted(hub))
    for batch in sent:
        key = batch.partition_key
        partition = str(zlib.crc32(key.encode()) % partitions) if key else next(spread)
        for body in batch.bodies:
            events = hub[partition]
            events.append(received(len(events), body, key=key.encode() if key else None))
    return FakeHub(hub)


def publish(config: SimulatorConfig, **kwargs: Any) -> FakeProducerClient:
    producers: list[FakeProducerClient] = []

    def factory(settings: ClientSettings) -> FakeProducerClient:
        producers.append(FakeProducerClient(settings, **kwargs))
        return producers[-1]

    count = publish_eventhubs(config, f"eventhubs://contoso/{HUB}", client_factory=factory)
    (producer,) = producers
    assert count == sum(len(b) for b in producer.sent) == config.events
    assert producer.closed
    return producer


def generated(config: SimulatorConfig, tmp_path: Path) -> list[bytes]:
    path = tmp_path / "events.jsonl"
    with path.open("wb") as handle:
        write_jsonl(config, handle)
    return path.read_bytes().splitlines()


def test_publish_batches_by_merchant_within_the_size_limit(tmp_path: Path) -> None:
    import json

    config = SimulatorConfig(events=2_000, seed=5, rate_invalid=0.05, chunk_events=700)
    producer = publish(config, max_size_in_bytes=4_096)
    lines = generated(config, tmp_path)

    def merchant(line: bytes) -> str | None:
        try:
            value = json.loads(line).get("merchant_id")
        except (ValueError, AttributeError):
            return None
        return value if isinstance(value, str) and value else None

    by_key: dict[str | None, list[bytes]] = {}
    for batch in producer.sent:
        assert 0 < len(batch) == len(batch.bodies)
        assert batch.size_in_bytes <= 4_096
        assert {merchant(b) for b in batch.bodies} == {batch.partition_key}
        by_key.setdefault(batch.partition_key, []).extend(batch.bodies)
    expected: dict[str | None, list[bytes]] = {}
    for line in lines:
        expected.setdefault(merchant(line), []).append(line)
    assert by_key == expected  # every message once, each merchant's in its order
    assert None in by_key  # the unreadable lines went without a key
    assert len(producer.sent) > len(by_key)  # big merchants needed several batches


def test_publish_takes_the_connection_string_from_options_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = SimulatorConfig(events=10, seed=1)
    seen: list[ClientSettings] = []

    def factory(settings: ClientSettings) -> FakeProducerClient:
        seen.append(settings)
        return FakeProducerClient(settings)

    url = f"eventhubs://contoso/{HUB}"
    monkeypatch.delenv(EVENTHUBS_CONNECTION_STRING_ENV, raising=False)
    publish_eventhubs(config, url, client_factory=factory)
    monkeypatch.setenv(EVENTHUBS_CONNECTION_STRING_ENV, "Endpoint=sb://env/;SharedAccessKey=k")
    publish_eventhubs(config, url, client_factory=factory)
    options = {"connection_string": CONNECTION_STRING}
    publish_eventhubs(config, url, client_factory=factory, options=options)
    assert [s.connection_string for s in seen] == [
        None,  # DefaultAzureCredential
        "Endpoint=sb://env/;SharedAccessKey=k",
        CONNECTION_STRING,
    ]
    assert {(s.fully_qualified_namespace, s.eventhub_name) for s in seen} == {(NAMESPACE, HUB)}
    assert SECRET not in repr(seen[-1])


@pytest.mark.parametrize(
    ("url", "options", "match"),
    [
        ("eventhubs://contoso/", None, "expected eventhubs://NAMESPACE/HUB"),
        ("eventhubs://contoso/a/b", None, "expected eventhubs://NAMESPACE/HUB"),
        ("kafka://contoso/a", None, "expected eventhubs://NAMESPACE/HUB"),
        ("eventhubs://contoso/a?x=1", None, "expected eventhubs://NAMESPACE/HUB"),
        ("eventhubs://contoso/a", {"sasl.password": "x"}, "unknown options"),
    ],
)
def test_publish_refuses_a_bad_target(url: str, options: dict[str, str] | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        publish_eventhubs(
            SimulatorConfig(events=1),
            url,
            options=options,
            client_factory=lambda s: FakeProducerClient(s),
        )


def test_publish_refuses_a_message_larger_than_a_batch() -> None:
    with pytest.raises(ValueError, match="does not fit in an event hub batch"):
        publish(SimulatorConfig(events=5, seed=1), max_size_in_bytes=200)


class Clock:
    """`time` for the publisher: it moves only when asked to sleep."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_publish_is_paced(monkeypatch: pytest.MonkeyPatch) -> None:
    import paymetrics.simulator.publish as module

    clock = Clock()
    monkeypatch.setattr(module, "time", clock)
    sent = publish_eventhubs(
        SimulatorConfig(events=1_000, seed=2),
        f"eventhubs://contoso/{HUB}",
        events_per_second=500,
        client_factory=lambda s: FakeProducerClient(s, max_size_in_bytes=8_192),
    )
    assert sent == 1_000
    assert len(clock.sleeps) > 10  # after every batch sent, not once per chunk
    assert clock.now == pytest.approx(2.0)  # 1,000 events at 500/s


def test_simulate_to_eventhubs_goes_to_publish_eventhubs(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from paymetrics.cli import app

    calls: list[tuple[str, Any]] = []

    def fake(config: SimulatorConfig, url: str, **kwargs: Any) -> int:
        calls.append((url, kwargs))
        return config.events

    monkeypatch.setattr("paymetrics.simulator.publish.publish_eventhubs", fake)
    result = CliRunner().invoke(
        app, ["simulate", "--events", "7", "--to", f"eventhubs://contoso/{HUB}"]
    )
    assert result.exit_code == 0, result.output
    assert calls == [(f"eventhubs://contoso/{HUB}", {"events_per_second": None})]
    assert "published 7 events" in result.output


def pipeline_run(db_url: str, source: Any, *, batch: int = 500) -> RunStats:
    store = open_store(db_url)
    try:
        store.prepare()
        pipeline = Pipeline(store, None, PipelineOptions(batch_max_events=batch))
        with source:
            return pipeline.run(source)
    finally:
        store.close()


def event_hubs_run(db_url: str, hub: FakeHub) -> RunStats:
    source = make_source(hub)
    source.idle_seconds = 1.0  # the pipeline sets should_stop; an idle second ends the run
    return pipeline_run(db_url, source)


#: Position-dependent columns differ between a file and four partitions.
SAME = {
    "payment_metrics_5m": [],
    "aggregate_histograms": [],
    "normalized_transactions": ["batch_id", "source_position"],
    "failed_items": ["source_id", "partition", "position"],
}


@pytest.mark.slow
def test_a_hub_is_stored_like_the_same_events_from_a_file_and_reruns_change_nothing(
    tmp_path: Path, dump_table: Callable[..., list[tuple[Any, ...]]]
) -> None:
    config = SimulatorConfig(
        events=4_000, seed=13, rate_invalid=0.01, rate_duplicate=0.02, rate_pan_leak=0.01
    )
    events = tmp_path / "events.jsonl"
    with events.open("wb") as handle:
        write_jsonl(config, handle)
    from_file = f"sqlite:///{tmp_path / 'file.db'}"
    file_stats = pipeline_run(from_file, open_source(f"file:{events}"))

    hub = hub_from(publish(config).sent)
    assert sum(len(e) for e in hub.partitions.values()) == 4_000
    from_hub = f"sqlite:///{tmp_path / 'hub.db'}"
    stats = event_hubs_run(from_hub, hub)
    assert (stats.messages, stats.normalized, stats.duplicates, stats.dead_lettered) == (
        file_stats.messages,
        file_stats.normalized,
        file_stats.duplicates,
        file_stats.dead_lettered,
    )
    for table, exclude in SAME.items():
        assert dump_table(from_hub, table, exclude=exclude) == dump_table(
            from_file, table, exclude=exclude
        ), table
    stored = {t: dump_table(from_hub, t) for t in [*SAME, "source_checkpoints"]}
    checkpoints = {r[1]: r for r in dump_table(from_hub, "source_checkpoints")}
    assert set(checkpoints) == {"0", "1", "2", "3"}

    # The blob checkpoints lag (a crash between commit and ack): the hub redelivers.
    for partition in hub.partitions:
        hub.store.set_checkpoint(partition, 10)  # type: ignore[attr-defined]
    rerun = event_hubs_run(from_hub, hub)
    assert hub.client.receive_kwargs["starting_position"] == {
        p: len(e) - 1 for p, e in hub.partitions.items()
    }
    assert rerun.messages == 0
    # No blob checkpoints at all: the database positions are where it starts.
    hub.store.checkpoints.clear()  # type: ignore[attr-defined]
    assert event_hubs_run(from_hub, hub).messages == 0
    assert {t: dump_table(from_hub, t) for t in stored} == stored
