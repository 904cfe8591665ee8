import anthropic
client = anthropic.Anthropic()
name = "bat" + "ches"
getattr(client.messages, name).create(requests=[])
