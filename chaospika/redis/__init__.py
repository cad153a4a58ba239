"""Redis stream probes and actions: length, lag, pending, backlog and drain time."""
