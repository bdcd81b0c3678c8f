"""Every citation of the original's protocol points at the repository's own document.

Code, help texts and the report cite ``docs/protocol.md`` as "protocol §N"; a section
cited must exist there, and nothing cites the out-of-tree reference specification.
"""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCES = [p for d in ("tf_cme", "scripts") for p in (ROOT / d).rglob("*.py")]
SOURCES += [ROOT / "README.md", ROOT / "docs" / "serving.md"]


def _sections():
    text = (ROOT / "docs" / "protocol.md").read_text()
    return set(re.findall(r"^#+ (\d+(?:\.\d+)?)\.? ", text, flags=re.M))


def test_no_spec_citations():
    bad = [f"{p.relative_to(ROOT)}:{i}" for p in SOURCES
           for i, line in enumerate(p.read_text().splitlines(), 1)
           if re.search(r"\bSPEC\b", line)]
    assert not bad, f"cite docs/protocol.md ('protocol §N'), not SPEC: {bad}"


def test_cited_sections_exist():
    sections = _sections()
    assert {"3.1", "3.2", "4.4", "6", "10"} <= sections
    cited = {(p.relative_to(ROOT), m) for p in SOURCES
             for m in re.findall(r"protocol §(\d+(?:\.\d+)?)", p.read_text())}
    missing = sorted(f"{p}: §{m}" for p, m in cited if m not in sections)
    assert cited and not missing, missing
