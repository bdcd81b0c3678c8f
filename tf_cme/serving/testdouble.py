"""A loopback TEST DOUBLE of TF Serving's Predict APIs (REST and gRPC). NOT TF Serving.

:class:`ServingTestDouble` exists so that the clients in :mod:`tf_cme.serving.client`
can be tested without the ``tensorflow_model_server`` binary. It imitates only the
parts of TF Serving's public API that the clients use:

- REST: ``POST /v1/models/<name>[/versions/<N>]:predict`` with a JSON body in the row
  (``instances``) or columnar (``inputs``) format, ``signature_name`` optional;
  ``{"b64": ...}`` for string inputs; answers ``{"predictions": [...]}`` /
  ``{"outputs": {...}}``, or HTTP 400 / 404 with ``{"error": "..."}``;
  ``GET /v1/models/<name>[/versions/<N>]`` (version status).
- gRPC: ``tensorflow.serving.PredictionService/Predict`` (``PredictRequest`` ->
  ``PredictResponse``; errors as ``INVALID_ARGUMENT`` / ``NOT_FOUND``).

Each request runs the named signature of the SavedModel (``tf.saved_model.load``) in
this process. Batching, model config files, version policies, metadata and
classification APIs, and performance are not imitated: the integration test with a
real ``tensorflow_model_server`` covers those where the binary exists. Binds to
127.0.0.1 on free ports only.
"""
from __future__ import annotations

import base64
import json
import re
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from .export import versions

_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?(:predict)?/?$")

#: Largest REST request body accepted (bytes); larger ones get HTTP 413.
MAX_BODY_BYTES = 64 * 1024 * 1024
#: Seconds a REST connection may wait for the rest of a request before HTTP 408.
READ_TIMEOUT_S = 10.0
#: Pending connections the REST listener queues (the stdlib default of 5 resets
#: connections under a few dozen concurrent clients).
LISTEN_BACKLOG = 256


class RequestError(Exception):
    def __init__(self, message: str, status: int = 400, code: str = "INVALID_ARGUMENT"):
        super().__init__(message)
        self.status, self.code = status, code


