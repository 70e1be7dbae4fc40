"""The ``vaner`` console script: the composition root of the command line.

Each package registers its own subcommands, so a command's code lives beside the core it drives
(tagger/cli.py, retrieval/cli.py, services/cli.py). This is the one module allowed to import every
package (tests/test_layering.py): it hands the tagger's commands what they need from packages above
the tagger (KB linking for ``extract --link``, DBR sentences for ``train --dbr``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from vaner import __version__
from vaner.cli_common import add_global_args, run_cli


def build_parser() -> argparse.ArgumentParser:
    from retrieval import cli as retrieval_cli
    from services import cli as services_cli
    from tagger import cli as tagger_cli

    parser = argparse.ArgumentParser(prog="vaner", description="Biomedical NER (VANER) toolkit")
    parser.add_argument("--version", action="version", version=f"vaner {__version__}")
    add_global_args(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    tagger_cli.register(sub, linker=retrieval_cli.kb_linker, dbr_sentences=retrieval_cli.training_dbr)
    retrieval_cli.register(sub)
    services_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
