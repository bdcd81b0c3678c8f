"""The original's published files by name: a table, a local cache, ``pretrained(name)``.

:data:`PUBLISHED` is the one table of the files Albanie et al. (2018) released, with the
URLs the original's own MATLAB code fetches them from (protocol §4.1, §2.2):

- ``emoVoxCeleb/emoVoxZoo.m`` (albanie/mcnCrossModalEmotions), ``fetchModel``:
  ``http://www.robots.ox.ac.uk/~albanie/models/<subfolder>/<modelName>.mat`` with subfolder
  ``ferplus`` for ``resnet50-ferplus`` / ``senet50-ferplus`` and ``emovoxceleb`` for
  ``emovoxceleb-student``;
- ``emoVoxCeleb/fetch_emovoxceleb_imdb.m``, ``fetchImdbFromInternet``: the teacher logits
  ``http://www.robots.ox.ac.uk/~albanie/data/cross-modal-emotions/senet50-ferplus-logits.mat``;
  ``addFramesToImdb``: the dense face frames
  ``http://www.robots.ox.ac.uk/~vgg/research/CMBiometrics/data/dense-face-frames.tar.gz``;
- ``teacher/ferPlusZoo.m``: the VGGFace2 bases ``resnet50_ft-dag`` / ``senet50_ft-dag`` are
  read from a local folder (``data/models-import/vggface2_models``); no URL in the
  original's code, the MatConvNet model page (:data:`MCN_MODELS_PAGE`) lists them. They
  have no URL here: ``weights import NAME --from FILE``.

The cache (``$TF_CME_HOME``, default ``~/.cache/tf-cme``) holds ``files/<filename>`` (the
downloaded or imported file), ``models/<name>-<sha256[:16]>.keras`` (its conversion, keyed
by the source's sha256, redone when the converter code changed: :func:`converter_fingerprint`)
and ``index.json``. Nothing is downloaded except by an explicit
:func:`fetch` (``tf-cme weights fetch NAME``), as the original asks before downloading.
The hashes are not published, so the sha256 recorded when a name is first fetched or
imported is trusted (trust on first use) and checked on every later use; a file that no
longer matches is a :class:`ChecksumError`.

Nothing here imports TensorFlow at module level: ``weights list`` is instant.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

from ..provenance import imported
from ..utils import CmeError, atomic_path, file_lock, file_sha256, write_json

ALBANIE_MODELS = "http://www.robots.ox.ac.uk/~albanie/models"
ALBANIE_DATA = "http://www.robots.ox.ac.uk/~albanie/data/cross-modal-emotions"
DENSE_FACES_URL = ("http://www.robots.ox.ac.uk/~vgg/research/CMBiometrics/data/"
                   "dense-face-frames.tar.gz")
MCN_MODELS_PAGE = "http://www.robots.ox.ac.uk/~albanie/mcn-models.html"

KINDS = ("teacher", "base", "student", "logits", "data")
MODEL_KINDS = ("teacher", "base", "student")


class ChecksumError(CmeError):
    """A cached file whose sha256 is not the one recorded when it was first cached."""


@dataclasses.dataclass(frozen=True)
class Published:
    """One published file. ``converter`` names the importer that turns it into a
    ``.keras`` model (None for data): ``import_weights`` (tf_cme.models.importers, with
    ``base`` for the VGGFace2 trunks) or ``import_student`` (tf_cme.models.student_import).
    ``arch``: the registry model it converts into. ``use``: what to do with a data file."""
    name: str
    kind: str
    url: str | None
    filename: str
    converter: str | None
    arch: str | None
    description: str
    page: str | None = None
    base: bool = False
    use: str = ""


PUBLISHED: dict[str, Published] = {p.name: p for p in (
    Published("resnet50-ferplus", "teacher", f"{ALBANIE_MODELS}/ferplus/resnet50-ferplus.mat",
              "resnet50-ferplus.mat", "import_weights", "resnet50-ferplus",
              "FER+ teacher: ResNet-50 (VGGFace2 trunk) fine-tuned on FER+, 224x224"),
    Published("senet50-ferplus", "teacher", f"{ALBANIE_MODELS}/ferplus/senet50-ferplus.mat",
              "senet50-ferplus.mat", "import_weights", "senet50-ferplus",
              "FER+ teacher: SE-ResNet-50 (VGGFace2 trunk) fine-tuned on FER+, 224x224; "
              "the paper's teacher"),
    Published("resnet50-vggface2", "base", None, "resnet50_ft-dag.mat", "import_weights",
              "resnet50-ferplus", "VGGFace2 ResNet-50 base (8631 identities): the trunk, "
              "with a fresh 8-way classifier, for train-teacher", page=MCN_MODELS_PAGE,
              base=True),
    Published("senet50-vggface2", "base", None, "senet50_ft-dag.mat", "import_weights",
              "senet50-ferplus", "VGGFace2 SE-ResNet-50 base (8631 identities): the trunk, "
              "with a fresh 8-way classifier, for train-teacher", page=MCN_MODELS_PAGE,
              base=True),
    Published("emovoxceleb-student", "student",
              f"{ALBANIE_MODELS}/emovoxceleb/emovoxceleb-student.mat",
              "emovoxceleb-student.mat", "import_student", "emovoxceleb-student",
              "the distilled speech student (VGGVox-style CNN, 16 kHz waveform in)"),
    Published("senet50-ferplus-logits", "logits", f"{ALBANIE_DATA}/senet50-ferplus-logits.mat",
              "senet50-ferplus-logits.mat", None, None,
              "EmoVoxCeleb: senet50-ferplus's logits on every VoxCeleb1 face frame (imdb)",
              use="build-records emovox --logits-mat PATH --root VOXCELEB_TREE --out DIR"),
    Published("dense-face-frames", "data", DENSE_FACES_URL, "dense-face-frames.tar.gz",
              None, None, "VoxCeleb1 face frames at 1.6x crop (Learnable PINs), tar.gz",
              use="unpack, then build-records emovox --root VOXCELEB_TREE (frames beside "
                  "the wavs, see records/README.md)"),
)}


# --------------------------------------------------------------------------- the cache

def home() -> Path:
    """The cache folder: ``$TF_CME_HOME``, default ``~/.cache/tf-cme``."""
    env = os.environ.get("TF_CME_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tf-cme"


def _index_path() -> Path:
    return home() / "index.json"


def read_index() -> dict:
    path = _index_path()
    if not path.exists():
        return {}
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise CmeError(f"{path}: unreadable cache index ({e}); delete it to start over "
                       f"(the recorded sha256s are lost)") from None
    return data.get("files", {})


def _write_index(files: dict) -> None:
    write_json(_index_path(), {"version": 1, "trust": "sha256 recorded on first fetch or "
                               "import (trust on first use)", "files": files})


#: names whose lock this process holds (so fetch -> convert_cached does not lock itself out)
_HELD: set[str] = set()


@contextlib.contextmanager
def _name_lock(name: str):
    """Exclusive use of ``name``'s cache files (``locks/<name>.lock``) for a fetch, import,
    conversion or forget: a second process doing any of these to the same name is refused
    at once (instead of appending to the same partial download or replacing a file being
    hashed); another name is not held up."""
    if name in _HELD:
        yield
        return
    with file_lock(home() / "locks" / f"{name}.lock", wait=False,
                   what=f"{name} in the cache {home()} (a fetch, import, conversion or forget)"):
        _HELD.add(name)
        try:
            yield
        finally:
            _HELD.discard(name)


@contextlib.contextmanager
def _updating_index():
    """The index's ``files`` to change in place, read and written back under
    ``locks/index.lock``, so two processes recording different names never lose each
    other's record (read-modify-write); nothing is written if the block raises."""
    with file_lock(home() / "locks" / "index.lock", wait=True, what="the cache index"):
        files = read_index()
        before = json.dumps(files, sort_keys=True, default=str)
        yield files
        if json.dumps(files, sort_keys=True, default=str) != before:
            _write_index(files)


