"""`eventhubs://NAMESPACE/HUB?consumer_group=NAME` — an Azure Event Hubs consumer-group source.

Partitions are Event Hubs partitions; a message's position is its sequence number + 1,
so a checkpoint's position is the next sequence number to read. The database checkpoint
is the truth: each partition starts after its stored checkpoint, and because the SDK
prefers a blob checkpoint when there is one (which lags the database after a crash
between commit and `ack`), events at or before the known position are dropped here
before they reach the pipeline. The blob store (`BlobCheckpointStore`) balances
partitions between workers (`rebalancing`) and holds a checkpoint for lag tooling and
for a consumer that starts without our checkpoints; it is written in `ack`, after the
database commit. The SDK receives in a thread of its own and hands each partition's
chunk over a bounded queue, so it waits while the pipeline is behind.

Secrets (connection strings) come as `options` (config `source.options`), never in the
URL, and are kept out of `source_id`, reprs, errors and logs. The SDK is imported
lazily (`pip install 'paymetrics[azure]'`).
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from paymetrics.sources.base import Checkpoint, RawBatch, Source

if TYPE_CHECKING:
    from azure.eventhub import CheckpointStore, CloseReason, EventData, PartitionContext

__all__ = [
    "DEFAULT_CHECKPOINT_CONTAINER",
    "ClientSettings",
    "EventHubsSource",
    "default_consumer_client",
    "default_credential",
    "event_bytes",
    "fully_qualified_namespace",
    "redact",
    "secret_fragments",
]

log = logging.getLogger("paymetrics.sources.eventhubs")

DEFAULT_CHECKPOINT_CONTAINER = "paymetrics-checkpoints"
_QUERY = {"consumer_group", "starting_position", "poll_seconds", "prefetch", "checkpoint_container"}
_OPTIONS = {
    "connection_string",
    "checkpoint_connection_string",
    "checkpoint_account_url",
    "checkpoint_container",
}
_NOT_SECRET = {"checkpoint_container"}
_SHORT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]*[A-Za-z0-9]")
_HOST = re.compile(
    r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+"
)
_ENTITY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_CONTAINER = re.compile(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]")
#: Chunks waiting for the pipeline; small, so the SDK thread waits instead of buffering.
_QUEUE_CHUNKS = 2
_JOIN_SECONDS = 30.0


def fully_qualified_namespace(namespace: str) -> str | None:
    """`contoso` → `contoso.servicebus.windows.net`; a host name as it is; None if neither."""
    if _SHORT_NAME.fullmatch(namespace):
        return f"{namespace}.servicebus.windows.net"
    if _HOST.fullmatch(namespace):
        return namespace.lower()
    return None


def event_bytes(event: EventData) -> bytes:
    """The raw body: its data sections joined (one section is the usual case). A body of
    another AMQP type (a value, a sequence) becomes its text, to be dead-lettered as it was."""
    body = event.body
    if event.body_type == "data":
        return b"".join(body)  # type: ignore[arg-type]
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return str(list(body) if event.body_type == "sequence" else body).encode()  # type: ignore[arg-type]


@dataclass(frozen=True)
class ClientSettings:
    """What a client factory gets (`client_factory(settings)`); the secret stays out of repr."""

    fully_qualified_namespace: str
    eventhub_name: str
    consumer_group: str | None = None
    connection_string: str | None = field(default=None, repr=False)
    checkpoint_store: CheckpointStore | None = None


def default_consumer_client(settings: ClientSettings) -> Any:
    """An `EventHubConsumerClient`: from the connection string, else DefaultAzureCredential."""
    from azure.eventhub import EventHubConsumerClient

    assert settings.consumer_group is not None
    if settings.connection_string:
        return EventHubConsumerClient.from_connection_string(
            settings.connection_string,
            settings.consumer_group,
            eventhub_name=settings.eventhub_name,
            checkpoint_store=settings.checkpoint_store,
        )
    return EventHubConsumerClient(
        settings.fully_qualified_namespace,
        settings.eventhub_name,
        settings.consumer_group,
        default_credential(),
        checkpoint_store=settings.checkpoint_store,
    )


def default_credential() -> Any:
    """DefaultAzureCredential (managed identity, workload identity, az login…)."""
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError:
        raise ValueError(
            "Event Hubs without a connection string needs azure-identity: "
            "pip install 'paymetrics[azure]'"
        ) from None
    return DefaultAzureCredential()


def secret_fragments(options: Mapping[str, str]) -> list[str]:
    """Every secret value, and each `key=value` part of it (an SDK error may quote one)."""
    out: set[str] = set()
    for name, value in options.items():
        if name in _NOT_SECRET or not value:
            continue
        out.add(value)
        for part in re.split(r"[;&?]", value):
            _, sep, secret = part.partition("=")
            if sep and len(secret) >= 8:
                out.add(secret)
    return sorted(out, key=len, reverse=True)


def redact(text: str, secrets: Sequence[str]) -> str:
    """`text` with every secret fragment replaced by `***`."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


