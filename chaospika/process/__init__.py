"""Process faults and probes for processes named by a pidfile or a pid."""
