"""A manifest's ``split`` names a folder under --out: unsafe names are a CmeError naming
the manifest file and line (issue 12.6), never a write outside --out or a traceback."""
from __future__ import annotations

import numpy as np
import pytest

from tf_cme.audio.io import write_wav
from tf_cme.data import external
from tf_cme.utils import CmeError


@pytest.mark.parametrize("split", ["../../escaped", "x/y", "..", ".hidden", "a..b"])
def test_unsafe_split_is_an_error(tmp_path, split):
    man = tmp_path / "man"
    write_wav(man / "a.wav", (np.arange(8000) % 200 * 50).astype(np.int16), 16000)
    (man / "manifest.csv").write_text(f"path,label,speaker,split\na.wav,happy,x,ok\n"
                                      f"a.wav,sad,x,{split}\n")
    out = tmp_path / "deep" / "er" / "rec"
    with pytest.raises(CmeError, match=r"manifest.csv:3: bad split name"):
        external.build(out, external.ExternalBuildConfig(root=str(man), workers=1))
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "deep" / "escaped").exists()


def test_safe_split_names_build(tmp_path):
    man = tmp_path / "man"
    write_wav(man / "a.wav", (np.arange(8000) % 200 * 50).astype(np.int16), 16000)
    (man / "manifest.csv").write_text("path,label,speaker,split\na.wav,happy,x,fold-1.a_b\n")
    m = external.build(tmp_path / "rec", external.ExternalBuildConfig(root=str(man), workers=1))
    assert m["splits"]["fold-1.a_b"]["examples"] == 1
