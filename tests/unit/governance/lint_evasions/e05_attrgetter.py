from operator import attrgetter
import anthropic
get = attrgetter("messages." + "batches")
get(anthropic.Anthropic()).create(requests=[])
