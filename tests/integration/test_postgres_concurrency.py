"""Two workers, one PostgreSQL database, overlapping inputs: nothing counted twice.

Two real `paymetrics run` processes are fed files that share a third of their events
(the same lines, as a redelivery to another consumer would look), and run at the same
time with small batches so their transactions interleave. The numbers must equal one
clean run of both files, one after the other.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.conftest import cli_command, cli_env, dump_table, run_cli

from paymetrics.simulator import SimulatorConfig, write_jsonl

pytestmark = pytest.mark.slow

#: Equal whoever stored an event first.
SAME_EITHER_WAY = {
    "payment_metrics_5m": [],
    "aggregate_histograms": [],
    "dynamic_metrics": [],
    "failed_items": [],
    "normalized_transactions": ["batch_id", "source_position"],
}
RULES = """
metrics:
  - name: approved_by_network
    filter: "event_type = 'authorization' AND status = 'approved'"
    group_by: [card_network]
    window: 15m
"""


def test_two_concurrent_writers_equal_one_clean_run(
    tmp_path: Path, postgres_schema: Callable[[str], str]
) -> None:
    stream = tmp_path / "stream.jsonl"
    config = SimulatorConfig(
        events=30_000, seed=5, rate_invalid=0.01, rate_duplicate=0.02, rate_late=0.01
    )
    with stream.open("wb") as handle:
        write_jsonl(config, handle)
    lines = stream.read_bytes().splitlines(keepends=True)
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_bytes(b"".join(lines[:20_000]))
    second.write_bytes(b"".join(lines[10_000:]))  # lines 10,000..19,999 go to both
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    common = ["--config", str(rules), "--batch-max-events", "500", "--no-archive", "-q"]

    clean = postgres_schema("sequential")
    for path in (first, second):
        result = run_cli("run", "--source", f"file:{path}", "--db", clean, *common, cwd=tmp_path)
        assert result.returncode == 0, result.describe()

    shared = postgres_schema("concurrent")
    # Create the schema first, so the two workers race on data, not on the migration.
    result = run_cli("db", "upgrade", "--db", shared, cwd=tmp_path)
    assert result.returncode == 0, result.describe()
    workers = [
        subprocess.Popen(
            cli_command("run", "--source", f"file:{path}", "--db", shared, "--json", *common),
            cwd=tmp_path,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for path in (first, second)
    ]
    outputs = [w.communicate(timeout=300) for w in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err.decode()

    for table, exclude in SAME_EITHER_WAY.items():
        expected = dump_table(clean, table, exclude=exclude)
        assert expected, f"{table} is empty"
        assert dump_table(shared, table, exclude=exclude) == expected, table

    # Every message of both files is accounted for once: stored by one, duplicate for the other.
    def totals(url: str) -> tuple[int, int, int, int]:
        rows = dump_table(
            url,
            "source_checkpoints",
            exclude=["source_id", "partition", "position", "byte_offset", "watermark"],
        )
        return tuple(sum(column) for column in zip(*rows, strict=True))  # type: ignore[return-value]

    assert totals(shared) == totals(clean)
