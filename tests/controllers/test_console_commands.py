"""Every console command is declared once (handler, help, completion) and
the rack's views are one table: help has a usage line and an example for
each command, completion offers each command's own words (the remote
console asks the same code), `show` lists exactly the rack's views, and a
bug inside a command is not passed off as a user error."""
import io
from pathlib import Path

import pytest

from controllers.operator.console import SHOW_FORMATS, SvpConsole, console_commands
from controllers.rack.storage import SHOW_VIEWS, StorageRack

CFG = str(Path(__file__).resolve().parents[2] / "configs" / "two-site.toml")


@pytest.fixture(scope="module")
def console():
    with StorageRack(CFG, backend="inline") as rack:
        yield SvpConsole(rack, stdout=io.StringIO())


def test_every_command_has_help_with_usage_and_example():
    for name in console_commands():
        if name in ("help", "exit"):   # cmd.Cmd's own; an alias of quit
            continue
        doc = getattr(SvpConsole, f"do_{name}").__doc__ or ""
        assert doc.split()[0] == name, f"{name}: help must open with its usage line"
        if name not in ("quit", "exit"):
            assert "Example:" in doc, f"{name}: help has no example"


def test_completion_comes_from_the_declaration(console):
    assert console.complete_line("pai", "pai") == ["paircreate", "pairdisplay", "pairresync", "pairsplit"]
    assert "--method" in console.complete_line("pairresync g0 --", "--")
    assert "stage-new" in console.complete_line("pairresync g0 --method st", "st")
    assert console.complete_line("show sa", "sa") == ["save-area"]
    assert "recovery.timeout" in console.complete_line("run until recovery.", "recovery.")
    assert console.complete_line("nonsense ", "") == []


def test_show_lists_exactly_the_rack_views(console):
    out = console.stdout
    console.onecmd("show nothing")
    assert "usage: show " in out.getvalue()
    usage = out.getvalue().strip().splitlines()[-1].split("usage: show ", 1)[1]
    assert [w.split()[0] for w in usage.split("|")] == list(SHOW_VIEWS)
    assert set(SHOW_FORMATS) <= set(SHOW_VIEWS)
    for what in SHOW_VIEWS:
        console.onecmd(f"show {what} 0")
    assert "Traceback" not in out.getvalue()


def test_a_bug_in_a_command_is_not_a_user_error(console, monkeypatch):
    def broken(*a, **k):
        raise KeyError("a bug")
    monkeypatch.setattr(console.rack, "show", broken)
    with pytest.raises(KeyError):
        console.onecmd("show time")


def test_emu_run_stops_loudly_on_a_bug(tmp_path, capsys, monkeypatch):
    """`emu run`: a handler bug (ActorFailed) is exit 70 with one line naming
    the actor, the event and the time, not a bad-input exit 2."""
    from controllers import cli
    from emu.backends.base import ActorFailed

    def broken(self, duration_ns):
        raise ActorFailed("main.dkc", "message 'io' from 'main.host'", 1_000, "KeyError: 'x'")
    monkeypatch.setattr(StorageRack, "run", broken)
    script = tmp_path / "s.emu"
    script.write_text("run 1ms\n")
    code = cli.main(["run", CFG, str(script), "--backend", "inline"])
    err = capsys.readouterr().err
    assert code == 70, err
    assert "internal error" in err and "main.dkc" in err and "message 'io'" in err, err
