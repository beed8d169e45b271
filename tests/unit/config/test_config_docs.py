"""docs/configuration.md: the reference is generated from the model; the example is valid."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from paymetrics.config import load_settings
from paymetrics.config.docs import BEGIN, END, render_reference
from paymetrics.config.model import Settings
from paymetrics.config.secrets import SecretResolver

DOC = Path(__file__).parents[3] / "docs" / "configuration.md"


def test_the_reference_in_the_docs_is_the_generated_one() -> None:
    text = DOC.read_text(encoding="utf-8")
    generated = text[text.index(BEGIN) : text.index(END) + len(END)] + "\n"
    assert generated == render_reference(), (
        "docs/configuration.md is out of date: regenerate its reference with "
        "`paymetrics config docs` (everything from the BEGIN marker on)"
    )


def test_every_option_is_documented() -> None:
    reference = render_reference()

    def walk(model: type, path: str) -> None:
        for name, info in model.model_fields.items():  # type: ignore[attr-defined]
            assert info.description, f"{path}.{name} has no docstring"
            assert f"| `{name}` |" in reference, f"{path}.{name} is missing from the reference"

    for name, info in Settings.model_fields.items():
        assert info.description, f"{name} has no docstring"
        assert f"### `{name}" in reference, f"section {name} is missing from the reference"
    for info in Settings.model_fields.values():
        sub = info.annotation
        args = getattr(sub, "__args__", ())
        for candidate in (sub, *args):
            if isinstance(candidate, type) and hasattr(candidate, "model_fields"):
                walk(candidate, candidate.__name__)


class _Vault:
    def get_secret(self, name: str, version: str | None = None, **kwargs: object) -> object:
        class Secret:
            value = "postgresql+psycopg://paymetrics:pw@db.internal/paymetrics"

        return Secret()


def test_the_production_example_is_a_valid_configuration(tmp_path: Path) -> None:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(r"```yaml\n(# paymetrics.yaml.*?)```", text, re.DOTALL)
    assert match, "the production example is missing"
    file = tmp_path / "paymetrics.yaml"
    file.write_text(match.group(1), encoding="utf-8")
    env = {"PAYMETRICS_API_TOKEN": "t0k3n"}
    resolver = SecretResolver(environ=env, keyvault_client_factory=lambda url: _Vault())
    loaded = load_settings(config_file=file, environ=env, resolver=resolver)
    assert [m.name for m in loaded.settings.metrics] == [
        "high_value_approved",
        "fraud_decline_rate",
        "refund_volume",
    ]
    assert loaded.secret_paths == {("storage", "db_url"), ("api", "token")}


@pytest.mark.parametrize("name", ["validate", "show", "schema", "history", "docs"])
def test_the_docs_mention_every_config_command(name: str) -> None:
    assert f"paymetrics config {name}" in DOC.read_text(encoding="utf-8")
