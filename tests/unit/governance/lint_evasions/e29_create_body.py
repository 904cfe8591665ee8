# Sends a pre-serialized body through the service's own hook, around the operator.
from airflow_claude_batches.hooks.batches import ClaudeBatchesHook

ClaudeBatchesHook().create_batch_body(b'{"requests": []}')
