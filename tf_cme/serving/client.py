"""Clients of TF Serving's Predict API, REST and gRPC, for the exported models.

Both clients return ``{output name: numpy array}`` (string outputs such as ``label``
as ``str``) and raise :class:`ServingError` (a :class:`~tf_cme.utils.CmeError`) with
the server's message when a request fails, e.g. ``INVALID_ARGUMENT: audio too short``.

REST (``http://HOST:8501``): ``POST /v1/models/<name>[/versions/N]:predict`` with a
JSON body in the row format (``{"signature_name", "instances": [...]}``) or the
columnar format (``{"signature_name", "inputs": {...}}``); bytes inputs (encoded WAV
or JPEG for ``from_wav`` / ``from_jpeg``) travel as ``{"b64": "..."}``.

gRPC (``HOST:8500``): ``tensorflow_serving.apis.prediction_service_pb2_grpc.
PredictionServiceStub.Predict`` with a ``PredictRequest`` whose inputs are
``tf.make_tensor_proto`` tensors.

The input key of each signature (``waveform``, ``audio_bytes``, ``images``,
``image_bytes``) is in :data:`tf_cme.serving.export.INPUT_KEYS`;
:func:`student_request` / :func:`teacher_request` build inputs from files.
"""
from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from .. import emotions
from ..utils import CmeError

DEFAULT_REST = "http://localhost:8501"
DEFAULT_GRPC = "localhost:8500"
MAX_MESSAGE_BYTES = 256 * 1024 * 1024

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".mp4", ".avi", ".mov", ".m4a", ".mkv"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif"}


class ServingError(CmeError):
    """A Predict request the server (or the network) refused, with its message."""


# --------------------------------------------------------------------------- JSON helpers

def _to_json(value):
    """numpy / bytes -> JSON-able (bytes as {"b64": ...}, as TF Serving's REST API wants)."""
    if isinstance(value, (bytes, bytearray)):
        return {"b64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, np.ndarray):
        if value.dtype.kind in ("S", "O", "U"):
            return [_to_json(v) for v in value.tolist()]
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _from_json(value) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind in ("U", "S"):
        return arr.astype(object)
    return arr


def _decode_strings(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == object or arr.dtype.kind == "S":
        return np.vectorize(lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes)
                            else b, otypes=[object])(arr)
    return arr


def _batch_size(inputs: dict) -> int:
    sizes = {len(v) for v in inputs.values()}
    if len(sizes) != 1:
        raise ServingError(f"inputs have different batch sizes: "
                           f"{ {k: len(v) for k, v in inputs.items()} }")
    return sizes.pop()


# --------------------------------------------------------------------------- REST

class RestClient:
    """TF Serving REST Predict client (urllib only)."""

    def __init__(self, model: str, url: str = DEFAULT_REST, *, version: int | None = None,
                 signature: str | None = None, timeout: float = 60.0):
        self.model, self.url = model, url.rstrip("/")
        if "://" not in self.url:
            self.url = "http://" + self.url
        self.version, self.signature, self.timeout = version, signature, timeout

    def model_url(self) -> str:
        u = f"{self.url}/v1/models/{self.model}"
        return u + (f"/versions/{self.version}" if self.version is not None else "")

    def predict_url(self) -> str:
        return self.model_url() + ":predict"

    def _request(self, url: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method="GET" if data is None else "POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", "replace")
            try:
                msg = json.loads(text).get("error", text)
            except json.JSONDecodeError:
                msg = text
            raise ServingError(f"{url}: HTTP {e.code}: {msg}") from None
        except (urllib.error.URLError, OSError) as e:
            raise ServingError(f"{url}: cannot reach the server ({e})") from None
        try:
            return json.loads(payload)
        except json.JSONDecodeError as e:
            raise ServingError(f"{url}: the answer is not JSON ({e})") from None

    def status(self) -> dict:
        """``GET /v1/models/<name>[/versions/N]`` (model version status)."""
        return self._request(self.model_url())

    def predict_body(self, inputs: dict, fmt: str = "instances") -> dict:
        body: dict = {}
        if self.signature:
            body["signature_name"] = self.signature
        if fmt == "instances":
            n = _batch_size(inputs)
            body["instances"] = [{k: _to_json(v[i]) for k, v in inputs.items()}
                                 for i in range(n)]
        elif fmt == "inputs":
            body["inputs"] = {k: _to_json(v) for k, v in inputs.items()}
        else:
            raise ValueError(f"REST format must be 'instances' or 'inputs', got {fmt!r}")
        return body

    def predict(self, inputs: dict, fmt: str = "instances") -> dict[str, np.ndarray]:
        """Send ``inputs`` ({name: batch}) in the row (``instances``) or columnar
        (``inputs``) format; returns {output name: numpy array [batch, ...]}."""
        answer = self._request(self.predict_url(), self.predict_body(inputs, fmt))
        if "error" in answer:
            raise ServingError(f"{self.predict_url()}: {answer['error']}")
        if fmt == "instances":
            preds = answer.get("predictions")
            if preds is None:
                raise ServingError(f"{self.predict_url()}: no 'predictions' in the answer")
            if preds and isinstance(preds[0], dict):
                return {k: _from_json([p[k] for p in preds]) for k in preds[0]}
            return {"output": _from_json(preds)}
        outs = answer.get("outputs")
        if outs is None:
            raise ServingError(f"{self.predict_url()}: no 'outputs' in the answer")
        if isinstance(outs, dict):
            return {k: _from_json(v) for k, v in outs.items()}
        return {"output": _from_json(outs)}


# --------------------------------------------------------------------------- gRPC

class GrpcClient:
    """TF Serving gRPC Predict client (tensorflow-serving-api ``PredictionServiceStub``)."""

    def __init__(self, model: str, target: str = DEFAULT_GRPC, *, version: int | None = None,
                 signature: str | None = None, timeout: float = 60.0):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc
        self.model, self.target = model, target
        self.version, self.signature, self.timeout = version, signature, timeout
        self._channel = grpc.insecure_channel(target, options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)])
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def request(self, inputs: dict):
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2
        req = predict_pb2.PredictRequest()
        req.model_spec.name = self.model
        if self.version is not None:
            req.model_spec.version.value = int(self.version)
        if self.signature:
            req.model_spec.signature_name = self.signature
        for k, v in inputs.items():
            if isinstance(v, (list, tuple)) and v and isinstance(v[0], (bytes, bytearray)):
                v = np.array(list(v), dtype=object)
            req.inputs[k].CopyFrom(tf.make_tensor_proto(v))
        return req

    def predict(self, inputs: dict) -> dict[str, np.ndarray]:
        import grpc
        import tensorflow as tf
        try:
            resp = self._stub.Predict(self.request(inputs), timeout=self.timeout)
        except grpc.RpcError as e:
            raise ServingError(f"{self.target} ({self.model}): {e.code().name}: "
                               f"{e.details()}") from None
        return {k: _decode_strings(tf.make_ndarray(v)) for k, v in resp.outputs.items()}


