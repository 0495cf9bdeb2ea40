"""Store I/O: online feature reads, the async Redis client, the decision trace and its lake, outcome and event intake."""
