"""WebSocket probes: message latency and delivery through a fan-out, reconnection storms."""
