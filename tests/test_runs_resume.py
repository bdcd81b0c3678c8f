"""Run.start_or_resume: a resumed run refuses changed options, naming them."""
import json

import pytest

from tf_cme.runs import Run
from tf_cme.utils import CmeError


def test_resume_refuses_changed_keys_and_records_every_resume(tmp_path):
    run = Run.create(tmp_path / "r")
    cfg = {"lr": 0.1, "epochs": 3, "records": "a"}
    assert run.start_or_resume(cfg, sources={"records": "d1"}, started=False)["resumed"] is False
    # more epochs may change
    out = run.start_or_resume({**cfg, "epochs": 5}, sources={"records": "d1"},
                              may_change={"epochs"}, started=True)
    assert out == {"resumed": True, "changed": {"epochs": [3, 5]}}
    with pytest.raises(CmeError, match=r"lr: 0.1 -> 0.2"):
        run.start_or_resume({**cfg, "epochs": 5, "lr": 0.2}, sources={"records": "d1"},
                            may_change={"epochs"}, started=True)
    with pytest.raises(CmeError, match=r"sources.records"):
        run.start_or_resume({**cfg, "epochs": 5}, sources={"records": "d2"},
                            may_change={"epochs"}, started=True)
    out = run.start_or_resume({**cfg, "epochs": 5, "lr": 0.2}, sources={"records": "d1"},
                              may_change={"epochs"}, started=True, override=True)
    assert out["changed"] == {"lr": [0.1, 0.2]}
    lines = [json.loads(x) for x in run.resumes_path.read_text().splitlines()]
    assert [x["resumed"] for x in lines] == [False, True, True]
    assert lines[-1]["override"] is True
