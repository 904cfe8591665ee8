import importlib
mod = importlib.import_module("anthropic.resources.messages.batches")
mod.Batches
