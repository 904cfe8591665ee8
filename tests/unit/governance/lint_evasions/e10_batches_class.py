from anthropic.resources.messages import Batches
import anthropic
Batches(anthropic.Anthropic()).create(requests=[])
