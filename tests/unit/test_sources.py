"""Sources: the `open_source` registry, `file:` (JSON Lines, globs, .gz) and `simulator:`."""

from __future__ import annotations

import functools
import gzip
from pathlib import Path
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paymetrics.sources import SOURCES, Checkpoint, RawBatch, open_source

# --------------------------------------------------------------------------- registry


@pytest.mark.parametrize("spec", ["eventhub://ns/hub", "nope", "", "s3://bucket/x"])
def test_unknown_scheme_names_the_supported_ones(spec: str) -> None:
    with pytest.raises(ValueError, match="scheme") as info:
        open_source(spec)
    for name in SOURCES:
        assert f"{name}:" in str(info.value)
    assert "file:" in str(info.value)
    assert "simulator:" in str(info.value)
    assert "kafka:" in str(info.value)
    assert "eventhubs:" in str(info.value)


@pytest.mark.parametrize("spec", ["file:x.jsonl", "simulator:?events=3"])
def test_options_are_refused_by_a_source_that_takes_none(spec: str) -> None:
    with pytest.raises(ValueError, match=r"source.options \['sasl.password'\] are for broker"):
        open_source(spec, {"sasl.password": "x"})


def test_kafka_options_reach_the_client_configuration() -> None:
    source = open_source(
        "kafka://h:9093/payments?group=pm",
        {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.password": "pw"},
    )
    assert source.config["security.protocol"] == "SASL_SSL"  # type: ignore[attr-defined]
    assert source.config["sasl.password"] == "pw"  # type: ignore[attr-defined]
    assert "pw" not in source.source_id


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("kafka:topic", "no broker address"),
        ("kafka://h:9092/", "the path must be one topic name"),
        ("kafka://h:9092/a/b?group=g", "the path must be one topic name"),
        ("kafka://h:9092/t", "option group=NAME (the consumer group) is required"),
        ("kafka://h:9092/t?group=g&nope=1", "unknown options ['nope']"),
        ("kafka://h:9092/t?group=g&offset_reset=middle", "offset_reset must be earliest or latest"),
        ("kafka://h:9092/t?group=g&poll_seconds=x", "poll_seconds must be a number"),
    ],
)
def test_a_bad_kafka_spec_names_the_problem(spec: str, problem: str) -> None:
    with pytest.raises(ValueError, match="kafka source") as info:
        open_source(spec)
    assert problem in str(info.value)


def test_a_kafka_spec_passes_librdkafka_properties_and_names_the_source_by_topic_and_group() -> (
    None
):
    source = open_source("kafka://h1:9092,h2:9092/payments?group=pm&session.timeout.ms=2000")
    assert source.source_id == "kafka:payments?group=pm"
    assert source.rebalancing
    config = source.config  # type: ignore[attr-defined]
    assert config["bootstrap.servers"] == "h1:9092,h2:9092"
    assert config["session.timeout.ms"] == "2000"
    assert config["enable.auto.commit"] is False


# --------------------------------------------------------------------------- file


def read_all(spec: str, max_events: int, checkpoints: dict[str, Checkpoint] | None = None):
    source = open_source(spec)
    source.open(checkpoints or {})
    with source:
        return list(source.batches(max_events))


def flat(batches: list[RawBatch]) -> list[tuple[int, bytes]]:
    return [
        (p, m) for batch in batches for p, m in zip(batch.positions, batch.messages, strict=True)
    ]


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.jsonl"
    with pytest.raises(FileNotFoundError, match=r"absent\.jsonl"):
        open_source(f"file:{path}")


def test_glob_matching_nothing_names_the_pattern(tmp_path: Path) -> None:
    (tmp_path / "other.txt").write_text("{}\n")
    with pytest.raises(FileNotFoundError, match=r"nothing-\*\.jsonl"):
        open_source(f"file:{tmp_path}/nothing-*.jsonl")


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_source(f"file:{tmp_path}")


def test_glob_over_several_files_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "b.jsonl").write_bytes(b'{"f":"b1"}\n{"f":"b2"}\n')
    with gzip.open(tmp_path / "c.jsonl.gz", "wb") as out:
        out.write(b'{"f":"c1"}\n\n{"f":"c2"}\n')
    (tmp_path / "a.jsonl").write_bytes(b'{"f":"a1"}\n')
    (tmp_path / "a.txt").write_bytes(b"not matched\n")
    batches = read_all(f"file:{tmp_path}/*.jsonl*", 10)
    names = [Path(b.partition).name for b in batches]
    assert names == ["a.jsonl", "b.jsonl", "c.jsonl.gz"]
    assert [b.messages for b in batches] == [
        [b'{"f":"a1"}'],
        [b'{"f":"b1"}', b'{"f":"b2"}'],
        [b'{"f":"c1"}', b'{"f":"c2"}'],
    ]
    assert [b.positions for b in batches] == [[1], [1, 2], [1, 3]]
    assert all(b.checkpoint.partition == b.partition for b in batches)
    assert len({b.source_id for b in batches}) == 1


