"""HTTP probes of a service seen from outside."""