@dataclass(slots=True)
class _Chunk:
    """One `on_event_batch` call: what `batches` cuts into `RawBatch`es."""

    context: PartitionContext
    events: list[EventData]
    generation: int | None


@dataclass(slots=True)
class _Delivered:
    """What `ack` needs of a yielded batch: the event to checkpoint and under which claim."""

    context: PartitionContext
    event: EventData
    generation: int | None


class EventHubsSource(Source):
    rebalancing = True

    def __init__(
        self,
        rest: str,
        *,
        options: Mapping[str, str] | None = None,
        client_factory: Callable[[ClientSettings], Any] | None = None,
    ) -> None:
        options = dict(options or {})
        self._secrets = secret_fragments(options)
        url = urlsplit(f"eventhubs:{rest}")
        hub = url.path.strip("/")
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        problems = []
        namespace = None
        if url.username is not None or url.password is not None:
            problems.append("no credentials in the URL: give them in source.options")
        elif not url.netloc:
            problems.append("no namespace (eventhubs://NAMESPACE/HUB?consumer_group=NAME)")
        else:
            namespace = fully_qualified_namespace(url.netloc)
            if namespace is None:
                problems.append(
                    f"the namespace must be a name (contoso) or a host name "
                    f"(contoso.servicebus.windows.net), got {url.netloc!r}"
                )
        if not _ENTITY.fullmatch(hub):
            problems.append(f"the path must be one event hub name, got {url.path!r}")
        group = query.get("consumer_group", "")
        if not group:
            problems.append(
                "option consumer_group=NAME is required (write consumer_group=$Default for "
                "the default group)"
            )
        elif group != "$Default" and not _ENTITY.fullmatch(group):
            problems.append(f"consumer_group {group!r} is not a consumer group name")
        unknown = sorted(set(query) - _QUERY)
        if unknown:
            problems.append(f"unknown options {unknown}; valid: {sorted(_QUERY)}")
        start = query.get("starting_position", "earliest")
        if start not in {"earliest", "latest"}:
            problems.append(f"starting_position must be earliest or latest, got {start!r}")
        self.poll_seconds = 1.0
        try:
            self.poll_seconds = float(query.get("poll_seconds", "1.0"))
            if not self.poll_seconds > 0:
                raise ValueError
        except ValueError:
            problems.append(f"poll_seconds must be a number above 0, got {query['poll_seconds']!r}")
        self.prefetch: int | None = None
        if "prefetch" in query:
            try:
                self.prefetch = int(query["prefetch"])
                if self.prefetch < 1:
                    raise ValueError
            except ValueError:
                problems.append(f"prefetch must be a whole number >= 1, got {query['prefetch']!r}")
        unknown_options = sorted(set(options) - _OPTIONS)
        if unknown_options:
            problems.append(f"unknown source.options {unknown_options}; valid: {sorted(_OPTIONS)}")
        empty = sorted(name for name in _OPTIONS & set(options) if not options[name])
        if empty:
            problems.append(f"source.options {empty} are empty")
        if options.get("checkpoint_connection_string") and options.get("checkpoint_account_url"):
            problems.append("give checkpoint_connection_string or checkpoint_account_url, not both")
        in_url, in_options = query.get("checkpoint_container"), options.get("checkpoint_container")
        if in_url and in_options and in_url != in_options:
            problems.append(
                f"checkpoint_container is {in_url!r} in the URL but {in_options!r} in "
                "source.options"
            )
        container = in_url or in_options or DEFAULT_CHECKPOINT_CONTAINER
        if not _CONTAINER.fullmatch(container):
            problems.append(
                f"checkpoint_container {container!r} is not a blob container name (3-63 "
                "lower-case letters, digits and single hyphens)"
            )
        if problems:
            # `rest` holds no secret: credentials in the URL are refused above, unquoted.
            shown = rest if url.username is None and url.password is None else "…"
            raise ValueError(f"eventhubs source eventhubs:{shown}: " + "; ".join(problems))
        assert namespace is not None
        self.namespace = namespace
        self.hub = hub
        self.consumer_group = group
        self.starting_position = start
        self.checkpoint_container = container
        # The Azure Function app uses this same id: workers and it share the checkpoints.
        self.source_id = f"eventhubs:{hub}?consumer_group={group}"
        self._options = options
        self._factory = client_factory or default_consumer_client
        #: Stop after this long without an event (`paymetrics run --until-idle`); None: never.
        self.idle_seconds: float | None = None
        self._client: Any = None
        self._store: Any = None
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue[_Chunk] = queue.Queue(_QUEUE_CHUNKS)
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._error: str | None = None
        self._answered = False  # a partition was claimed: the load balancer has worked
        self._claims = 0
        #: partition → claim generation while this consumer owns it (SDK threads write it).
        self._owned: dict[str, int] = {}
        self._contexts: dict[str, PartitionContext] = {}
        #: Last position stored in the database or handed to the pipeline, by partition.
        self._floor: dict[str, int] = {}
        self._from_database: set[str] = set()
        self._acked: dict[str, int] = {}
        self._delivered: dict[tuple[str, int], _Delivered] = {}

    def __repr__(self) -> str:
        return f"EventHubsSource({self.source_id!r}, namespace={self.namespace!r})"

    # -- lifecycle --------------------------------------------------------------------

    def open(self, checkpoints: Mapping[str, Checkpoint]) -> None:
        if self._client is not None:
            raise RuntimeError(f"eventhubs source {self.source_id} is open already")
        try:
            import azure.eventhub  # noqa: F401 - the hint, before anything else needs it
        except ImportError:
            raise ValueError(
                "the eventhubs source needs azure-eventhub: pip install 'paymetrics[azure]'"
            ) from None
        self._floor = {p: c.position for p, c in checkpoints.items() if c.position > 0}
        self._from_database = set(self._floor)
        self._acked = dict(self._floor)
        self._delivered.clear()
        self._error, self._answered = None, False
        with self._lock:
            self._owned.clear()
            self._contexts.clear()
        connection = self._options.get("connection_string")
        if connection:
            self._check_connection_string(connection)
        self._store = self._checkpoint_store()
        settings = ClientSettings(
            self.namespace, self.hub, self.consumer_group, connection, self._store
        )
        try:
            self._client = self._factory(settings)
        except ValueError as error:
            raise ValueError(self._message("cannot create the client", error)) from None

    def _check_connection_string(self, connection: str) -> None:
        """A hub-scoped connection string for another hub would fail later, as an
        authorization error; say so now (hub names are not secret)."""
        from azure.eventhub import parse_connection_string

        try:
            props = parse_connection_string(connection)
        except ValueError:
            raise ValueError(
                f"eventhubs source {self.source_id}: source.options connection_string is not "
                "an Event Hubs connection string (Endpoint=sb://…;SharedAccessKeyName=…;"
                "SharedAccessKey=…)"
            ) from None
        if props.eventhub_name and props.eventhub_name != self.hub:
            raise ValueError(
                f"eventhubs source {self.source_id}: source.options connection_string is for "
                f"event hub {props.eventhub_name!r}, the URL names {self.hub!r}"
            )

    def _checkpoint_store(self) -> Any:
        connection = self._options.get("checkpoint_connection_string")
        account_url = self._options.get("checkpoint_account_url")
        if not connection and not account_url:
            log.warning(
                "eventhubs source %s has no checkpoint store (source.options "
                "checkpoint_connection_string or checkpoint_account_url): it reads every "
                "partition itself, without balancing them with other workers",
                self.source_id,
            )
            return None
        try:
            from azure.eventhub.extensions.checkpointstoreblob import BlobCheckpointStore
        except ImportError:
            raise ValueError(
                "the eventhubs checkpoint store needs azure-eventhub-checkpointstoreblob: "
                "pip install 'paymetrics[azure]'"
            ) from None
        try:
            if connection:
                return BlobCheckpointStore.from_connection_string(
                    connection, self.checkpoint_container
                )
            assert account_url is not None
            return BlobCheckpointStore(
                account_url, self.checkpoint_container, credential=default_credential()
            )
        except ValueError as error:
            raise ValueError(self._message("cannot create the checkpoint store", error)) from None

    def close(self) -> None:
        """Stop the SDK (it releases its partitions to other workers) and join its thread."""
        self._closing.set()
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception as error:
                log.warning("%s", self._message("closing the client failed", error))
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(_JOIN_SECONDS)
            if thread.is_alive():
                log.warning(
                    "eventhubs source %s: the receiving thread did not stop", self.source_id
                )
        store, self._store = self._store, None
        if store is not None:
            store.close()
        while not self._queue.empty():
            self._queue.get_nowait()
        self._delivered.clear()

    # -- the SDK's thread ------------------------------------------------------------

    def _start(self, max_events: int) -> None:
        """Start receiving, at the first `batches` call: the SDK's `max_batch_size` is the
        pipeline's batch size, which only `batches` is told."""
        self._closing.clear()
        self._thread = threading.Thread(
            target=self._receive,
            args=(self._client, max_events, dict(self._floor)),
            name=f"paymetrics-eventhubs-{self.hub}",
            daemon=True,
        )
        self._thread.start()

    def _receive(self, client: Any, max_events: int, stored: Mapping[str, int]) -> None:
        """The thread body: `receive_batch` until `close`; whatever ends it is an error.
        `max_wait_time=poll_seconds` bounds how long the SDK gathers a chunk."""
        try:
            starting = self._starting_positions(client, stored)
            extra: dict[str, Any] = {} if self.prefetch is None else {"prefetch": self.prefetch}
            client.receive_batch(
                self._on_event_batch,
                max_batch_size=max_events,
                max_wait_time=self.poll_seconds,
                starting_position=starting,
                starting_position_inclusive=False,
                track_last_enqueued_event_properties=True,
                on_error=self._on_error,
                on_partition_initialize=self._on_partition_initialize,
                on_partition_close=self._on_partition_close,
                **extra,
            )
        except Exception as error:
            if not self._closing.is_set():
                self._fail(self._message("receiving stopped", error))
        else:
            if not self._closing.is_set():
                self._fail(f"eventhubs source {self.source_id}: the client stopped receiving")

    def _starting_positions(self, client: Any, stored: Mapping[str, int]) -> str | dict[str, Any]:
        """Per partition: after its database checkpoint (a sequence number, exclusive), else
        the `starting_position`. A blob checkpoint, when there is one, still wins (SDK)."""
        default = "-1" if self.starting_position == "earliest" else "@latest"
        if not stored:
            return default
        positions: dict[str, Any] = dict.fromkeys(client.get_partition_ids(), default)
        positions.update({p: position - 1 for p, position in stored.items()})
        return positions

    def _on_event_batch(self, context: PartitionContext, events: list[EventData]) -> None:
        if not events:  # max_wait_time passed without an event
            return
        chunk = _Chunk(context, events, self._owned.get(context.partition_id))
        while not self._closing.is_set():
            try:
                self._queue.put(chunk, timeout=0.1)  # backpressure: wait for the pipeline
                return
            except queue.Full:
                continue

    def _on_partition_initialize(self, context: PartitionContext) -> None:
        with self._lock:
            self._claims += 1
            self._owned[context.partition_id] = self._claims
            self._contexts[context.partition_id] = context
            self._answered = True
        log.info("claimed partition %s of %s", context.partition_id, self.hub)

    def _on_partition_close(self, context: PartitionContext, reason: CloseReason) -> None:
        with self._lock:
            self._owned.pop(context.partition_id, None)
            self._contexts.pop(context.partition_id, None)
        log.info("released partition %s of %s (%s)", context.partition_id, self.hub, reason)

    def _on_error(self, context: PartitionContext | None, error: Exception) -> None:
        """Fatal unless it is the SDK's own recovery: a partition link lost (another worker
        took it over, or the connection dropped: the SDK claims it again), or the load
        balancer failing once it had worked (the SDK keeps its partitions and retries)."""
        from azure.core.exceptions import ClientAuthenticationError
        from azure.eventhub.exceptions import AuthenticationError, ConnectionLostError

        where = "load balancing" if context is None else f"partition {context.partition_id}"
        if isinstance(error, AuthenticationError | ClientAuthenticationError):
            fatal = True
        elif context is None:
            fatal = not self._answered
        else:
            fatal = not isinstance(error, ConnectionLostError)
        if fatal:
            self._fail(self._message(f"{where} failed", error))
        else:
            log.warning("%s", self._message(f"{where} failed, the client retries", error))

    def _fail(self, message: str) -> None:
        with self._lock:
            if self._error is None:
                self._error = message

    def _message(self, what: str, error: BaseException) -> str:
        text = " ".join(str(error).split()) or "(no message)"
        return redact(
            f"eventhubs source {self.source_id} (event hub {self.hub!r} in {self.namespace}): "
            f"{what}: {type(error).__name__}: {text}",
            self._secrets,
        )

    # -- the pipeline's thread -------------------------------------------------------

    def batches(self, max_events: int) -> Iterator[RawBatch]:
        assert self._client is not None, "open() first"
        if self._thread is None:
            self._start(max_events)
        last_event = time.monotonic()
        while True:
            self._raise_failure()  # an error is reported even when stopping
            if self.should_stop():
                return
            try:
                chunk = self._queue.get(timeout=self.poll_seconds)
            except queue.Empty:
                self._raise_failure()
                self.on_idle()
                if self.idle_seconds is not None and (
                    time.monotonic() - last_event >= self.idle_seconds
                ):
                    return
                continue
            last_event = time.monotonic()
            yield from self._cut(chunk, max_events)

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise ValueError(self._error)

    def _cut(self, chunk: _Chunk, max_events: int) -> Iterator[RawBatch]:
        """`RawBatch`es of at most `max_events` from one chunk, without what is stored."""
        partition = chunk.context.partition_id
        floor = self._floor.get(partition)
        events = chunk.events
        positions = [event.sequence_number + 1 for event in events]  # type: ignore[operator]
        contiguous = positions[-1] - positions[0] == len(positions) - 1
        if not contiguous or (floor is not None and positions[0] <= floor):
            # A redelivery (the blob checkpoint lags, or a reconnect went back): keep each
            # position once, past everything stored or handed out already.
            events, positions = self._past(events, positions, 0 if floor is None else floor)
            if not events:
                return
        elif floor is not None and positions[0] > floor + 1:
            self._report_gap(partition, floor, positions[0])
        for start in range(0, len(events), max_events):
            part = events[start : start + max_events]
            where = positions[start : start + max_events]
            self._floor[partition] = where[-1]
            self._from_database.discard(partition)
            bodies = [event_bytes(event) for event in part]
            kept = [i for i, body in enumerate(bodies) if body]  # an empty body is a blank line
            if not kept:
                continue
            checkpoint = Checkpoint(partition, where[-1])
            self._delivered[(partition, where[-1])] = _Delivered(
                chunk.context, part[-1], chunk.generation
            )
            if len(kept) == len(bodies):
                yield RawBatch(self.source_id, partition, bodies, where, checkpoint)
            else:
                yield RawBatch(
                    self.source_id,
                    partition,
                    [bodies[i] for i in kept],
                    [where[i] for i in kept],
                    checkpoint,
                )

    @staticmethod
    def _past(
        events: list[EventData], positions: list[int], floor: int
    ) -> tuple[list[EventData], list[int]]:
        kept_events, kept_positions = [], []
        for event, position in zip(events, positions, strict=True):
            if position > floor:
                kept_events.append(event)
                kept_positions.append(position)
                floor = position
        return kept_events, kept_positions

    def _report_gap(self, partition: str, floor: int, first: int) -> None:
        """Events this worker skipped: normal after a rebalance (another worker stored
        them), suspicious right after start (a blob checkpoint ahead of the database)."""
        level = logging.WARNING if partition in self._from_database else logging.INFO
        log.log(
            level,
            "partition %s of %s: sequence numbers %s..%s were not read by this worker (stored "
            "by another worker, expired from the event hub, or a blob checkpoint ahead of the "
            "database)",
            partition,
            self.hub,
            floor,
            first - 2,
        )

    def ack(self, batch: RawBatch) -> None:
        """Write the blob checkpoint (after the database commit), if the partition is still
        ours under the same claim; a failure is a warning: the database is the truth.

        `PartitionContext.update_checkpoint(event)` only reads the context's fixed names and
        the event, then calls the checkpoint store, which the SDK itself already calls from
        two threads (load balancing, receiving): calling it from this thread is as safe."""
        delivered = self._delivered.pop((batch.partition, batch.checkpoint.position), None)
        previous = self._acked.get(batch.partition, 0)
        self._acked[batch.partition] = max(previous, batch.checkpoint.position)
        if delivered is None:
            return
        with self._lock:
            owned = delivered.generation is not None and (
                self._owned.get(batch.partition) == delivered.generation
            )
        if not owned:  # another worker may have moved the blob checkpoint on already
            log.info(
                "partition %s of %s is not (or no longer) claimed by this worker: its blob "
                "checkpoint is left alone",
                batch.partition,
                self.hub,
            )
            return
        try:
            delivered.context.update_checkpoint(delivered.event)
        except Exception as error:
            log.warning(
                "%s",
                self._message(
                    f"could not update the blob checkpoint of partition {batch.partition} "
                    "(stored in the database anyway)",
                    error,
                ),
            )

    def lag(self) -> dict[str, int]:
        """Last enqueued sequence number (from the events received) minus the acknowledged
        position, per owned partition; asks the service nothing."""
        with self._lock:
            contexts = dict(self._contexts)
        out: dict[str, int] = {}
        for partition, context in sorted(contexts.items()):
            done = self._acked.get(partition)
            try:
                props = context.last_enqueued_event_properties
            except (AttributeError, KeyError, TypeError):
                continue
            if not props or done is None or props.get("sequence_number") is None:
                continue
            out[partition] = max(props["sequence_number"] + 1 - done, 0)
        return out
