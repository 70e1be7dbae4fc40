"""``vaner train|eval|extract|models``: registered on the ``vaner`` dispatcher."""

from __future__ import annotations

from tagger import cli_infer, cli_train


def register(sub) -> None:  # noqa: ANN001 - argparse subparsers action
    cli_train.register(sub)
    cli_infer.register(sub)
