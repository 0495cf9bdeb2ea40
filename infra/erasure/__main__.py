"""`python -m infra.erasure erase|export|retention`: see infra/erasure/__init__.py (make erase / make export)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

from feature_repo.event_time import Lateness
from infra.audit import cli_actor
from infra.erasure.procedure import Target, erase, export
from infra.erasure.retention import enforce
from infra.erasure.settings import RetentionSettings
from infra.erasure.subject import MAX_USER_ID


def _user(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--user must be a numeric user id, got {text!r}") from None
    if not 0 <= value <= MAX_USER_ID:
        raise argparse.ArgumentTypeError(f"--user must be in 0..{MAX_USER_ID}, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.erasure", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    erase_cmd = commands.add_parser("erase", help="remove or anonymise one user's data in every store")
    erase_cmd.add_argument("--user", type=_user, required=True)
    erase_cmd.add_argument("--reason", default="data subject request")
    export_cmd = commands.add_parser("export", help="everything held about one user, as files")
    export_cmd.add_argument("--user", type=_user, required=True)
    export_cmd.add_argument("--out", type=Path, default=None, help="default: $HYPERLIFT_HOME/erasure/exports")
    retention_cmd = commands.add_parser("retention", help="delete what is older than each store's retention period")
    retention_cmd.add_argument("--now", help="ISO-8601 instant with offset (simulated time); default: the wall clock")
    retention_cmd.add_argument("--dry-run", action="store_true")
    retention_cmd.add_argument("--allowed-lateness-days", type=int, default=Lateness().allowed_days,
                               help="the pipeline's allowed lateness (EventTimeResource), for folding expiring "
                                    "activity tiles; default %(default)s")
    args = parser.parse_args(argv)
    target = Target.from_env()
    if args.command == "erase":
        receipt = erase(args.user, target, actor=cli_actor(), reason=args.reason)
        summary = {"user_key": receipt.user_key, "receipt": receipt.path, "touched": receipt.summary()}
        print(json.dumps(summary, indent=2))
    elif args.command == "export":
        print(export(args.user, target, args.out))
    else:
        now = None
        if args.now:
            try:
                now = datetime.fromisoformat(args.now.replace("Z", "+00:00")).timestamp()
            except ValueError:
                parser.error(f"--now {args.now!r} is not an ISO-8601 instant (e.g. 2026-11-01T00:00:00Z)")
        report = enforce(target, RetentionSettings(), now=now, dry_run=args.dry_run,
                         lateness=Lateness(args.allowed_lateness_days))
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
