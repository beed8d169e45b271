"""paymetrics on Azure Functions (Python v2 model): Event Hubs batches into the pipeline.

Everything happens in `paymetrics.azure_function.handle_event_hub_batch`; this file only
declares the trigger and the retry policy. Settings: see README.md next to it.
"""

from __future__ import annotations

import azure.functions as func

from paymetrics.azure_function import handle_event_hub_batch

app = func.FunctionApp()


# Retry without limit: the Event Hubs extension checkpoints a batch once the policy is
# exhausted, failed or not, so a finite count would skip batches during a database outage.
# A batch failing for any other reason is dead-lettered by paymetrics after
# PAYMETRICS_FUNCTION_DEAD_LETTER_AFTER_RETRIES retries (default 5), so it cannot loop.
@app.function_name("paymetrics_eventhub")
@app.retry(
    strategy="exponential_backoff",
    max_retry_count="-1",
    minimum_interval="00:00:02",
    maximum_interval="00:01:00",
)
@app.event_hub_message_trigger(
    arg_name="events",
    event_hub_name="%PAYMETRICS_EVENTHUB_NAME%",
    connection="PAYMETRICS_EVENTHUB_CONNECTION",
    consumer_group="%PAYMETRICS_EVENTHUB_CONSUMER_GROUP%",
    cardinality=func.Cardinality.MANY,
    data_type=func.DataType.BINARY,  # bodies as sent: invalid UTF-8 is a dead letter, not a crash
)
def paymetrics_eventhub(events: list[func.EventHubEvent], context: func.Context) -> None:
    retry = context.retry_context  # None only where the host runs no retry policy
    handle_event_hub_batch(
        events,
        retry_count=retry.retry_count if retry else 0,
        max_retry_count=retry.max_retry_count if retry else 0,
    )
