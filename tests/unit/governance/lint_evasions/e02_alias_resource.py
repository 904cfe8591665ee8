from anthropic import Anthropic
resource = Anthropic().messages.batches
resource.create(requests=[])
