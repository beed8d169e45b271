"""`paymetrics bench`: end-to-end and per-stage throughput, and peak RSS.

The measured run is the real `paymetrics run` command in a child process pinned
to `cores` CPUs, on a file the simulator generated beforehand (cached), with a
fresh SQLite database and archive. Peak RSS is the child's own (wait4 rusage),
so generating the input does not count.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from paymetrics.simulator import SimulatorConfig, write_jsonl

__all__ = ["print_bench", "realistic_config", "run_bench"]


def realistic_config(*, events: int, seed: int, scenario: str = "baseline") -> SimulatorConfig:
    """Simulated traffic with the defects production sees: the demo's and the bench's input."""
    return SimulatorConfig(
        events=events,
        seed=seed,
        scenario=scenario,
        rate_invalid=0.005,
        rate_duplicate=0.01,
        rate_late=0.01,
        rate_pan_leak=0.0005,
    )


def _input_file(work_dir: Path, events: int, seed: int) -> Path:
    path = work_dir / f"input-{events}-seed{seed}.jsonl"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as handle:
            write_jsonl(realistic_config(events=events, seed=seed), handle)
        tmp.rename(path)
    return path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@contextmanager
def _fresh_database(work_dir: Path, db: str | None) -> Iterator[str]:
    """A new, empty database for one measured run: a SQLite file, or a PostgreSQL schema
    created for the run and dropped after it."""
    if db is None or db.startswith("sqlite"):
        path = work_dir / "bench.db"
        for stale in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            stale.unlink(missing_ok=True)
        yield f"sqlite:///{path}"
        return
    import uuid

    import sqlalchemy as sa

    url = sa.make_url(db)
    schema = f"paymetrics_bench_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        options = f"{url.query.get('options', '')} -csearch_path={schema}".strip()
        yield url.update_query_dict({"options": options}).render_as_string(hide_password=False)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


def run_bench(
    *,
    events: int,
    work_dir: Path,
    batch_max_events: int = 50_000,
    cores: int = 1,
    seed: int = 7,
    db: str | None = None,
) -> dict[str, Any]:
    """Measure one `paymetrics run` of a generated file; `db` defaults to a SQLite file."""
    work_dir.mkdir(parents=True, exist_ok=True)
    source = _input_file(work_dir, events, seed)
    archive = work_dir / "raw"
    shutil.rmtree(archive, ignore_errors=True)
    with _fresh_database(work_dir, db) as url:
        result = _measure(source, url, archive, batch_max_events, cores)
    result["database"] = "sqlite" if url.startswith("sqlite") else sa_backend(url)
    return result


def sa_backend(url: str) -> str:
    import sqlalchemy as sa

    return sa.make_url(url).render_as_string(hide_password=True).split("?")[0]


def _measure(
    source: Path, db: str, archive: Path, batch_max_events: int, cores: int
) -> dict[str, Any]:
    allowed = sorted(os.sched_getaffinity(0))[:cores]
    command = [
        sys.executable,
        "-m",
        "paymetrics",
        "run",
        "--source",
        f"file:{source}",
        "--db",
        db,
        "--archive",
        str(archive),
        "--batch-max-events",
        str(batch_max_events),
        "--json",
        "--quiet",
    ]
    # Embedded defaults only: no configuration file, App Configuration or PAYMETRICS__ overrides.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYMETRICS")}
    env.update(OMP_NUM_THREADS=str(cores), ARROW_NUM_THREADS=str(cores))
    started = time.perf_counter()
    child = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        command,
        stdout=subprocess.PIPE,
        env=env,
        preexec_fn=lambda: os.sched_setaffinity(0, allowed),
    )
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"benchmark run failed with exit code {child.returncode}")
    summary = json.loads(output)
    stages = summary["stage_seconds"]
    return {
        "events": summary["events_in"],
        "normalized": summary["normalized"],
        "duplicates": summary["duplicates"],
        "dead_lettered": summary["dead_lettered"],
        "batch_max_events": batch_max_events,
        "cores": cores,
        "pipeline_seconds": summary["elapsed_seconds"],
        "events_per_second": summary["events_per_second"],
        "wall_seconds_with_startup": wall,
        "stage_seconds": stages,
        "stage_events_per_second": {
            name: (summary["events_in"] / seconds if seconds else None)
            for name, seconds in stages.items()
        },
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "input_bytes": source.stat().st_size,
        "machine": {
            "cpu": _cpu_model(),
            "cpus_available": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }


def print_bench(result: dict[str, Any], console: Console) -> None:
    table = Table(title="paymetrics bench", title_justify="left")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("events/s", justify="right")
    for name, seconds in result["stage_seconds"].items():
        rate = result["stage_events_per_second"][name]
        table.add_row(name, f"{seconds:.2f}", "-" if rate is None else f"{rate:,.0f}")
    table.add_row(
        "[bold]end to end",
        f"{result['pipeline_seconds']:.2f}",
        f"[bold]{result['events_per_second']:,.0f}",
    )
    console.print(table)
    console.print(
        f"{result['events']:,} events ({result['input_bytes'] / 2**20:,.0f} MiB), "
        f"{result['cores']} core(s), batches of {result['batch_max_events']:,}; "
        f"peak RSS {result['peak_rss_mib']:,.0f} MiB; "
        f"wall with start-up {result['wall_seconds_with_startup']:.2f} s\n"
        f"normalized {result['normalized']:,}, duplicates {result['duplicates']:,}, "
        f"dead-lettered {result['dead_lettered']:,}\n"
        f"machine: {result['machine']['cpu']}, Python {result['machine']['python']}"
    )
