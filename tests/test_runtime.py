"""tf_cme.runtime: the oneDNN workaround (TF >= 2.20 on AMD CPUs, unless the user chose)
and a start-up without warnings on a host without a GPU."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from tf_cme import runtime

from _proc import ROOT, env

AMD, INTEL = "AuthenticAMD", "GenuineIntel"
ZEN3 = frozenset({"fma", "avx2"})                               # AVX2 only: oneDNN off by default
ZEN4 = ZEN3 | {"avx512f", "avx512_vnni", "avx512_bf16"}          # oneDNN on by default


def test_cpu_info_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n"
                    "flags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni avx512_bf16\n"
                    "processor\t: 1\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu\n")
    vendor, flags = runtime.cpu_info(str(info))
    assert vendor == AMD and {"avx2", "avx512_vnni", "avx512_bf16"} <= flags
    assert runtime.onednn_default_on(flags) and not runtime.onednn_default_on(ZEN3)
    info.write_text("processor\t: 0\nmodel name\t: ARMv8\n")
    assert runtime.cpu_info(str(info)) == ("", frozenset())
    assert runtime.cpu_vendor(str(tmp_path / "missing")) == ""


@pytest.mark.parametrize("version,vendor,flags,needed", [
    ((2, 17), AMD, ZEN4, False), ((2, 19), AMD, ZEN4, False), ((2, 20), AMD, ZEN4, True),
    ((2, 21), AMD, ZEN4, True), ((3, 0), AMD, ZEN4, True),
    ((2, 21), AMD, ZEN3, False),          # oneDNN's kernels are off anyway: nothing to avoid
    ((2, 21), INTEL, ZEN4, False), ((2, 21), "", ZEN4, False), (None, AMD, ZEN4, False)])
def test_workaround_only_for_tf_2_20_and_newer_on_amd_with_onednn_on(version, vendor, flags,
                                                                     needed):
    assert runtime.onednn_workaround_needed(version, vendor, flags) is needed
    environ = {}
    assert runtime.apply_onednn_workaround(environ, version, vendor, flags) is needed
    assert environ == ({"TF_ENABLE_ONEDNN_OPTS": "0"} if needed else {})


@pytest.mark.parametrize("value", ["1", "0", ""])
def test_a_users_setting_is_kept(value):
    environ = {"TF_ENABLE_ONEDNN_OPTS": value}
    assert runtime.apply_onednn_workaround(environ, (2, 21), AMD, ZEN4) is False
    assert environ == {"TF_ENABLE_ONEDNN_OPTS": value}


_CHILD = textwrap.dedent("""
    import os, sys
    import tf_cme
    import tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port
    x = tf.nn.conv2d(tf.ones([1, 8, 8, 4]), tf.ones([1, 1, 4, 2]), strides=2, padding="VALID")
    print(tf.__version__, os.environ.get("TF_ENABLE_ONEDNN_OPTS"), float(tf.reduce_sum(x)),
          _pywrap_util_port.IsMklEnabled())
""")


def _child(**kw):
    e = env(PYTHONPATH=str(ROOT), **kw)
    if "TF_ENABLE_ONEDNN_OPTS" not in kw:
        e.pop("TF_ENABLE_ONEDNN_OPTS", None)
    e.pop("TF_CME_TF_NOISE", None)
    return subprocess.run([sys.executable, "-c", _CHILD], cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=300)


def _cpu():
    """(AMD?, oneDNN on by default?) read here from /proc/cpuinfo, independently of tf_cme."""
    text = open("/proc/cpuinfo").read()
    flags = set(re.search(r"^flags\s*:(.*)$", text, re.M).group(1).split())
    return "AuthenticAMD" in text, bool(flags & {"avx512_vnni", "avx512_bf16", "avx_vnni",
                                                 "amx_tile", "amx_int8", "amx_bf16"})


def test_entry_point_sets_the_workaround_before_tensorflow_starts():
    """A process that imports tf_cme and then TensorFlow runs with oneDNN off exactly when
    its TensorFlow (as TensorFlow itself reports) is 2.20+ on an AMD CPU whose features
    turn oneDNN on by default; TensorFlow then reports oneDNN off; a user's value wins;
    and on a host without a GPU nothing is printed on stderr."""
    proc = _child()
    assert proc.returncode == 0, proc.stderr[-3000:]
    version, value, total, mkl = proc.stdout.split()
    major, minor = (int(v) for v in version.split(".")[:2])
    amd, default_on = _cpu()
    assert float(total) == 2 * 16 * 4.0                      # 2 channels x 4x4 outputs x 4
    workaround = (major, minor) >= (2, 20) and amd and default_on
    assert value == ("0" if workaround else "None")
    if workaround:
        assert mkl == "False"
    if not (os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/nvidiactl")):
        assert proc.stderr == ""
    user = _child(TF_ENABLE_ONEDNN_OPTS="1")
    assert user.returncode == 0, user.stderr[-3000:]
    assert user.stdout.split()[1] == "1" and user.stdout.split()[3] == "True"


def test_quiet_stderr_drops_only_the_known_lines():
    code = textwrap.dedent("""
        import os, sys
        from tf_cme import runtime
        with runtime.quiet_stderr():
            os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called "
                        b"are written to STDERR\\n")
            os.write(2, b"I0000 cudart_stub.cc:31] Could not find cuda drivers on your "
                        b"machine, GPU will not be used.\\n")
            os.write(2, b"E0000 real_kernel.cc:1] something that matters\\n")
            print("a Python warning", file=sys.stderr)
        print("after", file=sys.stderr)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env(PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ("E0000 real_kernel.cc:1] something that matters\n"
                           "a Python warning\nafter\n")
