"""``vaner train|eval|extract|models``: registered on the ``vaner`` dispatcher.

``extract --link`` and ``train --dbr`` need the knowledge base and DBR code of packages above this
one; the dispatcher (vaner/cli.py) passes them in, so the tagger package never imports them.
"""

from __future__ import annotations

import argparse

import typer

from tagger import cli_infer, cli_train


def register(target: typer.Typer | argparse._SubParsersAction, *, linker: cli_infer.LinkerFactory | None = None,
             dbr_sentences: cli_train.DbrSentences | None = None) -> None:
    cli_train.register(target, dbr_sentences=dbr_sentences)
    cli_infer.register(target, linker=linker)
