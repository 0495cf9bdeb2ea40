"""Keyed erasure and data-subject export across every store the project writes (docs/privacy.md).

    python -m infra.erasure erase --user 42 [--reason "ticket 123"]
    python -m infra.erasure export --user 42 [--out DIR]
    python -m infra.erasure retention [--now 2026-11-01T00:00:00Z] [--dry-run]

One module per store family: `lake` (parquet under the home's data folder), `landing` (the files ingestion reads),
`redis_store` (keys, streams, the server's files), `spill` (the decision log's write-ahead files), `mlflow_artifacts`
(input examples), `logs`; `subject` (the user's id, pseudonym and Feast key), `anonymise` (what a decision record
keeps), `procedure` (runs them in order, writes the receipt: `receipt`), `retention` (each store's period),
`settings`.
"""
