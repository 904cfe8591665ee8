import anthropic
obj = anthropic.Anthropic()
for part in ["messages", "batches", "create"]:
    obj = getattr(obj, part)
obj(requests=[])
