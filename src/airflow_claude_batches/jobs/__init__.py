"""A job's life on the worker, shared by the operator, retention and the CLI."""
