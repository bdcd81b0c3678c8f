"""The published-weights table and cache (tf_cme/models/pretrained.py, `weights` command),
end to end from file:// (and loopback http) origins: no network is ever reached."""
from __future__ import annotations

import http.server
import sys
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _np_resnet as ref  # noqa: E402
from test_student_import import random_student_params  # noqa: E402

from tf_cme.demo.files import write_dagnn_mat  # noqa: E402
from tf_cme.utils import CmeError, file_sha256  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "cache"
    monkeypatch.setenv("TF_CME_HOME", str(h))
    monkeypatch.setenv("TF_CME_QUIET", "1")
    return h


@pytest.fixture
def no_network(monkeypatch):
    """Any urlopen is a test failure (list and pretrained must never download)."""
    def refuse(*a, **k):
        raise AssertionError(f"network access attempted: {a}")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def _cmd(monkeypatch, capsys, *args):
    from tf_cme.commands import weights
    from tf_cme.utils import run_main
    monkeypatch.setattr(sys, "argv", ["tf-cme weights", *args])
    with pytest.raises(SystemExit) as e:
        run_main(weights.main)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def _student_mat(path, seed=1):
    params, layers = random_student_params(seed)
    return write_dagnn_mat(path, params, layers)


def _waves():
    rng = np.random.default_rng(2)
    t = np.arange(20000) / 16000
    return np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * rng.standard_normal(t.size)]
                    ).astype(np.float32)


def test_table_has_the_originals_urls():
    from tf_cme.models.pretrained import PUBLISHED
    assert PUBLISHED["senet50-ferplus"].url == \
        "http://www.robots.ox.ac.uk/~albanie/models/ferplus/senet50-ferplus.mat"
    assert PUBLISHED["resnet50-ferplus"].url.endswith("/models/ferplus/resnet50-ferplus.mat")
    assert PUBLISHED["emovoxceleb-student"].url == \
        "http://www.robots.ox.ac.uk/~albanie/models/emovoxceleb/emovoxceleb-student.mat"
    assert PUBLISHED["senet50-ferplus-logits"].url == ("http://www.robots.ox.ac.uk/~albanie/"
                                                       "data/cross-modal-emotions/"
                                                       "senet50-ferplus-logits.mat")
    assert PUBLISHED["dense-face-frames"].url.endswith("CMBiometrics/data/dense-face-frames.tar.gz")
    for base in ("resnet50-vggface2", "senet50-vggface2"):
        assert PUBLISHED[base].url is None and PUBLISHED[base].base
        assert PUBLISHED[base].page.endswith("mcn-models.html")
    assert {p.kind for p in PUBLISHED.values()} == {"teacher", "base", "student", "logits",
                                                    "data"}


def test_fetch_file_url_then_list_and_pretrained_offline(home, tmp_path, monkeypatch, capsys):
    from tf_cme.models import pretrained
    from tf_cme.models.io import load_model
    from tf_cme.models.student_import import import_student
    origin = _student_mat(tmp_path / "origin" / "emovoxceleb-student.mat")
    sha = file_sha256(origin)
    code, out, _ = _cmd(monkeypatch, capsys, "list")
    assert code == 0 and "emovoxceleb-student" in out
    row = next(l for l in out.splitlines() if l.startswith("emovoxceleb-student"))
    assert row.split()[2] == "no"

    code, out, err = _cmd(monkeypatch, capsys, "fetch", "emovoxceleb-student",
                          "--url", origin.as_uri())
    assert code == 0, err
    assert sha in out
    assert (home / "files" / "emovoxceleb-student.mat").read_bytes() == origin.read_bytes()

    def offline(*a, **k):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    code, out, _ = _cmd(monkeypatch, capsys, "list")
    row = next(l for l in out.splitlines() if l.startswith("emovoxceleb-student"))
    assert row.split()[1:4] == ["student", "yes", sha]

    model = pretrained("emovoxceleb-student")
    assert model.cme_metadata["provenance"] == f"imported:{sha}"
    assert model.cme_metadata["published"]["name"] == "emovoxceleb-student"
    direct = import_student(origin, tmp_path / "direct.keras")
    x = _waves()
    np.testing.assert_array_equal(np.asarray(model(x)),
                                  np.asarray(load_model(tmp_path / "direct.keras")(x)))
    assert direct.cme_metadata["provenance"] == f"imported:{sha}"
    # the conversion is cached, keyed by the source sha256
    kerases = list((home / "models").glob("emovoxceleb-student-*.keras"))
    assert [k.name for k in kerases] == [f"emovoxceleb-student-{sha[:16]}.keras"]
    # a second fetch of a cached name does not download (urlopen refuses here)
    code, out, err = _cmd(monkeypatch, capsys, "fetch", "emovoxceleb-student")
    assert code == 0, err
    assert "already cached: verified, not downloaded" in out


