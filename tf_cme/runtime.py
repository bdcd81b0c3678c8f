"""What a tf-cme process sets up before TensorFlow is imported (and never imports it).

``tf_cme/__init__.py`` calls :func:`configure`, so every entry point that imports a tf_cme
module before TensorFlow gets it: each script, ``python -m tf_cme...``, the tests (their
conftest imports tf_cme first).  It does two things, both only where they are needed:

- **The oneDNN workaround.**  TensorFlow 2.20+ with its oneDNN CPU kernels
  (``TF_ENABLE_ONEDNN_OPTS``) was reported to corrupt the heap (``free(): invalid
  pointer``, ``double free or corruption``) while training ResNets with 1x1 stride-2
  convolutions on some AMD CPUs.  TensorFlow turns those kernels on by default (Linux)
  only on CPUs with AVX-512 VNNI / BF16, AVX-VNNI or AMX (AMD: Zen 4 and newer); on
  others, such as an AVX2-only EPYC, they are off unless the user asks for them, and
  the workaround would change nothing.  So ``TF_ENABLE_ONEDNN_OPTS=0`` is set when the
  installed TensorFlow (read with ``importlib.metadata``, without importing it) is 2.20
  or newer, the CPU is an AMD one and has one of those features (``/proc/cpuinfo``),
  unless the user set the variable (any value is kept: ``TF_ENABLE_ONEDNN_OPTS=1`` opts
  back in).  Its cost is in the README's "Dependencies".
- **A quiet start on a host without a GPU.**  The full ``tensorflow`` wheel is a CUDA
  build, and on a machine without an NVIDIA driver its import writes lines to stderr
  that the log level does not reach (TF 2.21: absl's "All log messages before
  absl::InitializeLog()..." and "Could not find cuda drivers"; TF 2.17: "Unable to
  register cuDNN factory..."), and TF 2.21 a "failed call to cuInit" error on first
  use.  On such a host (no ``/proc/driver/nvidia``) the first ``import tensorflow`` runs
  with file descriptor 2 sent to a temporary file; afterwards every line of it that is
  not one of those known messages is written back to stderr.
  ``TF_CME_TF_NOISE=1`` turns the filter off.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.metadata
import importlib.util
import os
import re
import sys
import tempfile

__all__ = ["configure", "tensorflow_version", "cpu_info", "cpu_vendor", "onednn_default_on",
           "onednn_workaround_needed", "apply_onednn_workaround", "onednn_state",
           "quiet_stderr", "NOISE", "ONEDNN_VAR", "ONEDNN_FROM", "ONEDNN_DEFAULT_FLAGS",
           "STATE"]

ONEDNN_VAR = "TF_ENABLE_ONEDNN_OPTS"
ONEDNN_FROM = (2, 20)         # first TensorFlow release with the heap corruption
_TF_DISTS = ("tensorflow", "tensorflow-cpu", "tf-nightly", "tf-nightly-cpu")

#: Substrings of the stderr lines a CUDA build of TensorFlow prints on a host without a GPU.
NOISE = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "Could not find cuda drivers on your machine",
    "Unable to register cuFFT factory", "Unable to register cuDNN factory",
    "Unable to register cuBLAS factory",
    "failed call to cuInit",
    "TF-TRT Warning: Could not find TensorRT",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
    "oneDNN custom operations are on.",           # TF's notice about TF_ENABLE_ONEDNN_OPTS
)

#: What :func:`configure` decided (read by benchmarks and run metadata).
STATE: dict = {}


def tensorflow_version() -> tuple[int, int] | None:
    """(major, minor) of the installed TensorFlow distribution, without importing it."""
    for dist in _TF_DISTS:
        try:
            v = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        m = re.match(r"(\d+)\.(\d+)", v)
        if m:
            return int(m.group(1)), int(m.group(2))
    return None


#: /proc/cpuinfo flags with which TensorFlow turns its oneDNN kernels on by default (Linux;
#: tensorflow/core/util/port.cc, DefaultOneDnnPolicy)
ONEDNN_DEFAULT_FLAGS = frozenset({"avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile",
                                  "amx_int8", "amx_bf16"})


def cpu_info(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, frozenset]:
    """``(vendor_id, flags)`` of the first CPU (``AuthenticAMD``, ``GenuineIntel``; '' and
    no flags where unknown)."""
    vendor, flags = "", frozenset()
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "vendor_id" and not vendor:
                    vendor = value.strip()
                elif key == "flags" and not flags:
                    flags = frozenset(value.split())
                if vendor and flags:
                    break
    except OSError:
        pass
    return vendor, flags


def cpu_vendor(cpuinfo: str = "/proc/cpuinfo") -> str:
    return cpu_info(cpuinfo)[0]


def onednn_default_on(flags) -> bool:
    """Whether TensorFlow runs its oneDNN kernels by default on a CPU with ``flags``."""
    return bool(ONEDNN_DEFAULT_FLAGS & set(flags))


def onednn_workaround_needed(tf_version: tuple[int, int] | None, vendor: str, flags) -> bool:
    """TensorFlow 2.20+ on an AMD CPU where oneDNN is on by default."""
    return (tf_version is not None and tuple(tf_version) >= ONEDNN_FROM
            and vendor == "AuthenticAMD" and onednn_default_on(flags))


def apply_onednn_workaround(environ, tf_version, vendor, flags) -> bool:
    """Set ``TF_ENABLE_ONEDNN_OPTS=0`` in ``environ`` where :func:`onednn_workaround_needed`
    and the user has not set the variable; True when it did."""
    if onednn_workaround_needed(tf_version, vendor, flags) and ONEDNN_VAR not in environ:
        environ[ONEDNN_VAR] = "0"
        return True
    return False


def onednn_state() -> str:
    """How this process runs TensorFlow's oneDNN CPU kernels, in words (benchmark rows)."""
    if STATE.get("onednn_workaround"):
        return "off (tf-cme workaround: TF >= 2.20 on an AMD CPU with oneDNN on by default)"
    value = os.environ.get(ONEDNN_VAR)
    if value is not None:
        return f"{ONEDNN_VAR}={value} (set by the user)"
    on = STATE.get("onednn_default_on")
    return "TensorFlow's default: " + ("on" if on else "off") + " on this CPU"


