"""Each protocol constant has one definition (tf_cme/audio/constants.py); the rest import it."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1] / "tf_cme"


def _definitions(pattern):
    hits = []
    for p in ROOT.rglob("*.py"):
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if re.match(pattern, line.strip()):
                hits.append(f"{p.relative_to(ROOT)}:{i}")
    return hits


def test_one_definition_each():
    for name in ("SAMPLE_RATE", "TRAIN_CROP_SAMPLES", "MAX_TRAIN_SAMPLES", "MAX_SAMPLES", "CROP_SAMPLES",
                 "TEACHER_MEAN"):
        files = [h.split(":")[0] for h in _definitions(rf"^{name}\s*=")]
        assert files in ([], ["audio/constants.py"]), (name, files)
    # no default or assignment spelling 64384 / 318400 / 4.024 outside the constants module
    for lit in ("64384", "318400", "4.024"):
        hits = [h for h in _definitions(rf"^[\w.]+(\s*:\s*[\w\[\], |]+)?\s*=\s*{re.escape(lit)}\b")
                if not h.startswith("audio/constants")]
        assert not hits, (lit, hits)
    assert [h.split(":")[0] for h in _definitions(r"^def (file_)?sha256\(")] in (
        ["utils.py", "models/importers.py"], ["models/importers.py", "utils.py"])
    assert [h.split(":")[0] for h in _definitions(r"^def softmax\(")] == ["metrics/classification.py"]
    assert [h.split(":")[0] for h in _definitions(r"^def write_wav\(")] == ["audio/io.py"]
    assert len(_definitions(r"^def read_mat73\(")) == 1


def test_values_agree():
    from tf_cme.audio import constants, frontend
    from tf_cme.data import pipelines, schema
    from tf_cme.prediction import PredictConfig
    assert schema.SAMPLE_RATE == frontend.SAMPLE_RATE == constants.SAMPLE_RATE == 16000
    assert pipelines.CROP_SAMPLES == frontend.TRAIN_CROP_SAMPLES == 64384
    assert schema.MAX_SAMPLES == 318400
    assert PredictConfig().window == 64384 / 16000