def test_tampered_cache_is_a_checksum_error(home, tmp_path, no_network):
    from tf_cme.models import pretrained
    from tf_cme.models.pretrained import ChecksumError, import_file
    src = _student_mat(tmp_path / "emovoxceleb-student.mat", seed=4)
    import_file("emovoxceleb-student", src)
    cached = home / "files" / "emovoxceleb-student.mat"
    with open(cached, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ChecksumError, match=r"emovoxceleb-student\.mat: sha256 [0-9a-f]{64} "
                                            r"is not the [0-9a-f]{64} recorded"):
        pretrained("emovoxceleb-student")
    # the converted model is checked too
    import_file("emovoxceleb-student", src)           # same file: the record stands
    keras = next((home / "models").glob("*.keras"))
    with open(keras, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ChecksumError, match="converted model changed"):
        pretrained("emovoxceleb-student")


def test_first_sha_is_trusted_later_files_must_match(home, tmp_path, monkeypatch, capsys):
    from tf_cme.models.pretrained import ChecksumError, fetch, read_index
    a = _student_mat(tmp_path / "a" / "emovoxceleb-student.mat", seed=5)
    b = _student_mat(tmp_path / "b" / "emovoxceleb-student.mat", seed=6)
    fetch("emovoxceleb-student", a.as_uri(), convert=False)
    first = read_index()["emovoxceleb-student"]["sha256"]
    (home / "files" / "emovoxceleb-student.mat").unlink()      # lost, re-fetched elsewhere
    with pytest.raises(ChecksumError, match="differs from the .* recorded"):
        fetch("emovoxceleb-student", b.as_uri(), convert=False)
    assert not (home / "files" / "emovoxceleb-student.mat").exists()
    assert read_index()["emovoxceleb-student"]["sha256"] == first
    code, _, err = _cmd(monkeypatch, capsys, "import", "emovoxceleb-student", "--from", str(b))
    assert code == 1 and "differs from the" in err
    code, out, _ = _cmd(monkeypatch, capsys, "forget", "emovoxceleb-student")
    assert code == 0 and "recorded sha256" in out
    code, out, err = _cmd(monkeypatch, capsys, "import", "emovoxceleb-student", "--from", str(b))
    assert code == 0, err
    assert read_index()["emovoxceleb-student"]["sha256"] == file_sha256(b)


def test_import_from_file_teacher_equals_direct_import(home, tmp_path, monkeypatch, capsys,
                                                       no_network):
    from tf_cme.models import pretrained
    from tf_cme.models.importers import import_weights
    from tf_cme.models.io import load_model
    width = 1 / 16          # read back from the file's stem (64 x width filters)
    src = write_dagnn_mat(tmp_path / "mine.mat", ref.random_params(False, width, seed=7))
    code, out, err = _cmd(monkeypatch, capsys, "import", "resnet50-ferplus", "--from", str(src))
    assert code == 0, err
    model = pretrained("resnet50-ferplus")
    md = model.cme_metadata
    assert md["options"]["width"] == width and md["input_size"] == 224
    assert md["provenance"] == f"imported:{file_sha256(src)}"
    import_weights(src, tmp_path / "direct.keras", arch="resnet50-ferplus", width=width)
    x = np.random.default_rng(0).integers(0, 256, (2, 48, 48, 1), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(model(x, training=False)),
                                  np.asarray(load_model(tmp_path / "direct.keras")(x, training=False)))


