"""The FastAPI decision service: settings, feature client, model client, policy, decision log, routes."""
