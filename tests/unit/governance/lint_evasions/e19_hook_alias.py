from airflow.providers.anthropic.hooks.anthropic import AnthropicHook
hook = AnthropicHook()
submit = getattr(hook, "create" + "_batch")
submit([])
