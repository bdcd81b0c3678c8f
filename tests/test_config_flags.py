"""Flags derived from the config dataclasses (issue 14.7): the default and the help of an
option are written once, in the field and its comment."""
from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

from tf_cme import config

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class _Cfg:
    rate: float = 0.5          # how fast
                               # (continued here)
    count: int = 3             # how many
    mode: Literal["a", "b"] = "a"   # which one
    on: bool = False           # switch it on
    items: list[int] = dataclasses.field(default_factory=lambda: [1, 2])   # some numbers
    plain: str = ""


def test_comments_are_read_and_joined():
    c = config.field_comments(_Cfg)
    assert c["rate"] == "how fast (continued here)" and c["count"] == "how many"
    assert c["mode"] == "which one" and "plain" not in c


def test_flags_types_defaults_and_precedence():
    p = argparse.ArgumentParser()
    flags = config.add_field_args(p, _Cfg, ["rate", "count", "mode", "on", "items", "plain"],
                                  count={"flag": "--n", "metavar": "N"})
    config.add_config_args(p)
    helps = {a.dest: a.help for a in p._actions}
    assert helps["rate"] == "how fast (continued here) (default: 0.5)"
    assert helps["on"].endswith("(default: off)") and helps["items"].endswith("(default: 1,2)")
    assert helps["plain"] == "plain (default: '')"
    args = p.parse_args([])
    assert config.resolve(_Cfg, args, config.explicit(args, flags)) == _Cfg()
    args = p.parse_args(["--n", "7", "--mode", "b", "--on", "--items", "4,5", "--set",
                         "rate=0.25", "--set", "count=9"])
    cfg = config.resolve(_Cfg, args, config.explicit(args, flags))
    assert (cfg.rate, cfg.count, cfg.mode, cfg.on, cfg.items) == (0.25, 7, "b", True, [4, 5])
    with pytest.raises(SystemExit):
        p.parse_args(["--mode", "c"])


@pytest.mark.parametrize("command,cls,field,flag", [
    ("predict", "tf_cme.prediction:PredictConfig", "hop", "--hop"),
    ("predict", "tf_cme.prediction:PredictConfig", "batch_size", "--batch-size"),
    ("evaluate-student", "tf_cme.evaluation.student_eval:StudentEvalConfig", "limit", "--limit"),
    ("benchmark-external", "tf_cme.evaluation.external:ExternalConfig", "folds", "--folds"),
    ("report", "tf_cme.evaluation.report:ReportConfig", "gallery_size", "--gallery-size"),
    ("export-model", "tf_cme.serving.config:ExportConfig", "serving_base", "--serving-base"),
    ("make-demo-data", "tf_cme.demo.corpus:DemoCorpusConfig", "size", "--size"),
    ("build-records emovox", "tf_cme.data.emovox:EmovoxBuildConfig", "order_seed",
     "--order-seed"),
    ("build-records ferplus", "tf_cme.data.ferplus:FerplusBuildConfig", "shard_size",
     "--shard-size"),
    ("build-records external", "tf_cme.data.external:ExternalBuildConfig", "layout",
     "--layout"),
    ("train-student", "tf_cme.training.student:StudentTrainConfig", "mini_epochs",
     "--mini-epochs"),
    ("train-teacher", "tf_cme.training.teacher:TeacherTrainConfig", "arch", "--arch"),
])
def test_command_help_shows_the_dataclass_default(command, cls, field, flag):
    import importlib
    mod, name = cls.split(":")
    default = getattr(getattr(importlib.import_module(mod), name)(), field)
    p = subprocess.run([sys.executable, "-m", "tf_cme.cli", *command.split(), "--help"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60,
                       env={"PYTHONPATH": str(ROOT), "COLUMNS": "1000", "PATH": "/usr/bin:/bin"})
    lines = p.stdout.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("options:"))
    i = next(i for i, ln in enumerate(lines) if i > start and ln.strip().startswith(flag))
    text = " ".join(" ".join(lines[i:i + 4]).split())   # help may start/wrap on the next lines
    assert f"(default: {default})" in text, text
