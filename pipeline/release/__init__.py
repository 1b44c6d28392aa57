"""Release: the promotion gate, the registry (versions, aliases, verified loading) and the ledger."""
