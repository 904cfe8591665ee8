import anthropic
client = anthropic.Anthropic()
exec("client.messages." + "batches.create(requests=[])")
