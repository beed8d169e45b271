"""paymetrics: payment events in, trustworthy payment metrics out.

The command line (`paymetrics run`, `simulate`, `query`, `bench`, `demo`) covers the
common paths; this package exports the same building blocks for Python callers:

    from paymetrics import ParquetArchive, Pipeline, open_source, open_store

    store = open_store("sqlite:///paymetrics-data/paymetrics.db")
    store.prepare()
    stats = Pipeline(store, ParquetArchive("paymetrics-data/raw")).run(
        open_source("file:events.jsonl")
    )
"""

from paymetrics.archive import ParquetArchive
from paymetrics.events import PaymentEvent, Reason
from paymetrics.pipeline import Pipeline, PipelineOptions, RunStats
from paymetrics.simulator import SimulatorConfig, generate, write_jsonl
from paymetrics.sources import Checkpoint, RawBatch, Source, open_source
from paymetrics.storage import Store, open_store

__all__ = [
    "Checkpoint",
    "ParquetArchive",
    "PaymentEvent",
    "Pipeline",
    "PipelineOptions",
    "RawBatch",
    "Reason",
    "RunStats",
    "SimulatorConfig",
    "Source",
    "Store",
    "__version__",
    "generate",
    "open_source",
    "open_store",
    "write_jsonl",
]
__version__ = "0.1.0"
