"""make demo's stage bookkeeping: complete stages are skipped, a stage whose commands
changed (another tf-cme version) runs again from scratch, and so does everything after it."""
from __future__ import annotations

import json

from tf_cme.demo import stages as demo


def _stages(arg_b: str, arg_a: str = "1"):
    return [demo.Stage("a", (("make_a.py", "--n", arg_a, "--out", "{out}/a"),), "first"),
            demo.Stage("b", (("make_b.py", "--k", arg_b, "--out", "{out}/b"),), "second")]


def test_changed_commands_rerun_a_stage_and_what_follows(tmp_path, monkeypatch, capsys):
    ran = []

    def fake_run(script, args):
        ran.append(script)
        d = tmp_path / ("a" if script == "make_a.py" else "b")
        d.mkdir(exist_ok=True)
        (d / "out.txt").write_text(" ".join(args))

    monkeypatch.setattr(demo, "_run_command", fake_run)
    monkeypatch.setattr(demo, "stages", lambda: _stages("x"))
    demo.run(tmp_path)
    assert ran == ["make_a.py", "make_b.py"]
    marker = json.loads((tmp_path / "b" / demo.MARKER).read_text())
    assert marker["commands"] == [["make_b.py", "--k", "x", "--out", f"{tmp_path}/b"]]
    ran.clear()
    demo.run(tmp_path)                                     # nothing changed: all skipped
    assert ran == []
    assert "complete, skipped" in capsys.readouterr().out
    (tmp_path / "b" / "stale.txt").write_text("from the old version")
    monkeypatch.setattr(demo, "stages", lambda: _stages("y"))
    demo.run(tmp_path)                                     # b's arguments changed
    assert ran == ["make_b.py"]
    assert "commands differ" in capsys.readouterr().out
    assert not (tmp_path / "b" / "stale.txt").exists()      # rebuilt from scratch
    assert (tmp_path / "b" / "out.txt").read_text().startswith("--k y")
    ran.clear()
    monkeypatch.setattr(demo, "stages", lambda: _stages("y", arg_a="2"))
    demo.run(tmp_path)                                     # a changed: a and b run again
    assert ran == ["make_a.py", "make_b.py"]
    ran.clear()
    (tmp_path / "a" / demo.MARKER).write_text(json.dumps({"seconds": 1.0}))   # old marker
    demo.run(tmp_path)
    assert ran == ["make_a.py", "make_b.py"]


def test_markers_are_keyed_by_inputs_and_versions(tmp_path, monkeypatch):
    """issue 12.1: a stage whose input (the stage before) was remade, or that another
    teacher preprocessing version made, runs again although its commands are the same."""
    ran = []
    monkeypatch.setattr(demo, "_run_command", lambda script, args: ran.append(script))
    monkeypatch.setattr(demo, "stages", lambda: _stages("x"))
    demo.run(tmp_path)
    ran.clear()
    # stage a remade elsewhere (its marker has another key): b's input changed
    m = json.loads((tmp_path / "a" / demo.MARKER).read_text())
    m["key"] = "0" * 64
    (tmp_path / "a" / demo.MARKER).write_text(json.dumps(m))
    demo.run(tmp_path)
    assert ran == ["make_a.py", "make_b.py"]
    ran.clear()
    import tf_cme.models.teacher as teacher_mod
    monkeypatch.setattr(teacher_mod, "PREPROCESSING_VERSION", 999)
    demo.run(tmp_path)
    assert ran == ["make_a.py", "make_b.py"]
