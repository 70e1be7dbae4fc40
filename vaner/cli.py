"""The ``vaner`` console script: the composition root of the command line.

Each package registers its own subcommands, so a command's code lives beside the core it drives
(tagger/cli.py, retrieval/cli.py, services/cli.py). This is the one module allowed to import every
package (tests/test_layering.py): it hands the tagger's commands what they need from packages above
the tagger (KB linking for ``extract --link``, DBR sentences for ``train --dbr``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer

from vaner import __version__
from vaner.cli_common import callback, new_app, run_app

EXAMPLES = [
    'vaner extract "BRCA1 mutations cause breast cancer in mice." --types Disease,Gene --link',
    "vaner extract --input paper.pubtator --input-format pubtator --format bioc",
    "vaner train --datasets ncbi,bc5cdr-disease --data-dir ../shared/data/bioner",
    "vaner eval --dataset ncbi --split test --json",
    "vaner retrain --kb-snapshot latest --datasets ncbi",
    "vaner serve all",
    "vaner COMMAND --help                   # every command's flags and examples",
]


def _show_version(value: bool) -> None:
    if value:
        print(f"vaner {__version__}")
        raise typer.Exit()


def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                          help="print the version and exit")] = False,
    **_: object,
) -> None:
    """Takes the flags given before the command (--version, the state flags); commands read them
    through their context."""


def build_app() -> typer.Typer:
    from retrieval import cli as retrieval_cli
    from services import cli as services_cli
    from tagger import cli as tagger_cli

    app = new_app("vaner", "Biomedical NER (VANER) toolkit: extract and link Disease, Chemical, Gene and Species "
                           "mentions; train, evaluate and retrain the tagger; serve it over gRPC.", examples=EXAMPLES)
    callback(app, _root)
    tagger_cli.register(app, linker=retrieval_cli.kb_linker, dbr_sentences=retrieval_cli.training_dbr)
    retrieval_cli.register(app)
    services_cli.register(app)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    return run_app(build_app(), argv, "vaner")


if __name__ == "__main__":
    raise SystemExit(main())
