"""The Azure Function's edges: events as the host builds them, settings, the app's bindings.

`host_events` builds `azure.functions.EventHubEvent`s the way the Python worker does for a
trigger with cardinality many: through the library's own `EventHubTriggerConverter`, from
the bodies and the trigger metadata the Event Hubs extension sends (`PartitionContext`,
`SystemPropertiesArray`, ...). The integration tests use it too.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import azure.functions as func
import pytest
from azure.functions import meta
from azure.functions._abc import RetryContext, TraceContext
from azure.functions.eventhub import EventHubTriggerConverter

from paymetrics.azure_function import FunctionSettings, _Trigger, _TriggerSource
from paymetrics.config import ConfigError
from paymetrics.sources.base import Checkpoint

FUNCTION_APP = Path(__file__).parents[2] / "azure_function" / "function_app.py"
ENQUEUED = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def host_events(
    bodies: Sequence[bytes],
    *,
    first_sequence: int = 0,
    partition: str = "0",
    hub: str = "payments",
    group: str = "$Default",
) -> list[func.EventHubEvent]:
    """A trigger batch as the worker hands it to the function (cardinality many, binary)."""
    sequences = [first_sequence + i for i in range(len(bodies))]
    enqueued = [
        (ENQUEUED + dt.timedelta(milliseconds=s)).isoformat().replace("+00:00", "Z")
        for s in sequences
    ]
    system = [
        {
            "x-opt-sequence-number": s,
            "x-opt-offset": str(4096 * s),
            "x-opt-enqueued-time": t,
            "SequenceNumber": s,
            "Offset": str(4096 * s),
            "PartitionKey": f"mch_{s % 7}",
            "EnqueuedTimeUtc": t,
        }
        for s, t in zip(sequences, enqueued, strict=True)
    ]

    def as_json(value: Any) -> meta.Datum:
        return meta.Datum(json.dumps(value), "json")

    metadata = {
        "PartitionContext": as_json(
            {
                "FullyQualifiedNamespace": "example.servicebus.windows.net",
                "EventHubName": hub,
                "ConsumerGroup": group,
                "PartitionId": partition,
            }
        ),
        "PartitionKeyArray": as_json([e["PartitionKey"] for e in system]),
        "OffsetArray": as_json([e["Offset"] for e in system]),
        "SequenceNumberArray": as_json(sequences),
        "EnqueuedTimeUtcArray": as_json(enqueued),
        "PropertiesArray": as_json([{} for _ in sequences]),
        "SystemPropertiesArray": as_json(system),
        "sys": as_json({"MethodName": "paymetrics_eventhub", "UtcNow": enqueued[-1]}),
    }
    data = meta.Datum(SimpleNamespace(bytes=list(bodies)), "collection_bytes")
    events = EventHubTriggerConverter.decode(data, trigger_metadata=metadata)
    assert isinstance(events, list)
    return events


class HostRetryContext(RetryContext):
    def __init__(self, retry_count: int, max_retry_count: int) -> None:
        self._retry_count = retry_count
        self._max_retry_count = max_retry_count

    @property
    def retry_count(self) -> int:
        return self._retry_count

    @property
    def max_retry_count(self) -> int:
        return self._max_retry_count

    @property
    def exception(self) -> Any:
        return None


class HostContext(func.Context):
    """The invocation context the worker passes as `context` (only what the app reads)."""

    def __init__(self, retry_count: int = 0, max_retry_count: int = -1) -> None:
        self._retry = HostRetryContext(retry_count, max_retry_count)

    @property
    def invocation_id(self) -> str:
        return "00000000-0000-0000-0000-000000000000"

    @property
    def thread_local_storage(self) -> type[threading.local]:
        return threading.local

    @property
    def function_name(self) -> str:
        return "paymetrics_eventhub"

    @property
    def function_directory(self) -> str:
        return str(FUNCTION_APP.parent)

    @property
    def trace_context(self) -> TraceContext:
        raise NotImplementedError

    @property
    def retry_context(self) -> RetryContext:
        return self._retry


def load_function_app() -> ModuleType:
    """`azure_function/function_app.py` as the worker indexes it (a fresh module)."""
    spec = importlib.util.spec_from_file_location("paymetrics_function_app", FUNCTION_APP)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- events as the host builds them --------------------------------------------------


def test_the_partition_comes_from_the_partition_context_of_the_trigger_metadata() -> None:
    events = host_events([b'{"a": 1}', b"", b"", b'{"b": 2}'], first_sequence=41, partition="7")
    assert [e.sequence_number for e in events] == [41, 42, 43, 44]
    assert events[0].metadata is not None
    assert events[0].metadata["PartitionContext"]["PartitionId"] == "7"

    trigger = _Trigger.of(events, "eventhubs:payments?consumer_group=$Default")
    assert (trigger.partition, trigger.first, trigger.last) == ("7", 41, 44)
    assert (trigger.events, trigger.blank) == (4, 2)
    assert trigger.batch is not None
    assert trigger.batch.messages == [b'{"a": 1}', b'{"b": 2}']
    assert trigger.batch.positions == [42, 45]  # sequence number + 1
    assert trigger.batch.checkpoint == Checkpoint("7", 45)  # after the last event


def test_a_batch_without_a_partition_context_is_refused() -> None:
    events = [func.EventHubEvent(body=b"{}", sequence_number=3)]
    with pytest.raises(ValueError, match="PartitionContext"):
        _Trigger.of(events, "eventhubs:payments?consumer_group=$Default")


def test_a_trigger_batch_longer_than_batch_max_events_is_committed_in_chunks() -> None:
    events = host_events([b"m%d" % i for i in range(7)] + [b""], first_sequence=100)
    trigger = _Trigger.of(events, "s")
    assert trigger.batch is not None
    source = _TriggerSource(trigger.batch)
    source.open({"0": Checkpoint("0", 102)})  # sequence numbers up to 101 are stored
    chunks = list(source.batches(2))
    assert source.redelivered == 2
    assert [c.positions for c in chunks] == [[103, 104], [105, 106], [107]]
    # the last chunk's checkpoint covers the trailing blank event too
    assert [c.checkpoint.position for c in chunks] == [104, 106, 108]


def test_an_entirely_stored_batch_yields_nothing() -> None:
    trigger = _Trigger.of(host_events([b"x", b"y"], first_sequence=5), "s")
    assert trigger.batch is not None
    source = _TriggerSource(trigger.batch)
    source.open({"0": Checkpoint("0", 7)})
    assert list(source.batches(10)) == []
    assert source.redelivered == 2


# -- settings ------------------------------------------------------------------------


def test_the_source_id_is_the_event_hubs_workers() -> None:
    settings = FunctionSettings.from_environ({"PAYMETRICS_EVENTHUB_NAME": "payments"})
    assert settings.source_id == "eventhubs:payments?consumer_group=$Default"
    assert settings.retry_give_up_seconds == 10.0
    assert settings.dead_letter_after_retries == 5
    settings = FunctionSettings.from_environ(
        {
            "PAYMETRICS_EVENTHUB_NAME": "payments",
            "PAYMETRICS_EVENTHUB_CONSUMER_GROUP": "metrics",
            "PAYMETRICS_FUNCTION_RETRY_GIVE_UP_SECONDS": "2.5",
            "PAYMETRICS_FUNCTION_DEAD_LETTER_AFTER_RETRIES": "0",
        }
    )
    assert settings.source_id == "eventhubs:payments?consumer_group=metrics"
    assert (settings.retry_give_up_seconds, settings.dead_letter_after_retries) == (2.5, 0)


def test_bad_settings_are_listed_together() -> None:
    with pytest.raises(ConfigError) as info:
        FunctionSettings.from_environ(
            {
                "PAYMETRICS_FUNCTION_RETRY_GIVE_UP_SECONDS": "soon",
                "PAYMETRICS_FUNCTION_DEAD_LETTER_AFTER_RETRIES": "-1",
            }
        )
    assert len(info.value.problems) == 3
    assert "PAYMETRICS_EVENTHUB_NAME" in str(info.value)


# -- the app -------------------------------------------------------------------------


def test_the_app_declares_a_batch_trigger_and_an_unlimited_retry_policy() -> None:
    (function,) = load_function_app().app.get_functions()
    (binding,) = json.loads(function.get_function_json())["bindings"]
    assert binding == {
        "direction": "IN",
        "dataType": "BINARY",
        "type": "eventHubTrigger",
        "name": "events",
        "connection": "PAYMETRICS_EVENTHUB_CONNECTION",
        "eventHubName": "%PAYMETRICS_EVENTHUB_NAME%",
        "cardinality": "MANY",
        "consumerGroup": "%PAYMETRICS_EVENTHUB_CONSUMER_GROUP%",
    }
    retry = function.get_settings_dict("retry_policy")
    assert retry is not None
    assert retry["strategy"] == "exponential_backoff"
    assert retry["max_retry_count"] == "-1"
