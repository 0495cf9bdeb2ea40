"""The HTTP edge: the decision fast path ahead of FastAPI, body limits, dependencies and the routes."""
