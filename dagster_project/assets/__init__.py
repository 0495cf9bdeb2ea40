"""Assets grouped by stage: ingestion → validation → features → online store → training."""