def make_client(protocol: str, model: str, address: str | None = None, **kwargs):
    """``RestClient`` or ``GrpcClient`` (``protocol`` = rest | grpc)."""
    if protocol == "rest":
        return RestClient(model, address or DEFAULT_REST, **kwargs)
    if protocol == "grpc":
        return GrpcClient(model, address or DEFAULT_GRPC, **kwargs)
    raise ValueError(f"protocol must be 'rest' or 'grpc', got {protocol!r}")


# --------------------------------------------------------------------------- requests from files

def student_request(path: str | os.PathLike, signature: str = "serving_default") -> dict:
    """Inputs for one audio/video file: ``from_wav`` sends the file's bytes (16-bit PCM
    WAV); any other signature sends the decoded 16 kHz mono waveform."""
    path = Path(path)
    if signature == "from_wav":
        try:
            return {"audio_bytes": np.array([path.read_bytes()], dtype=object)}
        except OSError as e:
            raise CmeError(f"{path}: cannot read ({e.strerror})") from None
    from ..audio.io import load_audio
    x, _ = load_audio(path, target_rate=16000, mono=True)
    return {"waveform": np.asarray(x, np.float32)[None, :]}


def teacher_request(paths, signature: str = "from_jpeg") -> dict:
    """Inputs for face images: ``from_jpeg`` sends the encoded bytes (one batch);
    ``serving_default`` sends one uint8 RGB image (decoded here with Pillow)."""
    paths = [Path(p) for p in paths]
    if signature == "from_jpeg":
        data = []
        for p in paths:
            try:
                data.append(p.read_bytes())
            except OSError as e:
                raise CmeError(f"{p}: cannot read ({e.strerror})") from None
        return {"image_bytes": np.array(data, dtype=object)}
    if len(paths) != 1:
        raise ValueError("serving_default takes one image per request (sizes differ)")
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(paths[0]) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as e:
        raise CmeError(f"{paths[0]}: not a readable image ({e})") from None
    return {"images": rgb[None]}


def summarise(outputs: dict, index: int = 0) -> dict:
    """``label``, ``probabilities`` (keyed by FER+ name when there are 8) and the model's
    ``provenance`` (None from a model exported before it was an output) of one row."""
    probs = np.asarray(outputs["probabilities"][index], dtype=float)
    label = outputs.get("label")
    label = str(label[index]) if label is not None else emotions.FERPLUS[int(probs.argmax())]
    if probs.shape[-1] == emotions.NUM_CLASSES and "ferplus_logits" not in outputs:
        p = {n: round(float(v), 6) for n, v in zip(emotions.FERPLUS, probs)}
    else:
        p = [round(float(v), 6) for v in probs]
    prov = outputs.get("provenance")
    prov = None if prov is None else _text(prov[index])
    return {"label": label, "probabilities": p, "provenance": prov}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def kind_of(path: str | os.PathLike) -> str:
    """"student" for audio/video files, "teacher" for images (by suffix)."""
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "teacher"
    return "student"


def score_files(files, client, kind: str, signature: str | None = None,
                fmt: str = "instances") -> list[dict]:
    """One Predict request per file; a result dict per file (``status`` ok / error)."""
    signature = signature or client.signature or (
        "serving_default" if kind == "student" else "from_jpeg")
    client.signature = signature
    results = []
    for f in files:
        res = {"file": str(f), "status": "ok", "message": "", "signature": signature}
        try:
            inputs = (student_request(f, signature) if kind == "student"
                      else teacher_request([f], signature))
            out = (client.predict(inputs, fmt=fmt) if isinstance(client, RestClient)
                   else client.predict(inputs))
            res.update(summarise(out))
        except CmeError as e:
            msg = str(e)
            res.update(status="error", message=msg if str(f) in msg else f"{f}: {msg}",
                       label=None, probabilities=None)
        results.append(res)
    return results