def test_blank_and_whitespace_lines_skipped_positions_are_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(b'\n  \n{"n":1}\n\t \r\n{"n":2}\r\n\r\n\n  {"n":3}  \n')
    batches = read_all(f"file:{path}", 100)
    assert flat(batches) == [(3, b'{"n":1}'), (5, b'{"n":2}'), (8, b'  {"n":3}  ')]


def test_crlf_lines_lose_only_the_cr(tmp_path: Path) -> None:
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(b'{"a":"x\\r"}\r\n{"b":2}\r\n{"c":3}\n{"d":4}\r')
    assert flat(read_all(f"file:{path}", 100)) == [
        (1, b'{"a":"x\\r"}'),
        (2, b'{"b":2}'),
        (3, b'{"c":3}'),
        (4, b'{"d":4}'),
    ]


def test_last_line_without_newline(tmp_path: Path) -> None:
    path = tmp_path / "tail.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":2}')
    batches = read_all(f"file:{path}", 100)
    assert flat(batches) == [(1, b'{"a":1}'), (2, b'{"b":2}')]
    assert batches[-1].checkpoint.position == 2
    assert batches[-1].checkpoint.byte_offset == path.stat().st_size


def test_empty_and_blank_files_yield_nothing(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_bytes(b"")
    (tmp_path / "b.jsonl").write_bytes(b"\n \n\r\n")
    assert read_all(f"file:{tmp_path}/*.jsonl", 5) == []


def test_crlf_split_across_read_blocks(tmp_path: Path) -> None:
    """A CR that ends one read block and its LF that starts the next still frame one line."""
    from paymetrics.sources import file as file_module

    block = getattr(file_module, "_READ_BYTES", 4 * 1024 * 1024)
    first = b'{"n":1}\r\n'
    pad = block - len(first) - len(b'{"p":""}\r')
    body = first + b'{"p":"' + b"x" * pad + b'"}\r\n'
    assert body[block - 1 : block + 1] == b"\r\n"
    path = tmp_path / "big.jsonl"
    path.write_bytes(body)
    got = flat(read_all(f"file:{path}", 10))
    assert [p for p, _ in got] == [1, 2]
    assert got[1][1].endswith(b'"}'), got[1][1][-10:]


def test_resume_without_byte_offset_skips_stored_lines(tmp_path: Path) -> None:
    """`byte_offset` only spares re-reading: a checkpoint without it still resumes after it."""
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"n":1}\n\n{"n":3}\n{"n":4}\n')
    first = read_all(f"file:{path}", 2)[0]
    assert first.positions == [1, 3]
    resumed = read_all(f"file:{path}", 10, {first.partition: Checkpoint(first.partition, 3)})
    assert flat(resumed) == [(4, b'{"n":4}')]


# lines of a generated file: JSON-ish messages, blank and whitespace-only lines
line_st = st.one_of(
    st.integers(0, 10**6).map(lambda n: f'{{"n":{n}}}'.encode()),
    st.sampled_from([b"", b" ", b"\t", b"  \t ", b'  {"w":1} ', b'{"s":"a b"}', b"not json"]),
)


