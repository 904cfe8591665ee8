import anthropic


def send_all(requests):
    return anthropic.Anthropic().messages.batches.create(requests=requests)
