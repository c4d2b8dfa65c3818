"""Documentation references stay inside the repository.

* every ``*.md`` file that a source file in pdlt/, derivations/, tests/ or examples/ mentions exists in the
  repository (a reference to a file outside it, e.g. a colleague's notes, is a dangling citation for every reader);
* every ``derivations/README.md section N`` / ``§N`` (also ``sections 7-9``, ``§7-8 and 10``, ``section 11.2``,
  ``section "Title"``) names a heading that exists in derivations/README.md, and the reference's own anchors and
  internal links are consistent.

The parsers are checked on small synthetic texts first, so a parser that finds nothing cannot pass vacuously.
"""

import re
from pathlib import Path

import pytest

THIS = Path(__file__).resolve()
ROOT = THIS.parents[1]
REFERENCE = ROOT / "derivations" / "README.md"
SOURCE_DIRS = ("pdlt", "derivations", "tests", "examples")

# a mention of a markdown file, with any path in front of it (case-insensitive: DESIGN.md counts too)
_MD = re.compile(r"(?<![\w./-])((?:\.{1,2}/)*[\w-]+(?:/[\w.-]+)*\.md)\b", re.IGNORECASE)
# an output path built with pathlib, ``out / "name.md"``: a file the code writes, not a citation
_WRITTEN = re.compile(r"/\s*[\"']$")
_NUM = r"\d+(?:\.\d+)?"
_CITE = re.compile(
    r"derivations/README\.md[`}]*\s*(?:(?:sections?|§|\\S)\s*(" + _NUM + r"(?:\s*(?:,|-|–|and)\s*" + _NUM + r")*)"
    r"|sections?\s+\"([^\"]+)\")")
_HEADING = re.compile(r"^#{2,4}\s+(\d+(?:\.\d+)*)\.?\s+(.*)$", re.MULTILINE)


def _sources():
    for d in SOURCE_DIRS:
        for p in sorted((ROOT / d).rglob("*")):
            # this file is skipped: its synthetic texts name missing files on purpose
            if p.suffix in (".py", ".md") and p.is_file() and "__pycache__" not in p.parts and p != THIS:
                yield p


def md_mentions(text: str):
    """The markdown files a text refers to, without the ones it writes (``path / "x.md"``)."""
    return [m.group(1) for m in _MD.finditer(text) if not _WRITTEN.search(text[max(0, m.start() - 4):m.start()])]


def resolves(mention: str, source: Path) -> bool:
    """A mention resolves if it names a file inside the repository, relative to the root or to the citing file."""
    for base in (ROOT, source.parent):
        p = (base / mention).resolve()
        if p.is_file() and ROOT in p.parents:
            return True
    return False


def cited_sections(text: str):
    """``(numbers, titles)`` cited as sections of derivations/README.md; ranges ``a-b`` are expanded."""
    numbers, titles = [], []
    for m in _CITE.finditer(text):
        if m.group(2):
            titles.append(m.group(2))
            continue
        for part in re.split(r"\s*(?:,|and)\s*", m.group(1)):
            lo, _, hi = (s.strip() for s in re.split(r"(-|–)", part, maxsplit=1)) if re.search("-|–", part) \
                else (part.strip(), None, None)
            if hi:
                numbers += [str(k) for k in range(int(float(lo)), int(float(hi)) + 1)]
            else:
                numbers.append(lo)
    return numbers, titles


def headings(text: str) -> dict:
    return {m.group(1): m.group(2).strip() for m in _HEADING.finditer(text)}


# ------------------------------------------------------------------------- the parsers themselves


def test_parsers_on_synthetic_text(tmp_path):
    text = ('see ``../notes/physics.md`` section 3 and DESIGN.md; (out / "table.md").write_text(s)\n'
            "derivations/README.md sections 1-3, 7-8; derivations/README.md §7-8 and 10; derivations/README.md\n"
            'section 11.2 and ``derivations/README.md`` §13.3; derivations/README.md section "Residual MLPs"')
    assert md_mentions(text) == ["../notes/physics.md", "DESIGN.md", "derivations/README.md",
                                 "derivations/README.md", "derivations/README.md", "derivations/README.md",
                                 "derivations/README.md"]
    numbers, titles = cited_sections(text)
    assert numbers == ["1", "2", "3", "7", "8", "7", "8", "10", "11.2", "13.3"]
    assert titles == ["Residual MLPs"]
    src = ROOT / "pdlt" / "x.py"
    assert resolves("derivations/README.md", src) and resolves("README.md", src)
    assert not resolves("../shared/" + "physics.md", src) and not resolves("DESIGN.md", src)
    assert headings("## 1. A\n### 1.2 B\nx\n## 12. C") == {"1": "A", "1.2": "B", "12": "C"}


# ------------------------------------------------------------------------- the repository


def test_no_source_cites_a_markdown_file_outside_the_repository():
    bad = []
    for p in _sources():
        text = p.read_text(encoding="utf-8")
        for mention in md_mentions(text):
            if not resolves(mention, p):
                bad.append(f"{p.relative_to(ROOT)}: {mention}")
    assert not bad, "citations of files that are not in the repository:\n" + "\n".join(bad)


def test_every_cited_section_of_the_reference_exists():
    heads = headings(REFERENCE.read_text(encoding="utf-8"))
    titles = [t.lower() for t in heads.values()]
    bad, n_cited = [], 0
    for p in _sources():
        numbers, names = cited_sections(p.read_text(encoding="utf-8"))
        n_cited += len(numbers) + len(names)
        bad += [f"{p.relative_to(ROOT)}: section {k}" for k in numbers if k not in heads]
        bad += [f"{p.relative_to(ROOT)}: section {t!r}" for t in names if not any(t.lower() in h for h in titles)]
    assert not bad, "citations of sections that derivations/README.md does not have:\n" + "\n".join(bad)
    assert n_cited >= 30  # the code cites the reference throughout; a parser that finds nothing must not pass


def test_reference_anchors_and_internal_links():
    text = REFERENCE.read_text(encoding="utf-8")
    top = [k for k in headings(text) if "." not in k]
    assert top == [str(k) for k in range(1, len(top) + 1)], "top-level sections are numbered 1, 2, 3, ..."
    for k in top:  # each top-level heading carries its stable anchor right above it
        assert re.search(rf'<a id="s{k}"></a>\n## {k}\. ', text), f"section {k} lacks its anchor s{k}"
    anchors = set(re.findall(r'<a id="([\w-]+)"></a>', text))
    links = set(re.findall(r"\]\(#([\w-]+)\)", text))
    assert links and links <= anchors, f"links to missing anchors: {sorted(links - anchors)}"


@pytest.mark.parametrize("path", ["pdlt", "derivations", "tests", "examples"])
def test_source_dirs_exist(path):
    assert (ROOT / path).is_dir()
