"""Config versions: what decides the numbers, hashed, so old and new are never mixed.

The *rules document* holds only what changes computed numbers (validation,
lateness, metric rules, compliance, FX), never where data goes or any secret.
Its SHA-256 over canonical JSON names a version; expressions enter in their
canonical form, so a whitespace-only edit is not a new version.

A metric rule's rows carry the version in which its current definition first
appeared: editing one rule starts new rows for that rule only.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from paymetrics.config.model import MetricRuleSettings, Settings

__all__ = ["content_hash", "diff_documents", "metric_definition", "rule_versions", "rules_document"]


def metric_definition(rule: MetricRuleSettings) -> dict[str, Any]:
    """A metric rule as computed: canonical expressions, no description."""
    from paymetrics.config.model import EVENT_SCHEMA
    from paymetrics.metrics.expressions import parse_filter, parse_value

    return {
        "aggregate": rule.aggregate,
        "filter": None
        if rule.filter is None
        else parse_filter(rule.filter, EVENT_SCHEMA).canonical,
        "value": None if rule.value is None else parse_value(rule.value, EVENT_SCHEMA).canonical,
        "numerator": None
        if rule.numerator is None
        else parse_filter(rule.numerator, EVENT_SCHEMA).canonical,
        "group_by": sorted(rule.group_by),  # order does not change the numbers
        "window": rule.window,
    }


def rules_document(settings: Settings) -> dict[str, Any]:
    return {
        "lateness": settings.lateness.model_dump(mode="json"),
        "validation": {
            name: rule.model_dump(mode="json")
            for name, rule in sorted(settings.validation.rules.items())
        },
        "metrics": {
            rule.name: metric_definition(rule)
            for rule in sorted(settings.metrics, key=lambda r: r.name)
            if rule.enabled
        },
        # where alerts are delivered decides no number: not part of the version
        "compliance": settings.compliance.model_dump(mode="json", exclude={"webhook"}),
        "fx": settings.fx.model_dump(mode="json"),
        # only when used, so documents (and hashes) of configs without extractors stay as they were
        **({"extractors": settings.enabled_extractors()} if settings.enabled_extractors() else {}),
        **(
            {"histograms": [h.model_dump(mode="json") for h in settings.histograms]}
            if settings.histograms
            else {}
        ),
    }


def canonical_json(document: Mapping[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(document: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(document).encode()).hexdigest()


def rule_versions(
    current: Mapping[str, Any], history: list[tuple[int, Mapping[str, Any]]]
) -> dict[str, int]:
    """For each metric of `current`, the oldest version whose definition of it is identical.

    `history` is (version, document) in version order and includes the current one.
    """
    out: dict[str, int] = {}
    for name, definition in current["metrics"].items():
        for version, document in history:
            if document.get("metrics", {}).get(name) == definition:
                out[name] = version
                break
    return out


def diff_documents(
    old: Mapping[str, Any], new: Mapping[str, Any], old_name: str, new_name: str
) -> str:
    """A unified diff of two rules documents, as indented JSON with sorted keys."""
    a = json.dumps(old, sort_keys=True, indent=2, ensure_ascii=False).splitlines()
    b = json.dumps(new, sort_keys=True, indent=2, ensure_ascii=False).splitlines()
    return "\n".join(difflib.unified_diff(a, b, old_name, new_name, lineterm=""))