@st.composite
def jsonl_file(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, bytes]]]:
    lines = draw(st.lists(line_st, max_size=40))
    endings = draw(
        st.lists(st.sampled_from([b"\n", b"\r\n"]), min_size=len(lines), max_size=len(lines))
    )
    body = b"".join(line + end for line, end in zip(lines, endings, strict=True))
    if lines and draw(st.booleans()):  # no newline after the last line
        body = body[: -len(endings[-1])]
    expected = [(i, line) for i, line in enumerate(lines, 1) if line.strip()]
    return body, expected


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    file=jsonl_file(),
    max_events=st.integers(1, 7),
    resume_max=st.integers(1, 7),
    gz=st.booleans(),
)
def test_batches_and_resume_after_any_batch(
    tmp_path_factory: pytest.TempPathFactory,
    file: tuple[bytes, list[tuple[int, bytes]]],
    max_events: int,
    resume_max: int,
    gz: bool,
) -> None:
    body, expected = file
    path = tmp_path_factory.mktemp("jsonl") / ("f.jsonl.gz" if gz else "f.jsonl")
    path.write_bytes(gzip.compress(body) if gz else body)
    spec = f"file:{path}"

    batches = read_all(spec, max_events)
    assert flat(batches) == expected
    assert all(0 < len(b) <= max_events for b in batches)
    assert all(b.partition == str(path) for b in batches)
    for batch in batches:
        assert batch.checkpoint.position >= batch.positions[-1]
    consumed = 0
    for batch in batches:
        consumed += len(batch)
        resumed = read_all(spec, resume_max, {batch.partition: batch.checkpoint})
        assert flat(resumed) == expected[consumed:]
        assert all(0 < len(b) <= resume_max for b in resumed)


# --------------------------------------------------------------------------- simulator

SIM: Final = "simulator:?events=60&seed=3"


def test_simulator_yields_n_messages_positions_1_to_n() -> None:
    batches = read_all(SIM, 16)
    assert [len(b) for b in batches] == [16, 16, 16, 12]
    assert [p for b in batches for p in b.positions] == list(range(1, 61))
    assert all(b.partition == "0" for b in batches)
    assert [b.checkpoint.position for b in batches] == [16, 32, 48, 60]
    messages = [m for b in batches for m in b.messages]
    assert all(m.startswith(b"{") and not m.endswith(b"\n") for m in messages)
    assert len(set(messages)) == 60


def test_simulator_is_deterministic_and_independent_of_batch_size() -> None:
    a = [m for b in read_all(SIM, 60) for m in b.messages]
    b = [m for b in read_all(SIM, 7) for m in b.messages]
    assert a == b
    other_seed = [m for b in read_all("simulator:?events=60&seed=4", 60) for m in b.messages]
    assert other_seed != a


@functools.cache
def sim_whole() -> tuple[tuple[int, bytes], ...]:
    return tuple(flat(read_all(SIM, 60)))


@settings(max_examples=20, deadline=None)
@given(max_events=st.integers(1, 25), resume_max=st.integers(1, 25), data=st.data())
def test_simulator_resumes_after_checkpoint(
    max_events: int, resume_max: int, data: st.DataObject
) -> None:
    whole = list(sim_whole())
    batches = read_all(SIM, max_events)
    assert flat(batches) == whole
    batch = data.draw(st.sampled_from(batches), label="batch")
    resumed = read_all(SIM, resume_max, {batch.partition: batch.checkpoint})
    done = batch.checkpoint.position
    assert flat(resumed) == whole[done:]
    assert all(0 < len(b) <= resume_max for b in resumed)


@pytest.mark.parametrize("done", [0, 1, 59, 60])
def test_simulator_resumes_from_any_position(done: int) -> None:
    whole = list(sim_whole())
    resumed = read_all(SIM, 9, {"0": Checkpoint("0", done)})
    assert flat(resumed) == whole[done:]


def test_simulator_zero_events() -> None:
    assert read_all("simulator:?events=0", 10) == []


def test_simulator_unknown_option_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="colour") as info:
        open_source("simulator:?events=10&colour=red")
    for option in ("events", "seed", "rate_invalid", "scenario"):
        assert option in str(info.value)


def test_simulator_bad_option_value_names_the_option() -> None:
    with pytest.raises(ValueError, match="events"):
        open_source("simulator:?events=many")


class _RefusingConsumer:
    """A consumer whose broker refuses the login on every poll (librdkafka's error_cb)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def subscribe(self, topics: list[str], **_: Any) -> None:
        pass

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        from confluent_kafka import KafkaError

        self.config["error_cb"](KafkaError(KafkaError._AUTHENTICATION, "invalid credentials"))
        return []

    def close(self) -> None:
        pass


def test_a_login_refused_for_long_enough_ends_a_kafka_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import paymetrics.sources.kafka as kafka_source

    monkeypatch.setattr(kafka_source, "REFUSED_SECONDS", 0.05)
    source = kafka_source.KafkaSource(
        "//127.0.0.1:9/payments?group=pm&poll_seconds=0.01", consumer_factory=_RefusingConsumer
    )
    source.open({})
    with pytest.raises(ValueError, match=r"cannot connect to 127\.0\.0\.1:9: invalid credentials"):
        for _ in source.batches(10):
            pass
    assert "pm" in source.source_id
