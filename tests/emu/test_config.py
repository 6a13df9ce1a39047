"""Config loading: the shipped generic configs load and predict their result;
each kind of mistake gives a ConfigError whose one-line message names the
file, the key (and the line for TOML syntax); the CLI turns it into exit 2."""

from __future__ import annotations

import pytest

from emu.config import load_config
from emu.params import ConfigError
from emu.rack import Rack
from emu.toy import mm1_expected_ns

GOOD = """\
[rack]
name = "t"
seed = 3

[[actor]]
name = "server0"
class = "emu.toy:Server"
service = "10us"

[[actor]]
name = "client0"
class = "emu.toy:Client"
server = "server0"
requests = 20

[[link]]
a = "client0"
b = "server0"
latency = "10us"
"""


def mutate(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new, 1)


def too_many_actors() -> str:
    lines = ["[rack]", 'name = "big"']
    for i in range(513):
        lines += ["[[actor]]", f'name = "s{i}"', 'class = "emu.toy:Server"']
    return "\n".join(lines) + "\n"


# (case id, config text, key the message must name, words it must contain)
BAD = [
    ("unknown key in rack", mutate('seed = 3', 'seed = 3\ncolour = "red"'), "rack.colour", "unknown key"),
    ("unknown top-level table", GOOD + "\n[extra]\nx = 1\n", "extra", "unknown key"),
    ("unknown actor param", mutate('service = "10us"', 'service = "10us"\nspeed = 3'), "server0.speed", "unknown parameter"),
    ("bad unit in link", mutate('latency = "10us"', 'latency = "10 parsecs"'), "link[0].latency", "unit"),
    ("bad unit in param", mutate('service = "10us"', 'service = "10kg"'), "server0.service", "unit"),
    ("missing required param", mutate('server = "server0"\n', ''), "client0.server", "required"),
    ("unknown actor class", mutate('class = "emu.toy:Server"', 'class = "emu.toy:Nope"'), "actor[0].class", "no actor class"),
    ("not an actor class", mutate('class = "emu.toy:Server"', 'class = "emu.toy:toy_spec"'), "actor[0].class", "not an Actor"),
    ("zero latency", mutate('latency = "10us"', 'latency = "0us"'), "link[0].latency", "> 0"),
    ("negative latency", mutate('latency = "10us"', 'latency = "-5us"'), "link[0].latency", "duration"),
    ("missing latency", mutate('latency = "10us"\n', ''), "link[0].latency", "required"),
    ("link to nobody", mutate('b = "server0"', 'b = "ghost"'), "link[0]", "not an actor"),
    ("seed out of range", mutate('seed = 3', 'seed = -1'), "rack.seed", "seed"),
    ("seed not an integer", mutate('seed = 3', 'seed = "three"'), "rack.seed", "seed"),
    ("param below minimum", mutate('requests = 20', 'requests = -4'), "client0.requests", "minimum"),
    ("duplicate actor", mutate('name = "client0"', 'name = "server0"'), "actor[1].name", "duplicate"),
    ("too many actors", too_many_actors(), "actor", "exceed the limit"),
]


