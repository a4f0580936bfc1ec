"""The `rtc-agent` command: serve | realtime-server | loadtest | certs | top."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from rtc_agent import ConfigError

# subcommand -> module exposing add_arguments(parser) and run(args) -> int
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("rtc_agent.serve", "run the signaling and media server"),
    "realtime-server": ("rtc_agent.offline.command", "run the offline Realtime backend alone"),
    "loadtest": ("rtc_agent.loadtest.command", "place scripted calls and report latency"),
    "say": ("rtc_agent.loadtest.say", "speak a text into a prompt WAV for loadtest (piper)"),
    "certs": ("rtc_agent.signaling.certs", "create a local CA and a server certificate for HTTPS"),
    "top": ("rtc_agent.observability.top", "a live view of a node or cluster"),
}


class _Parser(argparse.ArgumentParser):
    """argparse, with a mistake said in one line: `serve`'s usage alone is a screenful,
    and it would push the error itself out of sight."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {_one_line(message)} (see {self.prog} --help)\n")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rtc-agent", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand. A setting that cannot be used (ConfigError, from any of them)
    ends it here: one line on stderr and exit status 2, as argparse does for flags."""
    args = build_parser().parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except ConfigError as exc:
        print(f"rtc-agent: {_one_line(str(exc))}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