def test_absent_names_and_data_kinds_say_what_to_run(home, tmp_path, no_network,
                                                     monkeypatch, capsys):
    from tf_cme.models import pretrained, pretrained_path
    with pytest.raises(CmeError, match="tf-cme weights fetch senet50-ferplus"):
        pretrained("senet50-ferplus")
    with pytest.raises(CmeError, match=r"weights import senet50-vggface2 --from FILE.*"
                                       r"mcn-models\.html|mcn-models\.html.*--from FILE"):
        pretrained("senet50-vggface2")
    with pytest.raises(CmeError, match="unknown published file 'nope'"):
        pretrained("nope")
    with pytest.raises(CmeError, match="is logits, not a model.*--logits-mat"):
        pretrained("senet50-ferplus-logits")
    pth = tmp_path / "senet50_ferplus_dag.pth"
    pth.write_bytes(b"torch")
    code, _, err = _cmd(monkeypatch, capsys, "import", "senet50-ferplus", "--from", str(pth))
    assert code == 1 and "with import-weights" in err and not (home / "files").exists()
    code, _, err = _cmd(monkeypatch, capsys, "fetch", "senet50-vggface2")
    assert code == 1 and "no public URL" in err and "--from FILE" in err
    # data: fetched and verified, not converted
    blob = tmp_path / "senet50-ferplus-logits.mat"
    blob.write_bytes(b"not really a mat file, only bytes to cache")
    code, out, err = _cmd(monkeypatch, capsys, "import", "senet50-ferplus-logits",
                          "--from", str(blob))
    assert code == 0, err
    assert pretrained_path("senet50-ferplus-logits").read_bytes() == blob.read_bytes()
    assert not (home / "models").exists()
    code, _, err = _cmd(monkeypatch, capsys, "import", "senet50-ferplus-logits",
                        "--from", str(tmp_path / "missing.mat"))
    assert code == 2 and "no such file" in err


def test_fetch_over_loopback_http_with_content_length(home, tmp_path):
    from tf_cme.models.pretrained import fetch, pretrained_path
    serve = tmp_path / "srv"
    serve.mkdir()
    (serve / "dense-face-frames.tar.gz").write_bytes(bytes(range(256)) * 5000)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(serve), **k)

        def log_message(self, *a):
            pass
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/dense-face-frames.tar.gz"
        st = fetch("dense-face-frames", url)
        with pytest.raises(CmeError, match="cannot download"):
            fetch("senet50-ferplus", url.replace("dense-face-frames", "absent"))
    finally:
        httpd.shutdown()
    assert st["cached"] and st["sha256"] == file_sha256(serve / "dense-face-frames.tar.gz")
    assert pretrained_path("dense-face-frames").stat().st_size == 256 * 5000
    assert not list((home / "files").glob("*.download*"))


def test_list_is_instant_without_tensorflow(tmp_path):
    import subprocess
    probe = ("import sys\nfrom tf_cme import cli\ntry:\n    cli.main(['weights', 'list'])\n"
             "except SystemExit as e:\n    print('CODE', e.code)\n"
             "print('TF', 'tensorflow' in sys.modules)\n")
    env = {"PYTHONPATH": str(ROOT), "TF_CME_HOME": str(tmp_path / "h"), "PATH": "/usr/bin:/bin"}
    p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=120)
    assert "CODE 0" in p.stdout and "TF False" in p.stdout, p.stderr
    assert "senet50-ferplus " in p.stdout and not (tmp_path / "h").exists()


