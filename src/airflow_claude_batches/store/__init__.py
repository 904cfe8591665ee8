"""The service's own state: the ledger database (SQL) beside the results store (objects)."""
