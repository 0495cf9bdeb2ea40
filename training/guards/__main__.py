"""The cautious switch by hand: `python -m training.guards status | cautious SURFACE on|off --reason WHY`.

The guard turns a surface cautious by itself on an alarm; only a person turns it back (after fixing the cause or
deciding the drift is the new normal: then rebuild the reference, docs/guards.md). Every change is audited
(`guard.cautious_on` / `guard.cautious_off`, actor `cli:<login>`). Needs REDIS_URL (the serving Redis).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


from infra.audit import cli_actor, default_log
from infra.redis_cluster import redis_client
from serving.ops.cautious import CAUTIOUS_KEY, CautiousSwitch
from training.guards.config import load_guard_config


def main(argv: list[str] | None = None) -> int:
    """Show or set the per-surface cautious switch; prints JSON."""
    parser = argparse.ArgumentParser(prog="python -m training.guards", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", help="every surface's switch record")
    turn = commands.add_parser("cautious", help="turn a surface cautious (on) or back to its normal policy (off)")
    turn.add_argument("surface")
    turn.add_argument("state", choices=["on", "off"])
    turn.add_argument("--reason", required=True, help="why (kept in the audit trail: python -m infra.audit)")
    args = parser.parse_args(argv)
    url = os.environ.get("REDIS_URL")
    if not url:
        print("error: set REDIS_URL to the serving Redis (e.g. redis://127.0.0.1:6379/0)", file=sys.stderr)
        return 2
    switch = CautiousSwitch(redis_client(url), load_guard_config().cautious, CAUTIOUS_KEY, poll_s=0)
    if args.command == "cautious":
        actor = cli_actor()
        switch.set(args.surface, args.state == "on", args.reason, actor)
        default_log().record(actor, f"guard.cautious_{args.state}", target=f"surface:{args.surface}",
                             reason=args.reason)
    switch.refresh()
    print(json.dumps(switch.records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