def entry(name: str) -> Published:
    if name not in PUBLISHED:
        raise CmeError(f"unknown published file {name!r}; known: {', '.join(PUBLISHED)}")
    return PUBLISHED[name]


def cached_file(name: str) -> Path:
    """Where ``name``'s file lives in the cache (it may not exist)."""
    return home() / "files" / entry(name).filename


def _keras_path(name: str, digest: str) -> Path:
    return home() / "models" / f"{name}-{digest[:16]}.keras"


def _absent(name: str) -> CmeError:
    p = entry(name)
    how = (f"run `tf-cme weights fetch {name}` (downloads {p.url})" if p.url else
           f"download {p.filename} yourself ({p.page}) and run `tf-cme weights import "
           f"{name} --from FILE`")
    return CmeError(f"{name} is not in the cache {home()}: {how}, or `tf-cme weights import "
                    f"{name} --from FILE` if you already have it")


def status(name: str) -> dict:
    """``{"cached": bool, "sha256": recorded or None, "path": cached file, "keras": path or
    None}`` without hashing anything (``list`` is instant even for large files)."""
    rec = read_index().get(name) or {}
    path = cached_file(name)
    keras = rec.get("keras") or {}
    kpath = _keras_path(name, rec["sha256"]) if rec.get("sha256") else None
    return {"cached": path.is_file() and bool(rec.get("sha256")), "sha256": rec.get("sha256"),
            "path": path, "keras": kpath if kpath and kpath.is_file() and keras else None,
            "source": rec.get("source")}