class ServingTestDouble:
    """Test double (NOT TF Serving) serving ``{name: base_path}`` SavedModels on loopback.

    ``base_path`` holds integer version folders, as TF Serving expects. Use as a context
    manager; ``rest_url`` (``http://127.0.0.1:PORT``) and ``grpc_target``
    (``127.0.0.1:PORT``) are set once started.
    """

    def __init__(self, models: dict[str, str | Path], host: str = "127.0.0.1",
                 rest_port: int = 0, grpc_port: int = 0,
                 read_timeout_s: float = READ_TIMEOUT_S, max_body_bytes: int = MAX_BODY_BYTES):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the test double only binds to loopback")
        self.models = {n: Path(p) for n, p in models.items()}
        self.host = host
        self.rest_port, self.grpc_port = int(rest_port), int(grpc_port)   # 0: a free port
        self.read_timeout_s, self.max_body_bytes = float(read_timeout_s), int(max_body_bytes)
        self._loaded: dict[tuple[str, int], object] = {}
        self._lock = threading.Lock()
        self._http = None
        self._grpc = None
        self.rest_url = self.grpc_target = None

    # ------------------------------------------------------------------ models
    def _model(self, name: str, version: int | None):
        import tensorflow as tf
        if name not in self.models:
            raise RequestError(f"Servable not found for request: Latest({name})", 404,
                               "NOT_FOUND")
        vs = versions(self.models[name])
        if not vs:
            raise RequestError(f"no versions of {name}", 404, "NOT_FOUND")
        v = vs[-1] if version is None else int(version)
        if v not in vs:
            raise RequestError(f"Servable not found for request: Specific({name}, {v})", 404,
                               "NOT_FOUND")
        with self._lock:
            if (name, v) not in self._loaded:
                self._loaded[(name, v)] = tf.saved_model.load(str(self.models[name] / str(v)))
            return self._loaded[(name, v)], v

    def run(self, name: str, version: int | None, signature: str | None,
            inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
        """Run ``signature`` of the model on numpy inputs; RequestError on bad requests."""
        import tensorflow as tf
        loaded, v = self._model(name, version)
        signature = signature or "serving_default"
        if signature not in loaded.signatures:
            raise RequestError(f"Serving signature name: \"{signature}\" not found in "
                               f"signature def", 400)
        fn = loaded.signatures[signature]
        specs = fn.structured_input_signature[1]
        missing = sorted(set(specs) - set(inputs))
        extra = sorted(set(inputs) - set(specs))
        if missing or extra:
            raise RequestError(f"input keys: missing {missing}, unknown {extra}; the "
                               f"signature takes {sorted(specs)}")
        tensors = {}
        for k, spec in specs.items():
            arr = _as_input(k, inputs[k], spec.dtype.as_numpy_dtype
                            if spec.dtype != tf.string else object)
            if not spec.shape.is_compatible_with(arr.shape):
                raise RequestError(f"input {k!r}: shape {list(arr.shape)} does not match "
                                   f"{spec.shape}")
            try:
                tensors[k] = tf.constant(arr, dtype=spec.dtype)
            except (ValueError, TypeError) as e:
                raise RequestError(f"input {k!r}: cannot convert to {spec.dtype.name} ({e})")
        try:
            out = fn(**tensors)
        except tf.errors.OpError as e:
            raise RequestError(_short(e.message)) from None
        return {k: t.numpy() for k, t in out.items()}, v

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "ServingTestDouble":
        self._start_http()
        self._start_grpc()
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._grpc is not None:
            self._grpc.stop(grace=None)
            self._grpc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _start_http(self) -> None:
        double = self

        class Handler(BaseHTTPRequestHandler):
            timeout = double.read_timeout_s     # socket timeout: a short body cannot hang

            def log_message(self, *args):       # quiet
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                m = _PATH.match(self.path)
                if not m or m.group(3):
                    return self._send(404, {"error": f"Malformed request: GET {self.path}"})
                try:
                    name, v = m.group(1), m.group(2)
                    _, version = double._model(name, int(v) if v else None)
                except RequestError as e:
                    return self._send(e.status, {"error": str(e)})
                self._send(200, {"model_version_status": [{
                    "version": str(version), "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""}}]})

            def do_POST(self):
                m = _PATH.match(self.path)
                if not m or not m.group(3):
                    return self._send(404, {"error": f"Malformed request: POST {self.path}"})
                try:
                    raw = self.headers.get("Content-Length")
                    if raw is None or not raw.strip().isdigit():
                        raise RequestError(f"bad or missing Content-Length: {raw!r}")
                    n = int(raw)
                    if n > double.max_body_bytes:
                        self.close_connection = True
                        raise RequestError(f"request body of {n} bytes exceeds the limit "
                                           f"of {double.max_body_bytes}", 413)
                    try:
                        data = self.rfile.read(n)
                    except TimeoutError:
                        self.close_connection = True
                        raise RequestError(f"timed out after {double.read_timeout_s:g} s reading "
                                           f"the request body", 408)
                    if len(data) != n:
                        self.close_connection = True
                        raise RequestError(f"request body is {len(data)} bytes, "
                                           f"Content-Length said {n}")
                    try:
                        body = json.loads(data or b"{}")
                    except json.JSONDecodeError as e:
                        raise RequestError(f"JSON Parse error: {e}")
                    except RecursionError:
                        raise RequestError("JSON Parse error: nested too deeply")
                    answer = double._rest_predict(m.group(1), m.group(2), body)
                except RequestError as e:
                    return self._send(e.status, {"error": str(e)})
                except RecursionError:
                    return self._send(400, {"error": "input nested too deeply"})
                except Exception as e:      # noqa: BLE001 - answer, never drop the connection
                    return self._send(500, {"error": f"{type(e).__name__}: {e}"})
                self._send(200, answer)

        class Server(ThreadingHTTPServer):
            request_queue_size = LISTEN_BACKLOG

        self._http = Server((self.host, self.rest_port), Handler)
        self._http.daemon_threads = True
        port = self._http.server_address[1]
        self.rest_url = f"http://{self.host}:{port}"
        threading.Thread(target=self._http.serve_forever, daemon=True,
                         name="serving-test-double-rest").start()

    def _rest_predict(self, name: str, version: str | None, body: dict) -> dict:
        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object")
        signature = body.get("signature_name")
        if ("instances" in body) == ("inputs" in body):
            raise RequestError("Missing 'inputs' or 'instances' key" if "inputs" not in body
                               else "Both 'inputs' and 'instances' given")
        loaded, _ = self._model(name, int(version) if version else None)
        sig = loaded.signatures.get(signature or "serving_default")
        keys = sorted(sig.structured_input_signature[1]) if sig is not None else []
        if "instances" in body:
            rows = body["instances"]
            if not isinstance(rows, list) or not rows:
                raise RequestError("'instances' must be a non-empty list")
            if all(isinstance(r, dict) and "b64" not in r for r in rows):
                names = set(rows[0])
                if any(set(r) != names for r in rows):
                    raise RequestError("every instance must have the same named inputs")
                inputs = {k: _decode_column([r[k] for r in rows]) for k in names}
            elif len(keys) == 1:
                inputs = {keys[0]: _decode_column(rows)}
            else:
                raise RequestError(f"unnamed instances need a single-input signature; "
                                   f"this one takes {keys}")
        else:
            cols = body["inputs"]
            if isinstance(cols, dict):
                inputs = {k: _decode_column(v) for k, v in cols.items()}
            elif len(keys) == 1:
                inputs = {keys[0]: _decode_column(cols)}
            else:
                raise RequestError(f"unnamed inputs need a single-input signature; "
                                   f"this one takes {keys}")
        outputs, _ = self.run(name, int(version) if version else None, signature, inputs)
        outputs = {k: _json_column(v) for k, v in outputs.items()}
        if "instances" in body:
            n = len(next(iter(outputs.values())))
            if len(outputs) == 1:
                return {"predictions": next(iter(outputs.values()))}
            return {"predictions": [{k: v[i] for k, v in outputs.items()} for i in range(n)]}
        return {"outputs": outputs if len(outputs) > 1 else next(iter(outputs.values()))}

    def _start_grpc(self) -> None:
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        double = self

        class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
            def Predict(self, request, context):
                spec = request.model_spec
                version = spec.version.value if spec.HasField("version") else None
                try:
                    inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
                    outputs, v = double.run(spec.name, version, spec.signature_name or None,
                                            inputs)
                except RequestError as e:
                    code = getattr(grpc.StatusCode, e.code, grpc.StatusCode.INVALID_ARGUMENT)
                    context.abort(code, str(e))
                resp = predict_pb2.PredictResponse()
                resp.model_spec.name = spec.name
                resp.model_spec.version.value = v
                resp.model_spec.signature_name = spec.signature_name or "serving_default"
                for k, arr in outputs.items():
                    resp.outputs[k].CopyFrom(tf.make_tensor_proto(arr))
                return resp

        big = 256 * 1024 * 1024
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=[
            ("grpc.max_send_message_length", big), ("grpc.max_receive_message_length", big)])
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(),
                                                                            self._grpc)
        port = self._grpc.add_insecure_port(f"{self.host}:{self.grpc_port}")
        if port == 0:
            raise OSError(f"cannot bind the gRPC port {self.host}:{self.grpc_port}")
        self._grpc.start()
        self.grpc_target = f"{self.host}:{port}"


def _decode_column(values):
    """JSON values -> numpy, with {"b64": ...} -> bytes (TF Serving's binary encoding)."""
    def dec(v):
        if isinstance(v, dict):
            if set(v) != {"b64"}:
                raise RequestError(f"a JSON object as a value must be {{\"b64\": ...}}, "
                                   f"got keys {sorted(v)}")
            try:
                return base64.b64decode(v["b64"], validate=True)
            except (ValueError, TypeError) as e:
                raise RequestError(f"bad base64 value ({e})")
        if isinstance(v, list):
            return [dec(x) for x in v]
        return v
    decoded = dec(values)
    if _has_bytes(decoded):
        arr = np.empty(len(decoded), dtype=object)
        arr[:] = decoded
        return arr
    try:
        return np.asarray(decoded)
    except ValueError as e:       # ragged lists
        raise RequestError(f"inputs of different lengths cannot form one tensor ({e})")


def _as_input(key: str, value, dtype) -> np.ndarray:
    """``value`` as a numpy array of ``dtype`` (``object``: a string input), refusing what
    a plain cast would silently change: strings and booleans for numbers, numbers for
    strings, non-integral or out-of-range values for integer inputs (uint8 pixels of 300,
    -1 or 12.7 are errors, not 44, 255 or 12)."""
    if dtype is object:
        arr = np.asarray(value, dtype=object)
        bad = [v for v in arr.reshape(-1)[:1000] if not isinstance(v, (bytes, str))]
        if bad:
            raise RequestError(f"input {key!r} takes strings (bytes: {{\"b64\": ...}} in "
                               f"JSON), got {type(bad[0]).__name__} {bad[0]!r}")
        return arr
    try:
        arr = np.asarray(value)
    except ValueError as e:
        raise RequestError(f"input {key!r}: not a tensor ({e})")
    if arr.dtype.kind not in "iuf":
        raise RequestError(f"input {key!r} takes {np.dtype(dtype).name} numbers, got "
                           f"{'strings' if arr.dtype.kind in 'USO' else arr.dtype.name}")
    want = np.dtype(dtype)
    if want.kind in "iu":
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
                raise RequestError(f"input {key!r} takes {want.name} integers; got "
                                   f"non-integral values")
        info = np.iinfo(want)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise RequestError(f"input {key!r}: values must lie in [{info.min}, {info.max}] "
                               f"({want.name}); got {arr.min()}..{arr.max()}")
    return arr.astype(want)


def _has_bytes(v) -> bool:
    if isinstance(v, bytes):
        return True
    return isinstance(v, list) and bool(v) and _has_bytes(v[0])


def _json_column(arr: np.ndarray):
    if arr.dtype == object or arr.dtype.kind == "S":
        return np.vectorize(lambda b: b.decode("utf-8") if isinstance(b, bytes) else b,
                            otypes=[object])(arr).tolist()
    return arr.tolist()


def _short(message: str) -> str:
    """The useful line of a TF error ("assertion failed: [...]" or the first line)."""
    for line in message.splitlines():
        line = line.strip()
        if line.startswith("assertion failed:"):
            m = re.match(r"assertion failed: \[(.*?)\]", line)
            return m.group(1).strip() if m else line
        if "non-finite" in line or "Tensor had" in line:
            return line
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    return lines[-1] if lines else message


def models_in(export_dir: str | Path) -> dict[str, Path]:
    """``{name: base path}`` of every model folder with versions under an export folder."""
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise FileNotFoundError(f"{export_dir}: no such export folder")
    return {p.name: p for p in sorted(export_dir.iterdir()) if p.is_dir() and versions(p)}


def main(argv=None) -> int:
    """``python -m tf_cme.serving.testdouble EXPORT_DIR``: run the TEST DOUBLE (NOT TF
    Serving) on 127.0.0.1 until interrupted, to try the clients without the server."""
    import argparse
    import time
    p = argparse.ArgumentParser(
        prog="python -m tf_cme.serving.testdouble",
        description="A loopback TEST DOUBLE of TF Serving's Predict API (REST and gRPC) "
                    "for the SavedModels of an export folder. Not TF Serving: no "
                    "batching, no model config, one process.")
    p.add_argument("export_dir", help="export folder (DIR/<model>/<version>/)")
    p.add_argument("--rest-port", type=int, default=8501, help="REST port (default 8501)")
    p.add_argument("--grpc-port", type=int, default=8500, help="gRPC port (default 8500)")
    args = p.parse_args(argv)
    models = models_in(args.export_dir)
    if not models:
        print(f"{args.export_dir}: no exported models", file=sys.stderr)
        return 1
    with ServingTestDouble(models, rest_port=args.rest_port, grpc_port=args.grpc_port) as d:
        print(f"TEST DOUBLE (not TF Serving) serving {', '.join(models)}: REST {d.rest_url}, "
              f"gRPC {d.grpc_target}; Ctrl-C stops it", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    import os
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    raise SystemExit(main())