@pytest.mark.parametrize("text, key, words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_names_file_and_key(tmp_path, text, key, words):
    """load_config raises ConfigError; its one line says file, key and what is wrong."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    msg = str(err.value)
    assert "\n" not in msg, msg
    assert msg.startswith(f"{cfg}"), msg
    assert f": {key}: " in msg, msg
    assert words in msg, msg


def test_bad_toml_syntax_names_line(tmp_path):
    """A TOML syntax error names file and line."""
    cfg = tmp_path / "syntax.toml"
    cfg.write_text(mutate('requests = 20', 'requests = = 20'))
    line = GOOD.splitlines().index("requests = 20") + 1
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert str(err.value).startswith(f"{cfg}:{line}: TOML syntax"), str(err.value)


def test_missing_file(tmp_path):
    """A missing file is a ConfigError naming it, not a traceback."""
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml")


def test_good_config_loads(tmp_path):
    """The mutation base itself is valid (so each failure above is the mutation's)."""
    cfg = tmp_path / "good.toml"
    cfg.write_text(GOOD)
    spec = load_config(cfg)
    assert [a.name for a in spec.actors] == ["server0", "client0"] and spec.seed == 3


@pytest.mark.parametrize("seed", [1, 5])
def test_shipped_toy_config_same_trace_both_backends(seed):
    """configs/toy.toml answers every request, the same way in both backends."""
    hashes = []
    for backend in ("inline", "processes"):
        with Rack(load_config("configs/toy.toml", seed=seed), backend=backend) as rack:
            rack.run_until_idle()
            assert rack.query("client1", {})["done"] == 200, f"seed={seed}"
            hashes.append(rack.finish_trace())
    assert hashes[0] == hashes[1], f"seed={seed}: {hashes}"


def test_shipped_mm1_config_meets_its_prediction():
    """configs/mm1.toml: mean response time within 2 % of 1/(mu - lambda) = 50 us."""
    with Rack(load_config("configs/mm1.toml"), backend="inline", record_trace=False) as rack:
        rack.run_until_idle()
        mean = rack.query("station", {})["mean_rt_ns"]
    assert abs(mean / mm1_expected_ns(0.8) - 1) <= 0.02, mean


# -- the CLI path ---------------------------------------------------------------------
@pytest.mark.parametrize("text, key, words", [BAD[i][1:] for i in (0, 3, 5, 6, 8, 12)],
                         ids=[BAD[i][0] for i in (0, 3, 5, 6, 8, 12)])
def test_cli_bad_config_exit_2_one_line(tmp_path, capsys, text, key, words):
    """`emu run BAD.toml SCRIPT` exits 2 with one line naming file and key."""
    from controllers import cli
    cfg, script = tmp_path / "bad.toml", tmp_path / "s.emu"
    cfg.write_text(text)
    script.write_text("run 1ms\n")
    code = cli.main(["run", str(cfg), str(script)])
    err = capsys.readouterr().err.strip()
    assert code == 2, (code, err)
    assert len(err.splitlines()) == 1, err
    assert str(cfg) in err and key in err, err


def test_cli_bad_syntax_exit_2_with_line(tmp_path, capsys):
    """`emu run` on bad TOML syntax: exit 2, file:line in the message."""
    from controllers import cli
    cfg, script = tmp_path / "bad.toml", tmp_path / "s.emu"
    cfg.write_text("[rack\nname = 1\n")
    script.write_text("run 1ms\n")
    code = cli.main(["run", str(cfg), str(script)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and f"{cfg}:1" in err, (code, err)


# --- fuzzing the storage config loader ---------------------------------------------------
from pathlib import Path  # noqa: E402

from hypothesis import given, settings as hsettings, strategies as hst  # noqa: E402

_TWO_SITE = (Path(__file__).resolve().parents[2] / "configs" / "two-site.toml").read_text()
_VALUES = hst.one_of(hst.integers(-10**12, 10**12), hst.floats(allow_nan=True), hst.booleans(),
                     hst.sampled_from(['"16KiB"', '"3D+1P"', '"1Gb/s"', '"-5us"', '"9999TiB"', '"x"', '""',
                                       '"0D+1P"', '"1e400s"', "[]", "{}", '"main"', '"remote"']))


@hsettings(max_examples=300, deadline=None)
@given(line=hst.integers(0, len(_TWO_SITE.splitlines()) - 1), value=_VALUES)
def test_mutated_storage_config_gives_a_clear_error_or_a_valid_rack(tmp_path_factory, line, value):
    """Replace the value of one line of the default config with garbage: the
    loader either accepts it or raises ConfigError naming the file; never
    another exception."""
    from controllers.rack.layout import load_storage_config
    from emu.params import ConfigError
    lines = _TWO_SITE.splitlines()
    if "=" in lines[line] and not lines[line].lstrip().startswith("#"):
        key = lines[line].split("=", 1)[0]
        lines[line] = f"{key}= {str(value).lower() if isinstance(value, bool) else value}"
    path = tmp_path_factory.mktemp("cfg") / "mutated.toml"
    path.write_text("\n".join(lines) + "\n")
    try:
        spec, _layout = load_storage_config(path)
    except ConfigError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
    else:
        assert spec.actors, "a valid rack has actors"