def verify(name: str) -> Path:
    """The cached file of ``name`` after checking its sha256 against the recorded one;
    CmeError if absent, :class:`ChecksumError` if it changed. Never downloads."""
    rec = read_index().get(name)
    path = cached_file(name)
    if not rec or not rec.get("sha256") or not path.is_file():
        raise _absent(name)
    got = file_sha256(path)
    if got != rec["sha256"]:
        raise ChecksumError(
            f"{path}: sha256 {got} is not the {rec['sha256']} recorded when {name} was first "
            f"cached (from {rec.get('source')}): the file changed on disk. Delete it with "
            f"`tf-cme weights forget {name}` and fetch or import it again")
    return path


def pretrained_path(name: str) -> Path:
    """The verified cached file of a published name (for data: logits, face frames)."""
    return verify(name)


# --------------------------------------------------------------------------- getting files

def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


class DownloadInterrupted(CmeError):
    """A transfer that stopped part-way; what arrived is kept for ``fetch`` to resume."""


def _partial_state(dest: Path) -> Path:
    """The record beside a partial download: the URL and the validators it came with."""
    return dest.with_name(dest.name + ".json")


def _resume_from(url: str, dest: Path) -> tuple[int, dict]:
    """(bytes already held, their record) for a partial ``dest`` of ``url``; (0, {}) when
    there is none or it is of another URL (then it is discarded)."""
    state = _partial_state(dest)
    try:
        rec = json.loads(state.read_text())
    except (OSError, ValueError):
        rec = {}
    if dest.is_file() and rec.get("url") == url:
        return dest.stat().st_size, rec
    for f in (dest, state):
        if f.exists():
            f.unlink()
    return 0, {}


