"""The `rtc-agent` command: serve | realtime-server | loadtest | certs | top."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module exposing add_arguments(parser) and run(args) -> int
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("rtc_agent.serve", "run the signaling and media server"),
    "realtime-server": ("rtc_agent.offline.command", "run the offline Realtime backend alone"),
    "loadtest": ("rtc_agent.loadtest.command", "place scripted calls and report latency"),
    "certs": ("rtc_agent.signaling.certs", "create a local CA and a server certificate for HTTPS"),
    "top": ("rtc_agent.observability.top", "a live view of a node or cluster"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtc-agent", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
