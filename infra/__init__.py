"""One-machine infrastructure: typed runtime settings, the embedded Redis server, and the process launcher."""
