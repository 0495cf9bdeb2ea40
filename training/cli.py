"""Model registry commands: `python -m training.cli status | promote VERSION | rollback [--model NAME]`.

Serving picks up an alias change within HYPERLIFT_SERVING_MODEL_REFRESH_S seconds (default 30), no restart.
"""

from __future__ import annotations

import argparse
import json
import sys

from infra.settings import HyperliftSettings
from infra.audit import cli_actor
from training.lifecycle import NothingToRollBack, UnknownVersion, alias_version, champion_history, promote, rollback
from training.registry import CHALLENGER_ALIAS, CHAMPION_ALIAS


def main(argv: list[str] | None = None) -> int:
    """Run one registry command against the project's MLflow store; prints JSON."""
    parser = argparse.ArgumentParser(prog="python -m training.cli", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="hyperlift_uplift", help="registered model name")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", help="champion, challenger and earlier champions")
    promote_cmd = commands.add_parser("promote", help="make VERSION the champion (no gate: you decide)")
    promote_cmd.add_argument("version")
    promote_cmd.add_argument("--reason", default="", help="why (kept in the audit trail: python -m infra.audit)")
    rollback_cmd = commands.add_parser("rollback", help="move the champion alias back to the previous champion")
    rollback_cmd.add_argument("--reason", default="", help="why (kept in the audit trail: python -m infra.audit)")
    args = parser.parse_args(argv)
    uri = HyperliftSettings().mlflow_uri
    if args.command == "status":
        out = {
            "model": args.model,
            CHAMPION_ALIAS: alias_version(uri, args.model, CHAMPION_ALIAS),
            CHALLENGER_ALIAS: alias_version(uri, args.model, CHALLENGER_ALIAS),
            "earlier_champions": champion_history(uri, args.model),
        }
    else:
        actor = cli_actor()
        try:
            move = (promote(uri, args.model, args.version, actor, args.reason) if args.command == "promote"
                    else rollback(uri, args.model, actor, args.reason))
        except (NothingToRollBack, UnknownVersion) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        out = {"model": move.model_name, "previous_champion": move.previous, "champion": move.current}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
