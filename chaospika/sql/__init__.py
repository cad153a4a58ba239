"""Read-only SQL probes over SQLAlchemy URLs."""