def test_conversion_is_redone_when_the_converter_changes(home, tmp_path, no_network,
                                                         monkeypatch, capsys):
    """The cached .keras is keyed by the source sha256 and the converter's fingerprint:
    the same code reuses it; other converter code, or an older cache whose record has no
    fingerprint, converts again (and says so)."""
    import importlib
    import json
    pt = importlib.import_module("tf_cme.models.pretrained")   # the module, not the function
    monkeypatch.delenv("TF_CME_QUIET")
    src = _student_mat(tmp_path / "emovoxceleb-student.mat", seed=6)
    pt.import_file("emovoxceleb-student", src)
    out = next((home / "models").glob("*.keras"))
    rec = pt.read_index()["emovoxceleb-student"]["keras"]
    assert rec["converter"] == pt.converter_fingerprint("emovoxceleb-student")
    mtime = out.stat().st_mtime_ns
    pt.pretrained("emovoxceleb-student")                # same code: reused
    assert out.stat().st_mtime_ns == mtime
    capsys.readouterr()
    monkeypatch.setattr(pt, "converter_fingerprint", lambda name: "0" * 64)
    pt.pretrained("emovoxceleb-student")                # other code: converted again
    assert out.stat().st_mtime_ns != mtime
    assert "converted by another version of the importer; converting again" in \
        capsys.readouterr().err
    assert pt.read_index()["emovoxceleb-student"]["keras"]["converter"] == "0" * 64
    # an index written before fingerprints existed: converted again
    index = home / "index.json"
    data = json.loads(index.read_text())
    del data["files"]["emovoxceleb-student"]["keras"]["converter"]
    index.write_text(json.dumps(data))
    mtime = out.stat().st_mtime_ns
    pt.pretrained("emovoxceleb-student")
    assert out.stat().st_mtime_ns != mtime
    # the fingerprint follows the converter's code
    monkeypatch.undo()
    monkeypatch.setenv("TF_CME_HOME", str(home))
    fp = pt.converter_fingerprint("emovoxceleb-student")
    assert fp != pt.converter_fingerprint("resnet50-ferplus")   # other converter / arch
    monkeypatch.setattr(pt, "CONVERTER_SOURCES", pt.CONVERTER_SOURCES[:-1])
    assert pt.converter_fingerprint("emovoxceleb-student") != fp


