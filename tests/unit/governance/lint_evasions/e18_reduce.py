from functools import reduce
import anthropic
reduce(getattr, ["messages", "batches", "create"], anthropic.Anthropic())(requests=[])
