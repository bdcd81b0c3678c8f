"""Run TensorBoard (``python -m tensorboard.main`` with the same arguments).

TensorBoard 2.17 imports ``pkg_resources``, which setuptools >= 81 no longer ships and
80.x imports with a deprecation warning: this launcher hides that one warning, and when
``pkg_resources`` is missing it provides the two functions TensorBoard uses:
``iter_entry_points`` (plugin discovery, from ``importlib.metadata``) and
``parse_version`` (from ``packaging``).  TensorBoard 2.21 needs neither.  It imports
tf_cme first (tf_cme/runtime.py), so TensorFlow starts without the CUDA messages of a
host without a GPU; nothing is printed but TensorBoard's own address line.

Example:
  scripts/run_tensorboard.py --logdir runs/demo/student/tensorboard --host 127.0.0.1 --port 6006
"""
import importlib.metadata
import os
import sys
import types
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tf_cme  # noqa: F401  (before TensorFlow: tf_cme/runtime.py)

try:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        import pkg_resources  # noqa: F401
except ImportError:
    shim = types.ModuleType("pkg_resources")

    class _EntryPoint:
        def __init__(self, ep):
            self.name, self._ep = ep.name, ep

        def resolve(self):
            return self._ep.load()

        load = resolve

    def iter_entry_points(group, name=None):
        return iter([_EntryPoint(e) for e in importlib.metadata.entry_points(group=group)
                     if name is None or e.name == name])

    shim.iter_entry_points = iter_entry_points
    try:
        from packaging.version import parse as _parse_version
        shim.parse_version = _parse_version
    except ImportError:  # pragma: no cover
        pass
    sys.modules["pkg_resources"] = shim



def _logdirs(argv: list[str]) -> list[str]:
    """The --logdir values in ``argv`` (``--logdir X`` or ``--logdir=X``)."""
    out = []
    for i, a in enumerate(argv):
        if a == "--logdir" and i + 1 < len(argv):
            out.append(argv[i + 1])
        elif a.startswith("--logdir="):
            out.append(a.split("=", 1)[1])
    return out


def main() -> None:
    for d in _logdirs(sys.argv[1:]):   # TensorBoard would wait on a missing folder
        if not os.path.isdir(d):
            print(f"{os.path.basename(sys.argv[0])}: error: {d}: no such folder (--logdir)",
                  file=sys.stderr)
            raise SystemExit(1)
    from tensorboard.main import run_main
    sys.argv[0] = "tensorboard"
    run_main()


if __name__ == "__main__":
    main()
