"""The public API is exactly `paymetrics.__all__`, and the README's Python example runs."""

from __future__ import annotations

from pathlib import Path

import paymetrics


def test_all_lists_exactly_the_public_members() -> None:
    public = {name for name in dir(paymetrics) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(paymetrics, name)).__name__ == "module"}
    assert set(paymetrics.__all__) - {"__version__"} == public - modules
    assert paymetrics.__all__ == sorted(paymetrics.__all__, key=lambda n: (n.islower(), n))


def test_docstring_example_runs(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    with events.open("wb") as handle:
        paymetrics.write_jsonl(paymetrics.SimulatorConfig(events=500, seed=3), handle)
    store = paymetrics.open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.prepare()
    stats = paymetrics.Pipeline(store, paymetrics.ParquetArchive(str(tmp_path / "raw"))).run(
        paymetrics.open_source(f"file:{events}")
    )
    store.close()
    assert stats.messages == 500
    assert stats.normalized + stats.duplicates + stats.dead_lettered == 500
    assert list((tmp_path / "raw").rglob("*.parquet"))
