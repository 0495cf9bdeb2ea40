"""Event-time policy of the data plane as a Dagster resource: how late an event may arrive and still count."""

from __future__ import annotations

import dagster as dg

from feature_repo.event_time import Lateness


class EventTimeResource(dg.ConfigurableResource):
    """Allowed lateness in whole days (the watermark trails each arrival day by this much)."""

    allowed_lateness_days: int = Lateness().allowed_days

    def lateness(self) -> Lateness:
        """The validated lateness policy."""
        return Lateness(self.allowed_lateness_days)
