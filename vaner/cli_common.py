"""What every console script shares: typer apps and commands, the global flags, settings from
flags+env, and one error path.

A command is a typer function whose signature declares its flags (help, examples and shell
completion come from typer + rich) and whose body hands them, as one ``argparse.Namespace``, to a
``run_*(args)`` function that does the work, so those functions and the config builders they call
do not depend on the command-line library. A :class:`VanerError` becomes one ``error: ...`` line on
stderr and its exit code; a usage error (unknown flag, bad value) one ``error: ...`` line and exit
2; anything else is a bug and keeps its traceback (with ``-v``) or a one-line INTERNAL message.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

import typer

from vaner.errors import VanerError
from vaner.settings import Settings

Run = Callable[[argparse.Namespace], "int | None"]


def option(name: str, annotation: Any, default: Any, *decls: str, help: str, panel: str | None = None,
           **kwargs: Any) -> inspect.Parameter:
    """A typer option as a signature parameter, for options that several commands share or that
    are generated (e.g. one per config field); :func:`command` adds them to a command."""
    kwargs.setdefault("show_default", default is not None and default is not False)
    info = typer.Option(*decls, help=help, rich_help_panel=panel, **kwargs)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[annotation, info])


# Accepted before the command name and after it (`kb-ingest umls X --home H`, as kb-ingest always did).
STATE_OPTIONS = (
    option("home", str | None, None, "--home", help="state directory (default $VANER_HOME or ~/.local/share/vaner)",
           panel="State"),
    option("db_url", str | None, None, "--db-url", help="SQL database URL (default $VANER_DB_URL or SQLite in home)",
           panel="State"),
    option("qdrant_url", str | None, None, "--qdrant-url",
           help="Qdrant server/cluster URL (default $VANER_QDRANT_URL or embedded)", panel="State"),
    option("verbose", int, 0, "-v", "--verbose", count=True, show_default=False, help="more logging (-vv for debug)",
           panel="State"),
)
# Commands that call a vaner service (--remote, --*-address), so they can reach a stack secured as
# docs/services.md describes. Read back with client_flags().
CLIENT_OPTIONS = (
    option("token_file", str | None, None, "--token-file",
           help="file with the bearer token the services expect (default $VANER_CLIENT_TOKEN_FILE)",
           panel="Service connection"),
    option("tls_ca", str | None, None, "--tls-ca",
           help="PEM CA of the services' certificate; turns TLS on (default $VANER_CLIENT_TLS_CA)",
           panel="Service connection"),
    option("tls_server_name", str | None, None, "--tls-server-name", help="name to expect in the services' certificate",
           panel="Service connection"),
)
JSON_HELP = "print exactly one JSON value on stdout"


def new_app(name: str, help: str, *, examples: Sequence[str] = (), **kwargs: Any) -> typer.Typer:
    """A typer app (or command group) with vaner's conventions: rich help, ``-h``, help when no
    command is given; on the top-level app, shell completion (``--install-completion``, bash, zsh,
    fish, PowerShell)."""
    settings = {"no_args_is_help": True, "rich_markup_mode": "rich", "pretty_exceptions_enable": False,
                "context_settings": {"help_option_names": ["-h", "--help"]}}
    settings.update(kwargs)
    return typer.Typer(name=name, help=help, epilog=examples_epilog(examples), **settings)


def examples_epilog(examples: Sequence[str]) -> str | None:
    if not examples:
        return None
    from rich.markup import escape

    return "[bold]Examples[/bold]\n" + "\n".join("[dim]$[/dim] " + escape(e) for e in examples)


def with_options(fn: Callable[..., Any], options: Sequence[inspect.Parameter]) -> Callable[..., Any]:
    """``fn`` with ``options`` appended to the signature typer reads; the values reach ``fn`` as
    keyword arguments (``**_``) and, like every flag, ``invoke`` through the context."""
    sig = inspect.signature(fn, eval_str=True)
    own = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    taken = {p.name for p in own}

    def command(**kwargs: Any) -> Any:
        return fn(**kwargs)

    command.__name__, command.__qualname__, command.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
    command.__module__ = fn.__module__
    command.__signature__ = sig.replace(parameters=own + [p for p in options if p.name not in taken])  # type: ignore[attr-defined]
    return command


def command(app: typer.Typer, fn: Callable[..., Any], name: str | None = None, *, examples: Sequence[str] = (),
            options: Sequence[inspect.Parameter] = (), inject: Mapping[str, Any] | None = None,
            **kwargs: Any) -> None:
    """Register ``fn`` as a command of ``app``: its own flags, then ``options`` and the state flags,
    an Examples section in ``--help``; ``inject`` (parts from packages above the command's, given by
    the composition root) reaches its ``run_*`` function as attributes of ``args``."""
    settings = dict(kwargs.pop("context_settings", {}))
    if inject:
        settings["obj"] = dict(inject)
    app.command(name, epilog=examples_epilog(examples), context_settings=settings, **kwargs)(
        with_options(fn, [*options, *STATE_OPTIONS]))


def callback(app: typer.Typer, fn: Callable[..., Any], *, options: Sequence[inspect.Parameter] = (),
             **kwargs: Any) -> None:
    """Register ``fn`` as the group callback of ``app`` (its flags go before a subcommand)."""
    app.callback(**kwargs)(with_options(fn, [*options, *STATE_OPTIONS]))


def namespace(ctx: typer.Context) -> argparse.Namespace:
    """Every flag of the command and of the groups above it, plus injected parts, as one namespace;
    a flag given closer to the command wins, a default never overrides a given value."""
    chain: list[typer.Context] = []
    c: Any = ctx
    while c is not None:
        chain.append(c)
        c = c.parent
    values: dict[str, Any] = dict(ctx.obj) if isinstance(ctx.obj, dict) else {}
    for c in reversed(chain):
        defaults = {p.name: p.default for p in c.command.params}
        for name, value in c.params.items():
            given = c.get_parameter_source(name).name != "DEFAULT"
            if given or name not in values:
                values[name] = value if given else defaults.get(name, value)
    return argparse.Namespace(**values)


def invoke(ctx: typer.Context, run: Run) -> None:
    """The body of every command: ``run(args)`` behind the one error path; a non-zero result
    becomes the exit code."""
    args = namespace(ctx)
    configure_logging(args.verbose)
    code = guarded(lambda: run(args), args.verbose)
    if code:
        raise typer.Exit(code)


def guarded(call: Callable[[], int | None], verbose: int = 0) -> int:
    """The one error path: the exit code of ``call``, or of the error it raised (printed on one line)."""
    try:
        return int(call() or 0)
    except VanerError as exc:
        print(f"error: {one_line(exc.message)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except (typer.Exit, SystemExit):
        raise
    except Exception as exc:  # a bug: short message unless -v
        if verbose:
            raise
        print(f"error: internal error ({type(exc).__name__}: {one_line(str(exc))}); rerun with -v for details",
              file=sys.stderr)
        return 1


def one_line(message: str) -> str:
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def run_app(app: typer.Typer, argv: Sequence[str] | None, prog: str) -> int:
    """Run a console script; usage errors are one ``error:`` line too (exit 2)."""
    cmd = typer.main.get_command(app)
    try:
        rv = cmd.main(args=None if argv is None else list(argv), prog_name=prog, standalone_mode=False)
    except typer.TyperException as exc:  # the command line itself is wrong (click's UsageError and kin)
        if type(exc).__name__ == "NoArgsIsHelpError":  # the help is already shown
            return 2
        where = getattr(getattr(exc, "ctx", None), "command_path", prog)
        print(f"error: {one_line(exc.format_message())} (see '{where} --help')", file=sys.stderr)
        return exc.exit_code
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        return 1
    except SystemExit as exc:  # shell completion answers and exits
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    return rv if isinstance(rv, int) else 0


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


class _StderrHandler(logging.StreamHandler):
    """Writes to the current ``sys.stderr``, so log lines go above live progress bars (which
    redirect it) instead of through them."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN202
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001
        pass


def configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    if verbosity <= 1:
        for noisy in ("httpx", "urllib3", "sentence_transformers", "transformers", "filelock"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


# ---- argparse programs ----------------------------------------------------------------------------
# vaner's commands can also be mounted on an argparse parser (a program that embeds them, the
# tests' harness): argparse routes by the command name and click parses the rest, so both accept
# exactly the same flags.
def add_global_args(parser: argparse.ArgumentParser) -> None:
    """The state flags (:data:`STATE_OPTIONS`) on an argparse parser."""
    for p in STATE_OPTIONS:
        info = p.annotation.__metadata__[0]
        decls = [info.default, *info.param_decls] if isinstance(info.default, str) else list(info.param_decls)
        if info.count:
            parser.add_argument(*decls, dest=p.name, action="count", default=0, help=info.help)
        else:
            parser.add_argument(*decls, dest=p.name, default=None, help=info.help)


def attach(target: typer.Typer | argparse._SubParsersAction, app: typer.Typer) -> None:
    """Add the commands of ``app`` to ``target``: a typer app (the console scripts), or the
    subcommands of an argparse parser (:func:`mount`)."""
    if isinstance(target, typer.Typer):
        target.add_typer(app)
    else:
        mount(target, app)


def mount(subparsers: argparse._SubParsersAction, app: typer.Typer) -> None:
    """Each command of ``app`` as a subcommand of an argparse parser."""
    for name, cmd in typer.main.get_group(app).commands.items():
        parser = subparsers.add_parser(name, help=cmd.get_short_help_str(), add_help=False, prefix_chars="\0")
        parser.add_argument("command_line", nargs=argparse.REMAINDER, action=_ClickArgs, command=cmd)


_STATE_NAMES = frozenset(p.name for p in STATE_OPTIONS)


class _ClickArgs(argparse.Action):
    """Parses a mounted command's arguments with click, sets its flags on the namespace (defaults
    of the state flags excepted: argparse may hold them from before the command) and ``func``."""

    def __init__(self, *args: Any, command: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.command = command

    def __call__(self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        try:
            ctx = self.command.make_context(parser.prog, list(values))
        except typer.Exit as exc:  # --help
            parser.exit(exc.exit_code)
        except typer.TyperException as exc:
            parser.error(exc.format_message())
        for name, value in vars(namespace(ctx)).items():
            if name not in _STATE_NAMES or ctx.get_parameter_source(name).name != "DEFAULT":
                setattr(ns, name, value)
        ns.func = lambda args: _invoke_mounted(self.command, ctx, args)


def _invoke_mounted(cmd: Any, ctx: Any, args: argparse.Namespace) -> int:
    state = {n: getattr(args, n) for n in _STATE_NAMES if getattr(args, n, None) is not None}
    ctx.obj = {**(ctx.obj if isinstance(ctx.obj, dict) else {}), **state}
    try:
        with ctx:
            cmd.invoke(ctx)
    except typer.Exit as exc:
        return exc.exit_code
    return 0


def run_cli(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Run an argparse program whose subcommands set ``func`` (e.g. mounted vaner commands)."""
    args = parser.parse_args(argv)
    configure_logging(getattr(args, "verbose", 0))
    func: Run | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    return guarded(lambda: func(args), getattr(args, "verbose", 0))
