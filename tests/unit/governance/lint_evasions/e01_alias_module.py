import anthropic as a
c = a.Anthropic()
m = c.messages
m.batches.create(requests=[])
