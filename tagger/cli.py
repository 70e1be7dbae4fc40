"""``vaner train|eval|extract|models``: registered on the ``vaner`` dispatcher.

``extract --link`` and ``train --dbr`` need the knowledge base and DBR code of packages above this
one; the dispatcher (vaner/cli.py) passes them in, so the tagger package never imports them.
"""

from __future__ import annotations

from tagger import cli_infer, cli_train


def register(sub, *, linker: cli_infer.LinkerFactory | None = None,  # noqa: ANN001 - argparse subparsers action
             dbr_sentences: cli_train.DbrSentences | None = None) -> None:
    cli_train.register(sub, dbr_sentences=dbr_sentences)
    cli_infer.register(sub, linker=linker)
