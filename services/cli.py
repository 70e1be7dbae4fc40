"""``vaner serve all|kb|retrieval|tagger``: flags override the config file, which overrides
nothing but the built-in defaults (environment values sit between the file and the flags)."""

from __future__ import annotations

import argparse

from services.config import SERVICES, ServeConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve", help="run the gRPC services (all three, or one)",
        description="Run the KB, Retrieval and Tagger gRPC services. 'all' starts each as its own process on "
                    "loopback and restarts one that dies. Binding a non-loopback address needs --tls-cert, "
                    "--tls-key and --token-file.")
    p.add_argument("service", choices=("all", *SERVICES), help="which service to run")
    p.add_argument("--config", default=None, help="TOML file (default $VANER_CONFIG; see docs/services.md)")
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None,
                   help="port of the one service; with 'all', the KB port (retrieval +1, tagger +2)")
    p.add_argument("--tls-cert", default=None, help="PEM certificate chain")
    p.add_argument("--tls-key", default=None, help="PEM private key")
    p.add_argument("--token-file", default=None, help="file with the bearer token clients must send")
    p.add_argument("--ingest-root", action="append", default=None, metavar="DIR",
                   help="kb: a directory Ingest may read client-named files from (repeatable; default none, "
                        "so Ingest refuses every path)")
    p.add_argument("--drain-seconds", type=float, default=None,
                   help="on SIGTERM, seconds of NOT_SERVING before the server stops accepting calls")
    p.add_argument("--model", default=None, help="tagger: model version, 'latest' or artifact directory")
    p.add_argument("--device", default=None, help="tagger: cpu, cuda, auto")
    p.set_defaults(func=run)


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
