"""`paymetrics demo`: the whole path on embedded defaults, with a summary at the end."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from paymetrics.bench import realistic_config
from paymetrics.cli import console, hermetic_run, out, print_summary
from paymetrics.simulator import generate

__all__ = ["run_demo"]


def _command_name() -> str:
    """`paymetrics`, or its path in the virtualenv when that is not on PATH."""
    beside = Path(sys.executable).parent / "paymetrics"
    if shutil.which("paymetrics") or not beside.exists():
        return "paymetrics"
    return os.path.relpath(beside)


def run_demo(*, events: int, data_dir: Path, seed: int) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    input_path = data_dir / "demo-events.jsonl"
    db_path = data_dir / "demo.db"
    archive = data_dir / "demo-raw"
    for stale in (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")):
        stale.unlink(missing_ok=True)
    shutil.rmtree(archive, ignore_errors=True)

    config = realistic_config(events=events, seed=seed, scenario="decline_spike")
    with (
        Progress(
            TextColumn("[bold]simulating"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress,
        input_path.open("wb") as handle,
    ):
        task = progress.add_task("simulating", total=events)
        for chunk in generate(config):
            handle.write(b"\n".join(chunk) + b"\n")
            progress.advance(task, len(chunk))
    console.print(f"simulated {events:,} payment events (seed {seed}) → {input_path}")

    summary = hermetic_run(
        f"file:{input_path}",
        f"sqlite:///{db_path}",
        str(archive),
        batch_max_events=50_000,
        expected_total=events,
    )
    print_summary(summary)
    db = f"sqlite:///{db_path}"
    command = _command_name()
    out.print(
        "\nLook around:\n"
        f"  {command} query metrics --db {db} --limit 20\n"
        f"  {command} query dlq --db {db} --summary\n"
        f"  raw archive (Parquet, by event date/hour): {archive}/"
    )
