"""The configuration examples in docs/deploy.md load, and the broker ones give the
client the settings the docs promise (Key Vault references stand in for env ones)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from paymetrics.config.loader import load_settings
from paymetrics.dead_letter_topic import DeadLetterTopic
from paymetrics.sources import open_source

DOC = Path(__file__).parents[3] / "docs" / "deploy.md"
BLOCK = re.compile(r"```yaml\n(.*?)```", re.S)
KEYVAULT = re.compile(r'"keyvault://[^/"]+/([^"]+)"')
SECRET = "Endpoint=sb://pay-prod.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=s"
#: What each Key Vault secret named in the examples would hold.
VAULT = {
    "paymetrics-db-url": "postgresql+psycopg://paymetrics:pw@db.internal/paymetrics",
    "kafka-password": SECRET,
    "eventhubs-connection-string": SECRET,
}


def examples() -> list[str]:
    blocks = BLOCK.findall(DOC.read_text())
    assert len(blocks) >= 3, "docs/deploy.md lost its configuration examples"
    return blocks


@pytest.mark.parametrize("text", examples(), ids=lambda t: t.splitlines()[0][:40])
def test_every_deploy_example_is_a_valid_configuration(text: str, tmp_path: Path) -> None:
    config = tmp_path / "paymetrics.yaml"
    names = KEYVAULT.findall(text)
    config.write_text(KEYVAULT.sub(lambda m: f'"env:PM_DOC_{names.index(m[1])}"', text))
    environ = {f"PM_DOC_{i}": VAULT[name] for i, name in enumerate(names)}
    loaded = load_settings(config_file=config, environ=environ)
    settings = loaded.settings
    url = settings.source.url or ""
    if url.startswith("kafka:"):
        source = open_source(url, settings.source.client_options())
        client = source.config  # type: ignore[attr-defined]
        assert client["security.protocol"] == "SASL_SSL"
        assert client["sasl.password"] == SECRET
        assert client["group.id"] == "paymetrics"
        assert SECRET not in source.source_id
        assert ("source", "options", "sasl.password") in loaded.secret_paths
    if url.startswith("eventhubs:"):
        source = open_source(url, settings.source.client_options())
        assert source.source_id == "eventhubs:payments?consumer_group=paymetrics"
        assert SECRET not in repr(source)
    if settings.dead_letters.topic_url:
        topic = DeadLetterTopic(
            settings.dead_letters.topic_url, options=settings.dead_letters.client_options()
        )
        assert topic.config["sasl.password"] == SECRET


def test_the_event_hubs_kafka_example_uses_the_connection_string_as_password() -> None:
    (text,) = [b for b in examples() if "servicebus.windows.net:9093" in b]
    assert 'sasl.username: "$ConnectionString"' in text
    assert "sasl.mechanism: PLAIN" in text
