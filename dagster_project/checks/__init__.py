"""Asset checks grouped by lifecycle stage; each returns actual vs expected as metadata."""