def _download(url: str, dest: Path, *, quiet: bool = False) -> str:
    """Stream ``url`` (http, https or file) into ``dest``; returns the sha256 of the whole
    file. Progress (bytes of total, rate, ETA) goes to stderr.

    A transfer that breaks off keeps what arrived in ``dest`` with a record of the URL and
    the server's validators (ETag, Last-Modified, size) beside it
    (:class:`DownloadInterrupted`); the next call for the same URL asks for the rest
    (``Range``, with ``If-Range``) and appends it when the server answers 206 from that
    offset, and starts over when it answers 200 (no ranges, or the file changed), 416,
    or the URL differs. The sha256 check of the whole file stays the final word."""
    import hashlib
    import urllib.error
    import urllib.request
    quiet = quiet or os.environ.get("TF_CME_QUIET") == "1"
    have, rec = _resume_from(url, dest)
    req = urllib.request.Request(url)
    validator = rec.get("etag") or rec.get("last_modified")
    if have and validator and url.split(":", 1)[0] in ("http", "https"):
        # If-Range: the server sends the rest only if the file is still the one we hold
        # part of (else all of it, 200); without a validator a changed file could not be
        # told apart, so there is no resuming then
        req.add_header("Range", f"bytes={have}-")
        req.add_header("If-Range", validator)
    else:
        have = 0
    try:
        resp = urllib.request.urlopen(req, timeout=60)   # noqa: S310 - the user's own URL
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:                      # nothing to resume: start over
            for f in (dest, _partial_state(dest)):
                f.unlink(missing_ok=True)
            return _download(url, dest, quiet=quiet)
        raise CmeError(f"cannot download {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise CmeError(f"cannot download {url}: {getattr(e, 'reason', e)}") from None
    status_code = getattr(resp, "status", None) or resp.getcode() or 200
    span = resp.headers.get("Content-Range") or ""
    resumed = bool(have) and status_code == 206 and span.startswith(f"bytes {have}-")
    length = resp.headers.get("Content-Length")
    length = int(length) if length and length.isdigit() else None
    total = (have + length) if (resumed and length is not None) else (None if resumed else length)
    if resumed and "/" in span and span.rsplit("/", 1)[1].isdigit():
        total = int(span.rsplit("/", 1)[1])
    h = hashlib.sha256()
    if resumed:
        with open(dest, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if not quiet:
            print(f"{dest.name}: resuming at {_human(have)}", file=sys.stderr)
    else:
        have = 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_json(_partial_state(dest), {
        "url": url, "etag": resp.headers.get("ETag"),
        "last_modified": resp.headers.get("Last-Modified"), "size": total})
    with resp, open(dest, "ab" if resumed else "wb") as out:
        done, start, last = have, time.monotonic(), 0.0
        while True:
            try:
                chunk = resp.read(1 << 20)
            except OSError as e:
                raise DownloadInterrupted(
                    f"download of {url} failed after {_human(done)}: {e}; what arrived is "
                    f"kept: run fetch again to resume") from None
            if not chunk:
                break
            out.write(chunk)
            h.update(chunk)
            done += len(chunk)
            now = time.monotonic()
            if not quiet and (now - last >= 0.5):
                last = now
                rate = (done - have) / max(now - start, 1e-9)
                if total:
                    eta = (total - done) / rate if rate > 0 else 0
                    msg = (f"{_human(done)} / {_human(total)} ({100 * done / total:.0f}%) "
                           f"{_human(rate)}/s, ETA {eta:.0f} s")
                else:
                    msg = f"{_human(done)} {_human(rate)}/s (size unknown)"
                print(f"\r{dest.name}: {msg}   ", end="", file=sys.stderr, flush=True)
    if total is not None and done < total:
        raise DownloadInterrupted(f"download of {url} stopped at {done} of {total} bytes; "
                                  f"what arrived is kept: run fetch again to resume")
    if total is not None and done > total:
        raise CmeError(f"download of {url} gave {done} bytes, more than the {total} "
                       f"announced; nothing was kept, run fetch again")
    if not quiet:
        print(f"\r{dest.name}: {_human(done)} in {time.monotonic() - start:.1f} s" + " " * 20,
              file=sys.stderr)
    _partial_state(dest).unlink(missing_ok=True)
    return h.hexdigest()


def _record(name: str, path: Path, digest: str, source: str) -> dict:
    """Trust on first use: keep the first sha256; a different one later is refused (the
    new file is removed, the old record kept)."""
    with _updating_index() as files:
        rec = files.get(name)
        if rec and rec.get("sha256") and rec["sha256"] != digest:
            if path.exists():
                path.unlink()
            raise ChecksumError(
                f"{source}: sha256 {digest} differs from the {rec['sha256']} recorded when "
                f"{name} was first cached (from {rec.get('source')}); nothing was installed. "
                f"If the new file is the right one, `tf-cme weights forget {name}` first")
        files[name] = {**(rec or {}), "sha256": digest, "filename": entry(name).filename,
                       "source": source, "size": path.stat().st_size,
                       "recorded": (rec or {}).get("recorded") or time.strftime(
                           "%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        return files[name]


def _install(name: str, suffix: str, write, source: str) -> None:
    """Put ``name``'s file into the cache: ``write(part)`` fills a ``<file><suffix>`` beside
    it and returns its sha256, which is recorded (or checked: :func:`_record`) before the
    part is moved into place; on any failure nothing is left behind, except the part of a
    download that broke off (:class:`DownloadInterrupted`), which the next fetch resumes."""
    dest = cached_file(name)
    part = dest.with_name(dest.name + suffix)
    keep = False
    try:
        _record(name, part, write(part), source)
        os.replace(part, dest)
    except DownloadInterrupted:
        keep = True                          # the next fetch resumes from what arrived
        raise
    finally:
        if part.exists() and not keep:
            part.unlink()
            _partial_state(part).unlink(missing_ok=True)


def fetch(name: str, url: str | None = None, *, convert: bool = True, quiet: bool = False) -> dict:
    """Download ``name`` (from ``url`` or the table's URL) into the cache, record or check
    its sha256, and convert it to ``.keras`` if it is a model. Returns :func:`status` with
    ``downloaded`` (False: it was cached already and only verified).
    A name already cached (and matching its record) is not downloaded again."""
    p = entry(name)
    url = url or p.url
    if not url:
        raise CmeError(f"{name} has no public URL ({p.page or 'none known'}): download "
                       f"{p.filename} yourself and run `tf-cme weights import {name} --from "
                       f"FILE`, or pass --url")
    with _name_lock(name):
        st = status(name)
        downloaded = not st["cached"]
        if st["cached"]:
            verify(name)
        else:
            _install(name, ".download", lambda part: _download(url, part, quiet=quiet), url)
        if convert and p.converter:
            convert_cached(name)
    return {**status(name), "downloaded": downloaded}


def import_file(name: str, src: str | os.PathLike, *, convert: bool = True) -> dict:
    """Copy a file the user already has into the cache as ``name`` (recording or checking
    its sha256) and convert it if it is a model. Returns :func:`status`."""
    e = entry(name)
    src = Path(src)
    if not src.is_file():
        raise CmeError(f"{src}: no such file (weights import {name} --from FILE)")
    if e.converter and src.suffix.lower() != Path(e.filename).suffix.lower():
        raise CmeError(f"{src}: {name} is the published {e.filename} (MatConvNet .mat); "
                       f"convert other formats (e.g. pytorch-mcn .pth) with import-weights")

    def copy(part: Path) -> str:
        with atomic_path(part) as tmp:
            shutil.copyfile(src, tmp)
        return file_sha256(part)
    with _name_lock(name):
        _install(name, ".import", copy, src.resolve().as_uri())
        if convert and e.converter:
            convert_cached(name)
    return status(name)


def forget(name: str) -> list[Path]:
    """Remove ``name``'s cached file, a partial download, conversions and recorded sha256."""
    removed = []
    part = cached_file(name).with_name(cached_file(name).name + ".download")
    with _name_lock(name):
        for path in [cached_file(name), part, _partial_state(part),
                     *sorted((home() / "models").glob(f"{name}-*.keras"))]:
            if path.exists():
                path.unlink()
                removed.append(path)
        with _updating_index() as files:
            files.pop(name, None)
    return removed


# --------------------------------------------------------------------------- models

#: the modules whose code decides what a conversion holds (tf_cme/<path>)
CONVERTER_SOURCES = ("models/importers.py", "models/matconvnet.py", "models/student_import.py",
                     "models/resnet.py", "models/student.py", "models/io.py",
                     "audio/frontend.py", "matfile.py")


def converter_fingerprint(name: str) -> str:
    """sha256 over everything that makes ``name``'s ``.keras`` conversion besides its source
    file: the table entry's converter, arch and base, the code of :data:`CONVERTER_SOURCES`,
    Keras's and tf-cme's versions. A cached conversion with another fingerprint is redone."""
    import importlib.metadata

    from .. import __version__
    p = entry(name)
    h = hashlib.sha256(json.dumps([p.converter, p.arch, p.base, __version__,
                                   importlib.metadata.version("keras")]).encode())
    pkg = Path(__file__).resolve().parents[1]
    for rel in CONVERTER_SOURCES:
        h.update(rel.encode() + b"\0" + (pkg / rel).read_bytes())
    return h.hexdigest()


def _conversion_current(name: str, rec: dict, out: Path) -> bool:
    """Whether ``out`` is ``name``'s conversion by the current code (index record ``rec``);
    says why not when an older conversion is there."""
    krec = rec.get("keras") or {}
    if not (out.is_file() and krec.get("sha256") == file_sha256(out)):
        return False
    if krec.get("converter") == converter_fingerprint(name):
        return True
    if not os.environ.get("TF_CME_QUIET"):
        print(f"{name}: {out.name} was converted by another version of the importer; "
              f"converting again", file=sys.stderr)
    return False


def convert_cached(name: str) -> Path:
    """Convert ``name``'s verified cached file to ``.keras`` with metadata (the table's
    importer), once per source sha256. Returns the ``.keras`` path."""
    p = entry(name)
    if not p.converter:
        raise CmeError(f"{name} is {p.kind}, not a model: its file is "
                       f"{cached_file(name)} ({p.use})")
    with _name_lock(name):
        return _convert_locked(name, p)


def _convert_locked(name: str, p: Published) -> Path:
    src = verify(name)
    files = read_index()
    digest = files[name]["sha256"]
    out = _keras_path(name, digest)
    if _conversion_current(name, files[name], out):
        return out
    extra = {"provenance": imported(digest),
             "published": {"name": name, "kind": p.kind, "url": p.url,
                           "filename": p.filename, "source": files[name].get("source")}}
    if p.converter == "import_weights":
        from .importers import import_weights
        import_weights(src, out, arch=p.arch, base=p.base, width=None, extra_metadata=extra)
    elif p.converter == "import_student":
        from .student_import import import_student
        import_student(src, out, extra_metadata=extra)   # import-student's defaults
    else:   # pragma: no cover - the table names only these
        raise AssertionError(p.converter)
    krec = {"file": out.name, "sha256": file_sha256(out),
            "converter": converter_fingerprint(name)}
    with _updating_index() as files:
        if files.get(name, {}).get("sha256") != digest:   # pragma: no cover - name is locked
            raise CmeError(f"{name}: its cached file changed while it was being converted")
        files[name]["keras"] = krec
    return out


def pretrained(name: str, compile: bool = False):
    """The published model ``name`` as a Keras model, from the cache (never downloads).

    The cached source file's sha256 is checked against the one recorded on first fetch
    (:class:`ChecksumError` if it changed), so is the converted ``.keras``; a missing
    conversion is redone from the cached file. ``model.cme_metadata`` carries
    ``provenance: imported:<sha256>`` and ``published`` (name, url, file). CmeError
    naming ``tf-cme weights fetch NAME`` if the name is not cached."""
    p = entry(name)
    if p.kind not in MODEL_KINDS:
        raise CmeError(f"{name} is {p.kind}, not a model: use pretrained_path({name!r}) "
                       f"for its file ({p.use})")
    verify(name)
    rec = read_index()[name]
    out = _keras_path(name, rec["sha256"])
    krec = rec.get("keras") or {}
    if out.is_file() and krec.get("sha256") and file_sha256(out) != krec["sha256"]:
        raise ChecksumError(f"{out}: the converted model changed on disk since it was "
                            f"written (sha256 differs); `tf-cme weights forget {name}` and "
                            f"fetch or import again")
    if not out.is_file() or krec.get("converter") != converter_fingerprint(name):
        out = convert_cached(name)      # missing, or made by other converter code
    from .io import load_model
    return load_model(out, compile=compile)
