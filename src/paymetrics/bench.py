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
import statistics
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

__all__ = [
    "RULES_20",
    "WORKLOADS",
    "compare_workloads",
    "print_bench",
    "print_comparison",
    "realistic_config",
    "run_bench",
    "workload_config",
]


WORKLOADS = ("none", "rules")
"""What the measured run computes besides the fixed metrics: `none` (embedded defaults)
or `rules` (RULES_20 dynamic metrics, all compliance rules, FX rates for every currency
the simulator produces: the issue-6 bar's workload)."""

RULES_20: list[dict[str, Any]] = [
    # approval and decline mix
    dict(
        name="approval_rate_by_network_5m",
        aggregate="ratio",
        window="5m",
        filter="event_type = 'authorization'",
        numerator="status = 'approved'",
        group_by=["card_network"],
    ),
    dict(
        name="approval_rate_by_merchant_1h",
        aggregate="ratio",
        window="1h",
        filter="event_type = 'authorization'",
        numerator="status = 'approved'",
        group_by=["merchant_id"],
    ),
    dict(
        name="fraud_decline_rate_by_network_15m",
        aggregate="ratio",
        window="15m",
        filter="event_type = 'authorization'",
        numerator="status = 'declined' "
        "AND decline_code IN ('suspected_fraud', 'stolen_card', 'lost_card')",
        group_by=["card_network"],
    ),
    dict(
        name="declines_by_code_5m",
        aggregate="count",
        window="5m",
        filter="event_type = 'authorization' AND status = 'declined'",
        group_by=["decline_code"],
    ),
    dict(
        name="insufficient_funds_by_country_1h",
        aggregate="count",
        window="1h",
        filter="decline_code = 'insufficient_funds'",
        group_by=["country"],
    ),
    dict(
        name="errors_by_channel_1m",
        aggregate="count",
        window="1m",
        filter="status = 'error'",
        group_by=["channel"],
    ),
    # volumes
    dict(
        name="high_value_approved_5m",
        aggregate="count",
        window="5m",
        filter="event_type = 'authorization' AND status = 'approved' AND amount_minor >= 100000",
        group_by=["merchant_id"],
    ),
    dict(
        name="approved_volume_by_currency_1h",
        aggregate="sum",
        window="1h",
        filter="event_type = 'authorization' AND status = 'approved'",
        value="amount_minor",
        group_by=["currency"],
    ),
    dict(
        name="captured_volume_by_merchant_1d",
        aggregate="sum",
        window="1d",
        filter="event_type = 'capture'",
        value="amount_minor",
        group_by=["merchant_id", "currency"],
    ),
    dict(
        name="refund_volume_by_country_1d",
        aggregate="sum",
        window="1d",
        filter="event_type = 'refund'",
        value="amount_minor",
        group_by=["country", "currency"],
    ),
    dict(
        name="refund_ratio_by_country_1d",
        aggregate="ratio",
        window="1d",
        filter="event_type IN ('capture', 'refund')",
        numerator="event_type = 'refund'",
        group_by=["country"],
    ),
    dict(
        name="chargebacks_by_merchant_1d",
        aggregate="count",
        window="1d",
        filter="event_type = 'chargeback'",
        group_by=["merchant_id"],
    ),
    dict(
        name="avg_ticket_by_method_15m",
        aggregate="avg",
        window="15m",
        filter="event_type = 'authorization' AND status = 'approved'",
        value="amount_minor",
        group_by=["payment_method", "currency"],
    ),
    dict(
        name="max_ticket_by_merchant_1h",
        aggregate="max",
        window="1h",
        filter="event_type = 'authorization'",
        value="amount_minor",
        group_by=["merchant_id", "currency"],
    ),
    dict(
        name="min_ticket_by_currency_1h",
        aggregate="min",
        window="1h",
        filter="event_type = 'authorization' AND amount_minor > 0",
        value="amount_minor",
        group_by=["currency"],
    ),
    # latency
    dict(
        name="avg_latency_by_network_1m",
        aggregate="avg",
        window="1m",
        filter="event_type = 'authorization' AND latency_ms IS NOT NULL",
        value="latency_ms",
        group_by=["card_network"],
    ),
    dict(
        name="max_latency_by_merchant_5m",
        aggregate="max",
        window="5m",
        filter="latency_ms IS NOT NULL",
        value="latency_ms",
        group_by=["merchant_id"],
    ),
    dict(
        name="slow_auth_ratio_by_channel_5m",
        aggregate="ratio",
        window="5m",
        filter="event_type = 'authorization' AND latency_ms IS NOT NULL",
        numerator="latency_ms > 1000",
        group_by=["channel"],
    ),
    # channel mix and exposure
    dict(
        name="ecommerce_share_by_country_1h",
        aggregate="ratio",
        window="1h",
        filter="event_type = 'authorization'",
        numerator="channel = 'ecommerce'",
        group_by=["country"],
    ),
    dict(
        name="events_by_type_channel_1m",
        aggregate="count",
        window="1m",
        group_by=["event_type", "channel"],
    ),
]

