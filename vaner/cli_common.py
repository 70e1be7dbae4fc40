"""What every console script shares: global flags, settings from flags+env, and one error path.

A :class:`VanerError` becomes one ``error: ...`` line on stderr and its exit code; anything else
is a bug and keeps its traceback (with ``-v``) or a one-line INTERNAL message.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence

from vaner.errors import VanerError
from vaner.settings import Settings


def add_global_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("state")
    g.add_argument("--home", default=None, help="state directory (default $VANER_HOME or ~/.local/share/vaner)")
    g.add_argument("--db-url", default=None, help="SQL database URL (default $VANER_DB_URL or SQLite in home)")
    g.add_argument("--qdrant-url", default=None,
                   help="Qdrant server/cluster URL (default $VANER_QDRANT_URL or embedded)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")


def add_client_args(parser: argparse.ArgumentParser) -> None:
    """Flags of commands that call a vaner service (``--remote``, ``--*-address``), so they can reach
    a stack secured as docs/services.md describes. Read back with :func:`client_flags`."""
    g = parser.add_argument_group("service connection")
    g.add_argument("--token-file", default=None,
                   help="file with the bearer token the services expect (default $VANER_CLIENT_TOKEN_FILE)")
    g.add_argument("--tls-ca", default=None,
                   help="PEM CA of the services' certificate; turns TLS on (default $VANER_CLIENT_TLS_CA)")
    g.add_argument("--tls-server-name", default=None, help="name to expect in the services' certificate")


def client_flags(args: argparse.Namespace) -> dict[str, str | None]:
    """``clients.ClientOptions.from_env(**client_flags(args))``: flags first, then VANER_CLIENT_*."""
    return {"token_file": getattr(args, "token_file", None), "tls_ca": getattr(args, "tls_ca", None),
            "server_name": getattr(args, "tls_server_name", None)}


def settings_from_args(args: argparse.Namespace) -> Settings:
    return Settings.from_env(home=getattr(args, "home", None), db_url=getattr(args, "db_url", None),
                             qdrant_url=getattr(args, "qdrant_url", None))


def print_json(value: object) -> None:
    """``--json`` contract: exactly one JSON value on stdout."""
    sys.stdout.write(json.dumps(value, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbosity <= 1:
        for noisy in ("httpx", "urllib3", "sentence_transformers", "transformers", "filelock"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def run_cli(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    func: Callable[[argparse.Namespace], int | None] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args) or 0)
    except VanerError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: short message unless -v
        if args.verbose:
            raise
        print(f"error: internal error ({type(exc).__name__}: {exc}); rerun with -v for details",
              file=sys.stderr)
        return 1
