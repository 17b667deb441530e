"""metakd.plots on fake results: the demo's grouped accuracy chart is a PNG, written atomically, with a bar
per method and scenario; and every `metakd demo` option explains itself in --help."""
import struct

from metakd.plots import method_label, plot_demo_accuracy

PNG = b"\x89PNG\r\n\x1a\n"


def _row(learner, acc, ci, weak, strong, host=None):
    config = {"learner": {"name": learner, "options": {"host": host} if host else {}}}
    return {"learner": learner, "config": config, "accuracy": acc, "ci95": ci, "episodes": 600,
            "scenarios": {"weak support": {"accuracy": weak, "ci95": ci}, "strong support": {"accuracy": strong, "ci95": ci}}}


def test_demo_accuracy_figure_is_a_png_with_every_method_and_scenario(tmp_path, monkeypatch):
    rows = [_row("maml", 0.83, 0.009, 0.816, 0.72), _row("msd", 0.853, 0.009, 0.84, 0.76, host="maml"),
            _row("protonet", 0.885, 0.0065, 0.862, 0.728)]
    assert [method_label(r) for r in rows] == ["maml", "msd+maml", "protonet"]
    import matplotlib.axes

    drawn = []
    real_bar = matplotlib.axes.Axes.bar
    monkeypatch.setattr(matplotlib.axes.Axes, "bar",
                        lambda self, x, h, *a, **k: drawn.append((k.get("label"), list(h), list(k["yerr"])))
                        or real_bar(self, x, h, *a, **k))
    path = plot_demo_accuracy(rows, tmp_path / "sub" / "accuracy.png")
    data = path.read_bytes()
    assert path == tmp_path / "sub" / "accuracy.png" and data.startswith(PNG)
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    assert width > 300 and height > 300
    assert [d[0] for d in drawn] == ["maml", "msd+maml", "protonet"]
    assert [round(v, 1) for v in drawn[1][1]] == [85.3, 84.0, 76.0]  # standard, weak, strong, in %
    assert [round(v, 2) for v in drawn[2][2]] == [0.65] * 3  # 95% CI as error bars
    assert not list((tmp_path / "sub").glob("*.tmp*"))  # no temporary left behind


def test_every_demo_option_has_help_text():
    from metakd.cli import build_parser

    parser = build_parser()
    demo = parser._subparsers._group_actions[0].choices["demo"]
    options = [a for a in demo._actions if a.option_strings and a.dest != "help"]
    assert len(options) >= 6
    assert [a.option_strings[0] for a in options if not a.help] == []