"""Twenty metric rules a payments team would configure: approval and decline mix,
volumes, refund and chargeback ratios, ticket sizes, latency, channel mix."""


def _fx_rates() -> dict[str, str]:
    """USD per one major unit of each currency the simulator produces (its own rough
    rates), so every simulated authorization is judged on amount."""
    from paymetrics.simulator.catalog import REGIONS

    return {r.currency: f"{1 / r.per_usd:.6g}" for r in REGIONS if r.currency != "USD"}


def workload_config(workload: str) -> dict[str, Any] | None:
    """The configuration of a workload (None: embedded defaults, no file)."""
    if workload == "none":
        return None
    if workload == "rules":
        return {
            "metrics": RULES_20,
            "compliance": {"enabled": True},
            "fx": {"reporting_currency": "USD", "rates": _fx_rates()},
        }
    raise ValueError(f"unknown workload {workload!r}; valid workloads: {', '.join(WORKLOADS)}")


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
    workload: str = "none",
) -> dict[str, Any]:
    """Measure one `paymetrics run` of a generated file; `db` defaults to a SQLite file."""
    work_dir.mkdir(parents=True, exist_ok=True)
    source = _input_file(work_dir, events, seed)
    archive = work_dir / "raw"
    shutil.rmtree(archive, ignore_errors=True)
    config = workload_config(workload)
    config_file = None
    if config is not None:
        config_file = work_dir / f"workload-{workload}.json"
        config_file.write_text(json.dumps(config, indent=1))
    with _fresh_database(work_dir, db) as url:
        result = _measure(source, url, archive, batch_max_events, cores, config_file)
    result["database"] = "sqlite" if url.startswith("sqlite") else sa_backend(url)
    result["workload"] = workload
    return result


def compare_workloads(*, repeat: int = 3, **options: Any) -> dict[str, Any]:
    """Measure `none` and `rules` alternately `repeat` times each (so a noisy machine
    slows both alike); the cost is 1 - median(rules) / median(none) of events/s."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in WORKLOADS}
    for _ in range(repeat):
        for name in WORKLOADS:
            runs[name].append(run_bench(workload=name, **options))
    medians = {
        name: statistics.median(r["events_per_second"] for r in results)
        for name, results in runs.items()
    }
    return {
        "repeat": repeat,
        "events_per_second": medians,
        "all_events_per_second": {
            name: [r["events_per_second"] for r in results] for name, results in runs.items()
        },
        "cost": 1 - medians["rules"] / medians["none"],
        "rules": len(RULES_20),
        "runs": runs,
    }


def print_comparison(result: dict[str, Any], console: Console) -> None:
    table = Table(title="paymetrics bench --compare", title_justify="left")
    table.add_column("workload")
    table.add_column("median events/s", justify="right")
    table.add_column("runs (events/s)", justify="right")
    for name, rate in result["events_per_second"].items():
        runs = ", ".join(f"{r:,.0f}" for r in result["all_events_per_second"][name])
        table.add_row(name, f"{rate:,.0f}", runs)
    console.print(table)
    first = result["runs"]["none"][0]
    console.print(
        f"cost of {result['rules']} metric rules + all compliance rules: "
        f"[bold]{result['cost']:.1%}[/bold] of end-to-end throughput "
        f"(bar: at most 35%)\n"
        f"{first['events']:,} events, {first['cores']} core(s), batches of "
        f"{first['batch_max_events']:,}, database {first['database']}; "
        f"machine: {first['machine']['cpu']}"
    )


def sa_backend(url: str) -> str:
    import sqlalchemy as sa

    return sa.make_url(url).render_as_string(hide_password=True).split("?")[0]


def _measure(
    source: Path,
    db: str,
    archive: Path,
    batch_max_events: int,
    cores: int,
    config_file: Path | None = None,
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
        *(["--config", str(config_file)] if config_file is not None else []),
    ]
    # The workload's file or embedded defaults: no App Configuration or PAYMETRICS__ overrides.
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
