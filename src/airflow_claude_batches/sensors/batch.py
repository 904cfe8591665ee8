"""Wait for a batch that was created elsewhere (for example by a team's old script)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import conf
from airflow.sdk import BaseSensorOperator

from airflow_claude_batches.exceptions import BatchJobError, TriggerEventError
from airflow_claude_batches.hooks import DEFAULT_CONN_ID
from airflow_claude_batches.triggers.batch import KNOWN_STATUSES, BatchJobEvent, ClaudeBatchTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_claude_batches.hooks.batches import ClaudeBatchesHook


class ClaudeBatchSensor(BaseSensorOperator):
    """
    Wait until a Message Batch has ended; return its final request counts.

    Meant for batches the service did not submit, while a team migrates an old script: it only
    watches (it never cancels the batch, even when killed, since someone else owns it). Deferred,
    it waits on the same :class:`ClaudeBatchTrigger` as the submit operator; the sensor's
    ``timeout`` is the trigger's wall-clock deadline.

    :param batch_id: The batch to wait for (``msgbatch_...``).
    :param anthropic_conn_id: The ``anthropic`` connection.
    :param poll_interval: Seconds between polls (``poke_interval`` when not deferrable).
    :param deferrable: Wait in the triggerer; default Airflow's ``[operators] default_deferrable``.
    """

    template_fields: Sequence[str] = ("batch_id",)

    def __init__(
        self,
        *,
        batch_id: str,
        anthropic_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 60,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", poll_interval)
        super().__init__(**kwargs)
        self.batch_id = batch_id
        self.anthropic_conn_id = anthropic_conn_id
        self.poll_interval = poll_interval
        self.deferrable = deferrable

    @cached_property
    def hook(self) -> ClaudeBatchesHook:
        from airflow_claude_batches.hooks.batches import ClaudeBatchesHook

        return ClaudeBatchesHook(conn_id=self.anthropic_conn_id)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        self.defer(
            trigger=ClaudeBatchTrigger(
                batch_ids=[self.batch_id],
                conn_id=self.anthropic_conn_id,
                poll_interval=self.poll_interval,
                end_time=time.time() + float(self.timeout),
                cancel_on_kill=False,
            ),
            method_name="execute_complete",
        )

    def poke(self, context: Context) -> bool:
        status = self.hook.get_batch(self.batch_id).processing_status
        if status not in KNOWN_STATUSES:
            raise TriggerEventError(f"Batch {self.batch_id} has unknown processing_status {status!r}.")
        return status == "ended"

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, int]:
        try:
            outcome = BatchJobEvent.model_validate(event)
        except ValueError as e:
            raise TriggerEventError(f"Unexpected event from ClaudeBatchTrigger: {event!r}") from e
        if outcome.status != "ended":
            raise BatchJobError(f"Batch {self.batch_id}: {outcome.message}")
        return outcome.batches[self.batch_id].request_counts
