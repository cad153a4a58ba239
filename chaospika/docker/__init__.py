"""docker faults."""
