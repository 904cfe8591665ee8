import anthropic
client = anthropic.Anthropic()
getattr(getattr(client, "messages"), "batches").create(requests=[])
