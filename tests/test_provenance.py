"""Honest demo models (tf_cme.provenance): the demo corpus marks itself synthetic, record
manifests and trained models carry it, and predict, evaluation, export and the report say
"demo model: trained on synthetic voices; ..." for such a model; imported models carry
imported:<sha256>."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _student_records as recs  # noqa: E402
from test_student_import import random_student_params  # noqa: E402

from tf_cme import provenance  # noqa: E402
from tf_cme.demo.files import write_dagnn_mat  # noqa: E402
from tf_cme.utils import file_sha256  # noqa: E402

CAVEAT = "demo model: trained on synthetic voices; its labels mean nothing on real speech"


def test_demo_corpus_marks_its_folders_and_ferplus_records_inherit(demo_corpus, tmp_path):
    from tf_cme.data import ferplus
    for sub in ("", "ferplus", "voxceleb", "external", "videos"):
        assert (demo_corpus / sub / provenance.MARKER).is_file(), sub
    cfg = ferplus.FerplusBuildConfig(fer_csv=str(demo_corpus / "ferplus" / "fer2013.csv"),
                                     ferplus_csv=str(demo_corpus / "ferplus" / "fer2013new.csv"))
    ferplus.build(tmp_path / "demo-records", cfg)
    m = json.loads((tmp_path / "demo-records" / "manifest.json").read_text())
    assert m["synthetic"] is True
    # the same CSVs outside the corpus (as real data would be): no synthetic flag
    real = tmp_path / "real"
    real.mkdir()
    for f in ("fer2013.csv", "fer2013new.csv"):
        shutil.copy(demo_corpus / "ferplus" / f, real / f)
    ferplus.build(tmp_path / "real-records", ferplus.FerplusBuildConfig(
        fer_csv=str(real / "fer2013.csv"), ferplus_csv=str(real / "fer2013new.csv")))
    m = json.loads((tmp_path / "real-records" / "manifest.json").read_text())
    assert "synthetic" not in m


def test_demo_teacher_and_its_labels_are_demo(demo_corpus, tmp_path, monkeypatch, capsys):
    """FER+ records from the corpus -> a demo teacher (its evaluation says so); emovox
    records from the corpus labelled by it stay synthetic."""
    from tf_cme.commands import evaluate_teacher
    from tf_cme.data import emovox, ferplus
    from tf_cme.labelling import label_records
    from tf_cme.models.io import read_metadata
    from tf_cme.training.teacher import TeacherTrainConfig, train
    from tf_cme.utils import run_main
    ferplus.build(tmp_path / "fer", ferplus.FerplusBuildConfig(
        fer_csv=str(demo_corpus / "ferplus" / "fer2013.csv"),
        ferplus_csv=str(demo_corpus / "ferplus" / "fer2013new.csv"), workers=1))
    cfg = TeacherTrainConfig(records=str(tmp_path / "fer"), arch="resnet50-ferplus",
                             width=0.0625, input_size=32, batch_size=16, learning_rates=[0.01],
                             epochs_per_rate=[1], steps_per_epoch=1, sample_images=0)
    train(cfg, tmp_path / "teacher")
    md = read_metadata(tmp_path / "teacher" / "model.keras")
    assert md["provenance"] == "demo-synthetic" and md["synthetic"] is True
    monkeypatch.setattr(sys, "argv", ["evaluate_teacher.py", "--run", str(tmp_path / "teacher"),
                                      "--records", str(tmp_path / "fer"), "--splits", "val"])
    with pytest.raises(SystemExit) as e:
        run_main(evaluate_teacher.main)
    assert e.value.code == 0
    assert f"NOTE: {provenance.TEACHER_CAVEAT}" in capsys.readouterr().out
    met = json.loads((tmp_path / "teacher" / "metrics.json").read_text())
    assert met["caveat"] == provenance.TEACHER_CAVEAT

    emovox.build(tmp_path / "vox", emovox.EmovoxBuildConfig(root=str(demo_corpus / "voxceleb"),
                                                            workers=1))
    label_records(tmp_path / "vox", tmp_path / "labels", tmp_path / "teacher" / "model.keras",
                  batch_size=64)
    m = json.loads((tmp_path / "labels" / "manifest.json").read_text())
    assert m["synthetic"] is True and m["teacher"]["provenance"] == "demo-synthetic"


def _mark_synthetic(records_dir: Path) -> Path:
    """What build-records writes for records read from the demo corpus."""
    mpath = records_dir / "manifest.json"
    m = json.loads(mpath.read_text())
    m["synthetic"] = True
    mpath.write_text(json.dumps(m, indent=2))
    return records_dir


def _train(records, out):
    from tf_cme.training.student import StudentTrainConfig, train
    cfg = StudentTrainConfig(records=str(records), width=0.0625, mini_epochs=1, batch_size=8,
                             crop_samples=17760, epoch_fraction=0.5, val_fraction=0.0,
                             check_records=False)
    train(cfg, out)
    return out / "model.keras"


@pytest.fixture(scope="module")
def demo_student(tmp_path_factory):
    base = tmp_path_factory.mktemp("demo-student")
    records = _mark_synthetic(recs.synthetic(base / "labels", n_train=8, n_unheard=4))
    return _train(records, base / "run"), records


def test_demo_trained_student_predict_says_so(demo_student, tmp_path, monkeypatch, capsys):
    from tf_cme import prediction
    from tf_cme.commands import predict as predict_cmd
    from tf_cme.data.records import manifest_digest
    from tf_cme.models.io import read_metadata
    from tf_cme.utils import run_main
    model_path, records = demo_student
    md = read_metadata(model_path)
    assert md["provenance"] == "demo-synthetic" and md["synthetic"] is True
    assert md["trained_on"]["manifest_sha256"] == manifest_digest(records)
    wav = tmp_path / "voice.wav"
    t = np.arange(24000) / 16000
    sf.write(wav, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000)
    res = prediction.predict_files([wav], prediction.PredictConfig(model=str(model_path)))
    assert res[0]["status"] == "ok"
    assert res[0]["model"]["provenance"] == "demo-synthetic"
    assert res[0]["model"]["caveat"] == CAVEAT
    assert "warnings" not in res[0] or CAVEAT not in json.dumps(res[0]["warnings"])
    monkeypatch.setattr(sys, "argv", ["predict.py", "--model", str(model_path), str(wav)])
    with pytest.raises(SystemExit) as e:
        run_main(predict_cmd.main)
    out = capsys.readouterr()
    assert e.value.code == 0
    assert f"NOTE: {CAVEAT}" in out.err
    assert json.loads(out.out)[0]["model"]["caveat"] == CAVEAT


def test_demo_student_export_and_evaluation_say_so(demo_student, tmp_path):
    from tf_cme.evaluation import student_eval
    from tf_cme.models.io import load_model
    from tf_cme.serving import export as ex
    model_path, records = demo_student
    res = ex.export_model(load_model(model_path), tmp_path / "export", source=str(model_path))
    info = ex.read_export_metadata(res.path)
    assert info["provenance"] == "demo-synthetic" and info["caveat"] == CAVEAT
    m = student_eval.evaluate(model_path, records, tmp_path / "eval",
                              student_eval.StudentEvalConfig(batch_size=4))
    assert m["provenance"] == "demo-synthetic" and m["caveat"] == CAVEAT
    on_disk = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert on_disk["caveat"] == CAVEAT


def test_real_records_give_trained_provenance_no_caveat(tmp_path):
    from tf_cme.data.records import manifest_digest
    from tf_cme.models.io import read_metadata
    records = recs.synthetic(tmp_path / "labels", n_train=8, n_unheard=4)  # not marked
    md = read_metadata(_train(records, tmp_path / "run"))
    assert md["provenance"] == f"trained:{manifest_digest(records)}"
    assert md["synthetic"] is False and provenance.caveat(md) is None


def test_imported_student_carries_file_sha_and_no_caveat(tmp_path):
    from tf_cme import prediction
    from tf_cme.models.student_import import import_student
    params, layers = random_student_params(2)
    mat = write_dagnn_mat(tmp_path / "emovoxceleb-student.mat", params, layers)
    import_student(mat, tmp_path / "s.keras")
    wav = tmp_path / "v.wav"
    sf.write(wav, np.zeros(20000, np.float32) + 0.1 * np.sin(np.arange(20000) / 5), 16000)
    res = prediction.predict_files([wav], prediction.PredictConfig(model=str(tmp_path / "s.keras")))
    assert res[0]["model"]["provenance"] == f"imported:{file_sha256(mat)}"
    assert res[0]["model"]["caveat"] is None


def test_report_leads_with_the_caveat(demo_student, tmp_path):
    from tf_cme.evaluation import report, student_eval
    model_path, records = demo_student
    student_eval.evaluate(model_path, records, tmp_path / "eval",
                          student_eval.StudentEvalConfig(batch_size=4))
    report.write_report([tmp_path / "eval", model_path.parent], tmp_path / "report")
    md = next((tmp_path / "report").glob("*.md")).read_text()
    head = md.split("## Summary")[0]
    assert "**Demo model: trained on synthetic voices; its labels mean nothing on real " \
           "speech.**" in head
    html = next((tmp_path / "report").glob("*.html")).read_text()
    assert "<strong>Demo model: trained on synthetic voices" in html


def test_caveat_by_kind():
    assert provenance.caveat({"provenance": "demo-synthetic", "kind": "student"}) == CAVEAT
    assert "synthetic faces" in provenance.caveat({"provenance": "demo-synthetic",
                                                   "kind": "teacher"})
    assert provenance.caveat({"provenance": "imported:ab"}) is None
    assert provenance.model_info({})["provenance"] == "unknown"
