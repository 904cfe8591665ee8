import airflow.providers.anthropic.operators.batch as ops
Op = getattr(ops, "Anthropic" + "BatchOperator")
Op(task_id="t", requests=[])