def _gpu_driver() -> bool:
    return os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/nvidiactl")


@contextlib.contextmanager
def quiet_stderr(noise=NOISE):
    """Send file descriptor 2 to a temporary file for the block; afterwards write back
    every line that contains none of ``noise``."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):    # no usable fd 2: nothing to filter
        yield
        return
    tmp = tempfile.TemporaryFile()
    os.dup2(tmp.fileno(), 2)
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)
        os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode("utf-8", errors="replace")
        tmp.close()
        kept = "".join(line for line in text.splitlines(keepends=True)
                       if not any(n in line for n in noise))
        if kept:
            try:
                sys.stderr.write(kept)
                sys.stderr.flush()
            except (OSError, ValueError):
                pass


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Runs the first ``import tensorflow`` (and the CUDA platform's start, which TF 2.21
    logs an error for when there is no driver) inside :func:`quiet_stderr`."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)          # once, and not for our own lookup below
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            with quiet_stderr():
                run(module)
                try:                            # the CUDA platform starts here, not later
                    module.config.list_physical_devices()
                except Exception:   # noqa: BLE001 - a broken install reports on its own use
                    pass
        spec.loader.exec_module = exec_module
        return spec


def configure() -> dict:
    """Apply the oneDNN workaround and the quiet TensorFlow import to this process (see
    the module docstring).  Idempotent; returns :data:`STATE`."""
    if STATE.get("configured"):
        return STATE
    version = tensorflow_version()
    vendor, flags = cpu_info()
    applied = apply_onednn_workaround(os.environ, version, vendor, flags)
    quiet = ("tensorflow" not in sys.modules and not _gpu_driver()
             and os.environ.get("TF_CME_TF_NOISE", "") != "1")
    if quiet:
        sys.meta_path.insert(0, _QuietTensorFlowImport())
    STATE.update(configured=True, tensorflow=".".join(map(str, version)) if version else None,
                 cpu_vendor=vendor, onednn_default_on=onednn_default_on(flags),
                 onednn_workaround=applied, quiet_import=quiet)
    return STATE
