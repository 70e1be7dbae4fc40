"""The typer command lines (``vaner``, ``kb-ingest``): help with examples on every command, usage
errors on one line (exit 2), flags before or after the command, repeated flags, shell completion,
and the progress renderer. Behaviour of each command is tested beside its package."""

from __future__ import annotations

import io
import json

import pytest
import typer

from kb_ingest import cli as kb_cli
from vaner import cli as vaner_cli
from vaner.cli_common import callback, command, invoke, option, run_app
from vaner.progress import ProgressBars, ProgressTracker, describe


def _paths(cmd, prefix=()):  # noqa: ANN001, ANN202 - every command path of a click group
    yield prefix
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _paths(sub, (*prefix, name))


SCRIPTS = {"vaner": (vaner_cli.build_app, vaner_cli.main), "kb-ingest": (kb_cli.build_app, kb_cli.main)}


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_command_has_help_with_examples(script, capsys):
    build, main = SCRIPTS[script]
    paths = list(_paths(typer.main.get_command(build())))
    assert len(paths) > 5
    for path in paths:
        assert main([*path, "--help"]) == 0, path
        out = capsys.readouterr().out
        assert f"Usage: {' '.join((script, *path))}" in out and "Examples" in out, path


@pytest.mark.parametrize("script, argv, needle", [
    ("vaner", ["extract", "x", "--bogus"], "No such option: --bogus"),
    ("vaner", ["extract", "x", "--batch-size", "many"], "'--batch-size'"),
    ("vaner", ["extract", "x", "--format", "xml"], "'--format'"),
    ("vaner", ["serve"], "Missing argument 'SERVICE'"),
    ("vaner", ["serve", "web"], "SERVICE"),
    ("vaner", ["models", "promote"], "Missing argument 'ID'"),
    ("vaner", ["--home"], "requires an argument"),
    ("vaner", ["frobnicate"], "No such command 'frobnicate'"),
    ("kb-ingest", ["search", "x", "-k", "ten"], "'-k'"),
    ("kb-ingest", ["dataset", "train.tsv"], "Missing option '--type'"),
])
def test_usage_errors_are_one_line_with_exit_2(script, argv, needle, capsys):
    assert SCRIPTS[script][1](argv) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert "--help" in lines[0]  # says where the usage is


def test_no_command_shows_help_and_exits_2(capsys):
    assert vaner_cli.main([]) == 2
    assert "Commands" in capsys.readouterr().out
    assert vaner_cli.main(["dbr"]) == 2
    assert "build" in capsys.readouterr().out
    assert vaner_cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("vaner ")


def _probe_app(seen: dict):  # noqa: ANN202
    """A two-level app built like vaner's, whose command records the namespace it is given."""
    def root(ctx: typer.Context, **_: object) -> None:
        """root"""

    def cmd(ctx: typer.Context, tags: list[str] | None = typer.Option(None, "--tag"), n: int = typer.Option(3, "-n"),
            **_: object) -> None:
        """cmd"""
        invoke(ctx, lambda args: seen.update(vars(args)))

    app = typer.Typer()
    callback(app, root)
    command(app, cmd, "cmd", options=[option("json", bool, False, "--json", help="json")], inject={"part": "P"})
    return app


def test_flags_reach_the_command_as_one_namespace():
    seen: dict = {}
    app = _probe_app(seen)
    assert run_app(app, ["--home", "/a", "-v", "cmd"], "probe") == 0
    assert seen["home"] == "/a" and seen["verbose"] == 1 and seen["part"] == "P"
    assert seen["tags"] is None and seen["n"] == 3 and seen["json"] is False  # declared defaults, not click's ()
    seen.clear()
    assert run_app(app, ["cmd", "--home", "/b", "--tag", "x", "--tag", "y", "--json"], "probe") == 0
    assert seen["home"] == "/b" and seen["tags"] == ["x", "y"] and seen["json"] is True
    seen.clear()
    assert run_app(app, ["--home", "/a", "cmd", "--home", "/b", "-n", "5"], "probe") == 0
    assert seen["home"] == "/b" and seen["n"] == 5  # the flag closer to the command wins


