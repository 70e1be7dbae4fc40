"""The ``vaner`` console script: a dispatcher. Each package registers its own subcommands, so a
command's code lives beside the core it drives (tagger/cli.py, retrieval/cli.py, services/cli.py).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

from vaner import __version__
from vaner.cli_common import add_global_args, run_cli

COMMAND_MODULES = ("tagger.cli", "retrieval.cli", "services.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vaner", description="Biomedical NER (VANER) toolkit")
    parser.add_argument("--version", action="version", version=f"vaner {__version__}")
    add_global_args(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