def _range_server(data: bytes, *, ranges: bool):
    """A loopback server of one file that breaks its first answer off half-way; with
    ``ranges`` it honours Range (206 + Content-Range), else it always sends everything."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            srv = self.server
            rng = self.headers.get("Range")
            srv.seen.append((self.path, rng, self.headers.get("If-Range")))
            start = int(rng.split("=")[1].split("-")[0]) if (rng and ranges) else 0
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.send_header("ETag", '"v1"')
            self.end_headers()
            body = data[start:]
            if srv.drop:
                srv.drop = False
                self.wfile.write(body[: len(body) // 2])
                self.close_connection = True
                return
            self.wfile.write(body)

        def log_message(self, *a):
            pass
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.seen, httpd.drop = [], True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


@pytest.mark.parametrize("ranges", [True, False])
def test_a_broken_download_resumes_or_starts_over(home, ranges):
    from tf_cme.models.pretrained import fetch, pretrained_path
    data = bytes(range(256)) * 4000 + b"tail"
    httpd = _range_server(data, ranges=ranges)
    url = f"http://127.0.0.1:{httpd.server_address[1]}/dense-face-frames.tar.gz"
    part = home / "files" / "dense-face-frames.tar.gz.download"
    try:
        with pytest.raises(CmeError, match="run fetch again to resume"):
            fetch("dense-face-frames", url)
        assert part.stat().st_size == len(data) // 2            # what arrived is kept
        st = fetch("dense-face-frames", url)
    finally:
        httpd.shutdown()
    half = len(data) // 2
    # the second request asks for the rest, naming the file it holds part of
    assert httpd.seen == [("/dense-face-frames.tar.gz", None, None),
                          ("/dense-face-frames.tar.gz", f"bytes={half}-", '"v1"')]
    assert pretrained_path("dense-face-frames").read_bytes() == data   # resumed or afresh
    import hashlib
    assert st["sha256"] == hashlib.sha256(data).hexdigest()
    assert not list((home / "files").glob("*.download*"))


def test_a_partial_download_of_another_url_is_not_resumed(home):
    from tf_cme.models.pretrained import fetch, forget, pretrained_path
    data = bytes(range(256)) * 1000
    httpd = _range_server(data, ranges=True)
    httpd.drop = False
    port = httpd.server_address[1]
    part = home / "files" / "dense-face-frames.tar.gz.download"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 100)
    (part.parent / (part.name + ".json")).write_text(
        '{"url": "http://127.0.0.1:1/elsewhere.tar.gz", "etag": "\\"v1\\""}')
    try:
        fetch("dense-face-frames", f"http://127.0.0.1:{port}/dense-face-frames.tar.gz")
    finally:
        httpd.shutdown()
    assert httpd.seen == [("/dense-face-frames.tar.gz", None, None)]
    assert pretrained_path("dense-face-frames").read_bytes() == data
    # forget removes a partial download too
    part.write_bytes(b"y")
    forget("dense-face-frames")
    assert not list((home / "files").glob("*"))


def _holder(home, code):
    """A second process running ``code`` on the same cache; returns once it prints ready."""
    import subprocess

    from _proc import PY, env
    proc = subprocess.Popen([PY, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=env(TF_CME_HOME=str(home), PYTHONPATH=str(ROOT)), text=True)
    assert proc.stdout.readline().strip() == "ready", "the holder process did not start"
    return proc


def test_a_name_in_use_by_another_process_is_refused(home, tmp_path):
    """A second fetch/import/forget of a name another process is working on is refused at
    once, naming the holder (it would append to the same partial download); other names
    are not held up, and the lock goes with its holder."""
    from tf_cme.models.pretrained import forget, import_file, pretrained_path
    src = tmp_path / "frames.tar.gz"
    src.write_bytes(b"frames" * 100)
    logits = tmp_path / "logits.mat"
    logits.write_bytes(b"logits" * 10)
    proc = _holder(home, "import importlib, sys\nP = importlib.import_module('tf_cme.models.pretrained')\n"
                         "with P._name_lock('dense-face-frames'):\n"
                         "    print('ready', flush=True); sys.stdin.read()\n")
    try:
        for attempt in (lambda: import_file("dense-face-frames", src),
                        lambda: forget("dense-face-frames")):
            with pytest.raises(CmeError, match=rf"dense-face-frames in the cache .* in use by "
                                               rf"another process \(pid {proc.pid}, lock "):
                attempt()
        assert not (home / "files" / "dense-face-frames.tar.gz").exists()
        import_file("senet50-ferplus-logits", logits)                  # another name: fine
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    import_file("dense-face-frames", src)                              # released on exit
    assert pretrained_path("dense-face-frames").read_bytes() == src.read_bytes()
    assert pretrained_path("senet50-ferplus-logits").read_bytes() == logits.read_bytes()


def test_two_processes_recording_different_names_keep_both_records(home, tmp_path):
    """The index is read, changed and written under a lock: a record written by another
    process while this one waits is not overwritten by a stale read."""
    from tf_cme.models.pretrained import import_file, read_index
    src = tmp_path / "frames.tar.gz"
    src.write_bytes(b"frames" * 100)
    proc = _holder(home, "import importlib, time\nP = importlib.import_module('tf_cme.models.pretrained')\n"
                         "with P._updating_index() as files:\n"
                         "    print('ready', flush=True); time.sleep(1.0)\n"
                         "    files['senet50-ferplus-logits'] = {'sha256': '0' * 64}\n")
    try:
        import_file("dense-face-frames", src)          # waits for the other's write
    finally:
        assert proc.wait(timeout=60) == 0
    files = read_index()
    assert files["senet50-ferplus-logits"] == {"sha256": "0" * 64}
    assert files["dense-face-frames"]["sha256"] == file_sha256(src)
