"""Seeded, realistic payment-event streams (JSON Lines) for tests, demos and benchmarks.

Same config, same bytes: see `SimulatorConfig`. Defects (invalid, duplicate, late,
PAN-leaking messages) and incidents (`SCENARIOS`) are injected on purpose so every
later stage has something to catch.
"""

from __future__ import annotations

from paymetrics.simulator.generator import (
    SimulatorConfig,
    generate,
    generate_labeled,
    scenario_info,
    write_jsonl,
)
from paymetrics.simulator.scenarios import SCENARIOS, Scenario, resolve_scenario

__all__ = [
    "SCENARIOS",
    "Scenario",
    "SimulatorConfig",
    "generate",
    "generate_labeled",
    "resolve_scenario",
    "scenario_info",
    "write_jsonl",
]
