"""The decision pipeline: surfaces and experiments, champions and their compiled scorers, the service."""