@pytest.mark.parametrize("where", ["before", "after"])
def test_kb_ingest_state_flags_before_or_after_the_command(where, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("VANER_HOME", raising=False)
    home = tmp_path / "home"
    argv = ["--home", str(home), "snapshots", "--json"] if where == "before" else ["snapshots", "--json", "--home",
                                                                                  str(home)]
    assert kb_cli.main(argv) == 0
    assert json.loads(capsys.readouterr().out) == [] and home.is_dir()


def test_repeated_flags_reach_the_train_config(vaner_home, tmp_path, capsys, monkeypatch):
    import types

    import tagger.train

    seen = {}

    def fake_train(config, *, extra_sentences=(), progress=None, resume=True, model=None):
        seen["config"] = config
        return types.SimpleNamespace(run_dir=tmp_path / "run", artifact_dir=tmp_path / "run" / "best",
                                     dev_metrics={"f1": 1.0}, steps=1, tokens_per_second=1.0)

    monkeypatch.setattr(tagger.train, "train", fake_train)
    base = ["train", "--no-register", "--json", "--output-dir", str(tmp_path / "run")]
    assert vaner_cli.main([*base, "--train", "a.tsv", "--type", "Gene", "--train", "b.tsv", "--type", "chemical",
                           "--mix-weight", "a.tsv=0.5", "--mix-weight", "b.tsv=2", "--epochs", "2",
                           "--lora-r", "8", "--instruction", "compact"]) == 0
    config = seen["config"]
    assert config.train_files == (("a.tsv", "Gene"), ("b.tsv", "Chemical"))
    assert config.mix_weights == (("a.tsv", 0.5), ("b.tsv", 2.0)) and config.epochs == 2 and config.model.lora_r == 8
    assert json.loads(capsys.readouterr().out)["steps"] == 1
    assert vaner_cli.main([*base, "--train", "a.tsv", "--train", "b.tsv", "--type", "Gene", "--type", "Gene",
                           "--type", "Gene"]) == 2
    assert "one --type for all" in capsys.readouterr().err
    assert vaner_cli.main([*base, "--train", "a.tsv", "--type", "Gene", "--mix-weight", "a.tsv"]) == 2
    assert "expected NAME=FACTOR" in capsys.readouterr().err


def test_shell_completion(monkeypatch, capsys):
    monkeypatch.setenv("_VANER_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", "vaner ex")
    monkeypatch.setenv("COMP_CWORD", "1")
    assert vaner_cli.main([]) == 0
    assert capsys.readouterr().out.split() == ["extract"]
    monkeypatch.setenv("COMP_WORDS", "vaner extract --input-format ")
    monkeypatch.setenv("COMP_CWORD", "3")
    assert vaner_cli.main([]) == 0
    assert capsys.readouterr().out.split() == ["text", "pubtator", "bioc"]
    monkeypatch.setenv("_KB_INGEST_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", "kb-ingest search --per")
    monkeypatch.setenv("COMP_CWORD", "2")
    assert kb_cli.main([]) == 0
    assert capsys.readouterr().out.split() == ["--per-concept"]


def _events(bars: ProgressBars, total: int | None) -> None:
    tracker = ProgressTracker("encode", total, bars, min_interval=0.0)
    for _ in range(3):
        tracker.advance(10)
    tracker.finish()
    bars.close()


def test_progress_lines_when_stderr_is_not_a_terminal(capsys):
    _events(ProgressBars(unit="row", interval=3600), total=30)
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == "" and len(lines) == 2  # the stage starting, then its last state at close
    assert lines[0].startswith("encode: 10/30 row (33%)") and "row/s, ETA " in lines[0]
    assert lines[1].startswith("encode: 30/30 row (100%)") and "ETA 0:00:00" in lines[1]
    _events(ProgressBars(enabled=False), total=30)
    assert capsys.readouterr() == ("", "")


def test_progress_bars_on_a_terminal(monkeypatch, capsys):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    monkeypatch.setattr("sys.stderr", tty)
    _events(ProgressBars(unit="row"), total=30)
    shown = tty.getvalue()
    assert "encode" in shown and "30/30" in shown and "row/s" in shown and "ETA" in shown
    assert capsys.readouterr().out == ""


def test_describe_without_a_total():
    from vaner.progress import ProgressEvent

    assert describe(ProgressEvent("index", 5, None, 2.5, None, "building"), "row") == \
        "index: 5 row, 2.5 row/s - building"


def test_a_resumed_run_rates_only_the_work_done_since_it_resumed(monkeypatch):
    clock = iter([100.0, 110.0])  # start, then 10 s later
    monkeypatch.setattr("vaner.progress.time.monotonic", lambda: next(clock))
    tracker = ProgressTracker("train", total=1000, done=900)
    tracker.done += 20
    ev = tracker.event()
    assert ev.done == 920 and ev.rate == pytest.approx(2.0) and ev.eta_seconds == pytest.approx(40.0)
