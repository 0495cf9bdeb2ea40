"""What every part shares: typed settings, the clock, the request and response schemas, the worker's runtime."""
