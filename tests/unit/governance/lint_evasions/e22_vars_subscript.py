import anthropic
client = anthropic.Anthropic()
vars(client.messages)["batches"].create(requests=[])
