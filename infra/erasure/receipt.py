"""The erasure receipt: what one erasure touched, store by store, written under the home; it never holds a raw id."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from infra.settings import HyperliftSettings


@dataclass
class StoreReport:
    """What the erasure did in one store: files rewritten (relative to the home), rows removed or anonymised, Redis
    keys deleted, stream entries removed or anonymised, and anything it could not do (`notes`)."""

    store: str
    files_rewritten: list[str] = field(default_factory=list)
    files_deleted: list[str] = field(default_factory=list)
    rows_removed: int = 0
    rows_anonymised: int = 0
    keys_deleted: int = 0
    entries_removed: int = 0
    entries_anonymised: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def touched(self) -> int:
        """Items changed in this store: rows, keys and entries; for a store whose items are whole files (Redis's
        append-only file and snapshot), the files rewritten."""
        items = (self.rows_removed + self.rows_anonymised + self.keys_deleted + self.entries_removed
                 + self.entries_anonymised + len(self.files_deleted))
        return items or len(self.files_rewritten)


@dataclass
class Receipt:
    """One erasure: the user's pseudonym, who asked, when, and a report per store."""

    user_key: str
    actor: str
    reason: str
    started: float
    finished: float = 0.0
    stores: list[StoreReport] = field(default_factory=list)
    complete: bool = True  # False: it stopped part way (`error`); run it again
    error: str = ""
    path: str = ""

    def report(self, store: str) -> StoreReport:
        """The report of `store`, added on first use."""
        for existing in self.stores:
            if existing.store == store:
                return existing
        created = StoreReport(store)
        self.stores.append(created)
        return created

    def summary(self) -> dict[str, int]:
        """Items changed per store (the API's and the audit trail's short form)."""
        return {s.store: s.touched for s in self.stores}

    def as_dict(self) -> dict[str, Any]:
        """The receipt as JSON-ready data."""
        return asdict(self)


def receipts_dir(settings: HyperliftSettings) -> Path:
    """`$HYPERLIFT_HOME/erasure/receipts`."""
    return settings.home / "erasure" / "receipts"


def write_receipt(receipt: Receipt, settings: HyperliftSettings) -> Path:
    """Write `<user_key>-<started, UTC>.json` atomically (an erasure run again keeps the first one's receipt);
    returns its path."""
    directory = receipts_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    started = datetime.fromtimestamp(receipt.started, timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    path = directory / f"{receipt.user_key}-{started}.json"
    receipt.path = str(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(receipt.as_dict(), indent=2) + "\n")
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    tmp.replace(path)
    return path
