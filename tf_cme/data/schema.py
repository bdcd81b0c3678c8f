"""The record schemas of tf-cme: the ONLY place they are defined.

Three schemas, each with a name and a version (``records/README.md`` documents
every feature and the manifest):

- ``ferplus``: one FER2013 face (48x48 grey PNG) with its FER+ labels;
- ``emovox``: one VoxCeleb audio track (16 kHz mono int16 PCM) with its face
  frames (JPEG bytes, time order) and/or the teacher's per-frame logits;
- ``external``: one clip of an acted speech-emotion dataset (RML, eNTERFACE, a
  manifest.csv), label in the dataset's own taxonomy and in FER+ order.

Records are ``tf.train.Example`` protos. Encoding (:meth:`Schema.encode`) is a
small pure-Python protobuf writer, so builder worker processes never import
TensorFlow; parsing (:meth:`Schema.parse_batch`, :meth:`Schema.parse_single`)
uses ``tf.io.parse_example`` inside tf.data graphs.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

#: Audio in every record set: 16 kHz mono int16 PCM (little endian); SAMPLE_RATE and the
#: 19.9 s training window are defined in tf_cme/audio/constants.py.
from ..audio.constants import MAX_TRAIN_SAMPLES as MAX_SAMPLES  # noqa: E402,F401
from ..audio.constants import MAX_TRAIN_SECONDS as MAX_SECONDS  # noqa: E402,F401
from ..audio.constants import SAMPLE_RATE  # noqa: E402,F401
#: Video timing of VoxCeleb face frames (protocol §2.2): 25 fps, every 6th frame kept.
FPS = 25
FRAME_STRIDE = 6
#: FER2013 faces are 48x48 grey.
FER_SIZE = 48

BYTES, INT64, FLOAT32 = "bytes", "int64", "float32"


@dataclasses.dataclass(frozen=True)
class Feature:
    """One feature of a record. ``shape`` is () for scalars, (n,) for fixed-length
    vectors and (None,) for variable-length lists."""
    name: str
    dtype: str
    shape: tuple
    meaning: str
    default: Any = None        # for optional scalar features (None: required)

    @property
    def variable(self) -> bool:
        return len(self.shape) == 1 and self.shape[0] is None


@dataclasses.dataclass(frozen=True)
class Schema:
    name: str
    version: int
    features: tuple[Feature, ...]
    description: str = ""

    def __getitem__(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"schema {self.name!r} has no feature {name!r}")

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    # ------------------------------------------------------------------ encode
    def encode(self, values: Mapping[str, Any]) -> bytes:
        """Serialise one record (a ``tf.train.Example``) from plain Python/NumPy values.

        Every feature of the schema must be given (variable-length lists may be
        empty); unknown names, wrong dtypes and wrong fixed lengths are errors.
        """
        for k in values:
            if k not in self._index:
                raise ValueError(f"{self.name} record: unknown feature {k!r}")
        # Build the nested messages as a list of chunks with known lengths, so that
        # big payloads (audio, JPEG frames) are copied once, by the final join.
        out: list[bytes] = []
        total = 0
        for f, key_field in self._compiled:
            if f.name in values:
                v = values[f.name]
            elif f.default is not None:
                v = f.default
            else:
                raise ValueError(f"{self.name} record: missing feature {f.name!r}")
            chunks, n = _encode_feature(f, v, self.name)      # the Feature message
            head2 = _SMALL[(2 << 3) | 2] + _varint(n)
            entry_len = len(key_field) + len(head2) + n
            head1 = _SMALL[(1 << 3) | 2] + _varint(entry_len)
            out.append(head1 + key_field + head2)
            out.extend(chunks)
            total += len(head1) + len(key_field) + len(head2) + n
        return _SMALL[(1 << 3) | 2] + _varint(total) + b"".join(out)

    @property
    def _compiled(self):
        c = self.__dict__.get("_compiled_cache")
        if c is None:
            c = [(f, _field_bytes(1, f.name.encode())) for f in self.features]
            object.__setattr__(self, "_compiled_cache", c)
        return c

    @property
    def _index(self):
        c = self.__dict__.get("_index_cache")
        if c is None:
            c = frozenset(self.names)
            object.__setattr__(self, "_index_cache", c)
        return c

    # ------------------------------------------------------------------- parse
    def feature_spec(self, ragged: bool = False) -> dict:
        """``tf.io.parse_example`` spec: fixed features dense, variable ones
        ``RaggedFeature`` (``ragged=True``) or ``VarLenFeature``."""
        import tensorflow as tf
        dt = {BYTES: tf.string, INT64: tf.int64, FLOAT32: tf.float32}
        spec = {}
        for f in self.features:
            if f.variable:
                spec[f.name] = (tf.io.RaggedFeature(dt[f.dtype]) if ragged
                                else tf.io.VarLenFeature(dt[f.dtype]))
            else:
                default = f.default
                spec[f.name] = tf.io.FixedLenFeature(list(f.shape), dt[f.dtype],
                                                     default_value=default)
        return spec

    def parse_single(self, serialized) -> dict:
        """Parse one serialised record in a graph; variable lists become dense 1-D."""
        import tensorflow as tf
        out = tf.io.parse_single_example(serialized, self.feature_spec(ragged=False))
        for f in self.features:
            if f.variable:
                out[f.name] = tf.sparse.to_dense(out[f.name])
        return out

    def parse_batch(self, serialized) -> dict:
        """Parse a batch (``[B]`` strings); variable lists become ``tf.RaggedTensor``."""
        import tensorflow as tf
        return tf.io.parse_example(serialized, self.feature_spec(ragged=True))

    def decode_numpy(self, serialized: bytes) -> dict:
        """Parse one record eagerly into NumPy values (tests, tools, peers)."""
        import tensorflow as tf
        ex = tf.train.Example.FromString(serialized)
        out = {}
        for f in self.features:
            feat = ex.features.feature.get(f.name)
            if f.dtype == BYTES:
                vals = list(feat.bytes_list.value) if feat is not None else []
            elif f.dtype == INT64:
                vals = np.asarray(feat.int64_list.value if feat is not None else [], np.int64)
            else:
                vals = np.asarray(feat.float_list.value if feat is not None else [], np.float32)
            if f.shape == ():
                if len(vals) == 0 and f.default is not None:
                    out[f.name] = f.default
                else:
                    out[f.name] = vals[0]
            else:
                out[f.name] = vals
        return out


# --------------------------------------------------------------------- protobuf
_SMALL = [bytes((i,)) for i in range(128)]


def _varint(n: int) -> bytes:
    if 0 <= n < 128:
        return _SMALL[n]
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field_bytes(field: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _SMALL[(field << 3) | 2] + _varint(len(payload)) + payload


def _encode_feature(f: Feature, v, schema_name: str) -> tuple[list[bytes], int]:
    """A ``Feature`` message as (chunks, total length)."""
    scalar = f.shape == ()
    if f.dtype == BYTES:
        vals = [v] if scalar else v
        if not scalar and isinstance(v, (bytes, str)):
            raise ValueError(f"{schema_name} record, feature {f.name!r}: expected a list, "
                             f"got a single value")
        chunks = [b""]
        inner = 0
        n = 0
        for x in vals:
            if isinstance(x, str):
                x = x.encode()
            elif not isinstance(x, bytes):
                if isinstance(x, (np.bytes_, bytearray, memoryview)):
                    x = bytes(x)
                else:
                    raise ValueError(f"{schema_name} record, feature {f.name!r}: expected bytes, "
                                     f"got {type(x).__name__}")
            h = _SMALL[(1 << 3) | 2] + _varint(len(x))
            chunks.append(h)
            chunks.append(x)
            inner += len(h) + len(x)
            n += 1
        chunks[0] = _SMALL[(1 << 3) | 2] + _varint(inner)            # Feature.bytes_list
        length = len(chunks[0]) + inner
    else:
        if f.dtype == INT64:
            if scalar and isinstance(v, (int, np.integer)) and not isinstance(v, bool):
                n = 1
                packed = _field_bytes(1, _varint(int(v)))
            else:
                arr = np.asarray(v).reshape(-1)
                if arr.size and arr.dtype.kind not in "iub":
                    raise ValueError(f"{schema_name} record, feature {f.name!r}: expected "
                                     f"integers, got {arr.dtype}")
                n = arr.size
                packed = _field_bytes(1, b"".join([_varint(int(x)) for x in arr.tolist()])) \
                    if n else b""
            body = _field_bytes(3, packed)                                  # int64_list
        elif f.dtype == FLOAT32:
            try:
                arr = np.asarray(v, dtype="<f4").reshape(-1)
            except (TypeError, ValueError):
                raise ValueError(f"{schema_name} record, feature {f.name!r}: expected "
                                 f"numbers") from None
            n = arr.size
            body = _field_bytes(2, _field_bytes(1, arr.tobytes()) if n else b"")  # float_list
        else:  # pragma: no cover
            raise ValueError(f"unknown dtype {f.dtype}")
        chunks, length = [body], len(body)
    if scalar:
        if n != 1:
            raise ValueError(f"{schema_name} record, feature {f.name!r}: expected one value, got {n}")
    elif not f.variable:
        want = int(np.prod(f.shape))
        if n != want:
            raise ValueError(f"{schema_name} record, feature {f.name!r}: expected {want} values, "
                             f"got {n}")
    return chunks, length


# ---------------------------------------------------------------------- schemas
FERPLUS_SCHEMA = Schema(
    name="ferplus", version=1,
    description="One FER2013 face with its FER+ labels (protocol §2.1).",
    features=(
        Feature("image", BYTES, (), "48x48 grey face, PNG (8-bit, 1 channel), row-major as in fer2013.csv"),
        Feature("label", INT64, (), "hard label: index of the first arg-max of the cleaned votes, "
                "FER+ order 0..7 (variant 'full' also 8 = unknown, 9 = NF)"),
        Feature("votes", FLOAT32, (10,), "cleaned vote counts of the 10 fer2013new.csv columns "
                "(8 emotions in FER+ order, unknown, NF); CNTK variant: counts <= 1 zeroed"),
        Feature("soft", FLOAT32, (8,), "soft label: the 8 cleaned emotion votes divided by their sum "
                "(all zero when no emotion vote is left)"),
        Feature("fer2013_label", INT64, (), "the original fer2013.csv label, mapped to FER+ order"),
        Feature("row", INT64, (), "0-based data row of the two CSV files"),
        Feature("split", BYTES, (), "train (Training) | val (PublicTest) | test (PrivateTest)"),
    ))

EMOVOX_SCHEMA = Schema(
    name="emovox", version=2,      # 2: the whole audio track (1 kept only its first 19.9 s)
    description="One VoxCeleb audio track with its face frames and/or per-frame teacher logits.",
    features=(
        Feature("key", BYTES, (), "<identity>/<video>/<track>, unique in a record set"),
        Feature("identity", BYTES, (), "speaker / celebrity name (first token of the wav path)"),
        Feature("video", BYTES, (), "video id"),
        Feature("track", BYTES, (), "face-track / utterance id"),
        Feature("wav", BYTES, (), "source path of the audio (relative to the wav root, or the video file)"),
        Feature("set", INT64, (), "split code of splits.txt / imdb.images.set: 1 train, 2 unheard, 3 heard"),
        Feature("split", BYTES, (), "train | unheard | heard"),
        Feature("audio", BYTES, (), "16 kHz mono int16 little-endian PCM, the whole track (training clamps it at 19.9 s in "
                "the pipeline, protocol §3.1; evaluation reads all of it, §3.2)"),
        Feature("num_samples", INT64, (), "number of audio samples"),
        Feature("sample_rate", INT64, (), "always 16000"),
        Feature("source_rate", INT64, (), "sample rate of the source file before resampling"),
        Feature("frames", BYTES, (None,), "face frames, JPEG bytes, in time order (may be empty)"),
        Feature("frame_index", INT64, (None,), "video frame number of each frame row (25 fps; every 6th frame)"),
        Feature("frame_times", FLOAT32, (None,), "time of each frame row in seconds: frame_index / 25"),
        Feature("logits", FLOAT32, (None,), "teacher logits, F x 8 flattened row-major, FER+ order "
                "(empty for unlabelled records)"),
    ))

EXTERNAL_SCHEMA = Schema(
    name="external", version=1,
    description="One clip of an external acted emotion dataset (protocol §2.3).",
    features=(
        Feature("path", BYTES, (), "source path, relative to the dataset root"),
        Feature("dataset", BYTES, (), "dataset name (rml, enterface, or the --dataset given)"),
        Feature("label", INT64, (), "class index in the dataset's own taxonomy (manifest 'classes')"),
        Feature("label_name", BYTES, (), "class name (FER+ spelling)"),
        Feature("ferplus_label", INT64, (), "the same class as an index in FER+ order"),
        Feature("speaker", BYTES, (), "speaker / subject id"),
        Feature("split", BYTES, (), "split name (the manifest's split column, else 'all')"),
        Feature("audio", BYTES, (), "16 kHz mono int16 little-endian PCM (resampled: a documented "
                "deviation, the original fed 22.05/48 kHz audio to 16 kHz framing)"),
        Feature("num_samples", INT64, (), "number of audio samples"),
        Feature("sample_rate", INT64, (), "always 16000"),
        Feature("source_rate", INT64, (), "sample rate of the source file"),
        Feature("frames", BYTES, (None,), "face frames, JPEG bytes, in time order (may be empty)"),
        Feature("frame_times", FLOAT32, (None,), "time of each frame in seconds"),
    ))

SCHEMAS: dict[str, Schema] = {s.name: s for s in (FERPLUS_SCHEMA, EMOVOX_SCHEMA, EXTERNAL_SCHEMA)}

#: VoxCeleb set codes (protocol §2.2) and their split names.
SET_NAMES = {1: "train", 2: "unheard", 3: "heard"}
SPLIT_SETS = {v: k for k, v in SET_NAMES.items()}
#: The EmoVoxCeleb partitions in the order evaluations report them.
EMOVOX_SPLITS: tuple[str, ...] = ("train", "heard", "unheard")
#: FER2013 Usage column -> split name.
FER_USAGE = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}


def get(name: str) -> Schema:
    if name not in SCHEMAS:
        raise KeyError(f"unknown record schema {name!r}; known: {', '.join(SCHEMAS)}")
    return SCHEMAS[name]


# -------------------------------------------------------------- value helpers
def pcm16(x: np.ndarray) -> bytes:
    """Float waveform in [-1, 1] -> int16 little-endian PCM bytes (round, clip)."""
    x = np.asarray(x, dtype=np.float64) * 32768.0
    return np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()


def pcm16_to_float(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype="<i2").astype(np.float32) / 32768.0


def frame_time(frame_index) -> np.ndarray:
    """Video frame number -> seconds (25 fps)."""
    return np.asarray(frame_index, dtype=np.float64) / FPS
