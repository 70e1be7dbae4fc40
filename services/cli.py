"""``vaner serve all|kb|retrieval|tagger``: flags override the config file, which overrides
nothing but the built-in defaults (environment values sit between the file and the flags)."""

from __future__ import annotations

import argparse
from typing import Annotated, Literal

import typer

from services.config import SERVICES, ServeConfig
from vaner.cli_common import attach, command, invoke

Service = Literal[("all", *SERVICES)]  # type: ignore[valid-type]


def serve(
    ctx: typer.Context,
    service: Annotated[Service, typer.Argument(metavar="SERVICE", help="which service to run", show_default=False)],
    config: Annotated[str | None, typer.Option(
        "--config", help="TOML file (default $VANER_CONFIG; see docs/services.md)")] = None,
    host: Annotated[str | None, typer.Option("--host", help="bind address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(
        "--port", help="port of the one service; with 'all', the KB port (retrieval +1, tagger +2)")] = None,
    tls_cert: Annotated[str | None, typer.Option("--tls-cert", help="PEM certificate chain")] = None,
    tls_key: Annotated[str | None, typer.Option("--tls-key", help="PEM private key")] = None,
    token_file: Annotated[str | None, typer.Option(
        "--token-file", help="file with the bearer token clients must send")] = None,
    ingest_root: Annotated[list[str] | None, typer.Option(
        "--ingest-root", metavar="DIR", help="kb: a directory Ingest may read client-named files from (repeatable; "
                                             "default none, so Ingest refuses every path)")] = None,
    drain_seconds: Annotated[float | None, typer.Option(
        "--drain-seconds", help="on SIGTERM, seconds of NOT_SERVING before the server stops accepting calls")] = None,
    model: Annotated[str | None, typer.Option(
        "--model", help="tagger: model version, 'latest' or artifact directory")] = None,
    device: Annotated[str | None, typer.Option("--device", help="tagger: cpu, cuda, auto")] = None,
    **_: object,
) -> None:
    """Run the KB, Retrieval and Tagger gRPC services (all three, or one).

    'all' starts each as its own process on loopback and restarts one that dies. Binding a
    non-loopback address needs --tls-cert, --tls-key and --token-file.
    """
    invoke(ctx, run)


def register(target: typer.Typer | argparse._SubParsersAction) -> None:
    app = typer.Typer()
    command(app, serve, examples=[
        "vaner serve all                        # KB :50051, Retrieval :50052, Tagger :50053 on 127.0.0.1",
        "vaner serve tagger --port 6000 --model latest",
        "vaner serve all --config vaner.toml",
        "vaner serve all --host 0.0.0.0 --tls-cert cert.pem --tls-key key.pem --token-file token",
    ])
    attach(target, app)


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    over: dict[str, object] = {
        "server.host": args.host, "security.tls_cert": args.tls_cert, "security.tls_key": args.tls_key,
        "security.token_file": args.token_file, "tagger.model": args.model, "tagger.device": args.device,
        "home": getattr(args, "home", None), "db_url": getattr(args, "db_url", None),
        "qdrant_url": getattr(args, "qdrant_url", None),
        "ingest.allowed_roots": getattr(args, "ingest_root", None),
        "server.drain_seconds": getattr(args, "drain_seconds", None),
    }
    if args.port is not None:
        if args.service == "all":
            for i, s in enumerate(SERVICES):
                over[f"server.{s}_port"] = args.port + i
        else:
            over[f"server.{args.service}_port"] = args.port
    return ServeConfig.load(args.config, overrides=over)


def run(args: argparse.Namespace) -> int:
    from services.server import serve_all, serve_one

    config = config_from_args(args)
    if args.service == "all":
        return serve_all(config)
    return serve_one(args.service, config)
