"""The specification lives in the repository: docs/theory.md defines every claim and section the code cites.

(a) every claim label ``Cn`` cited in evoflow/, proofs/, bench/ and README.md (ranges such as
``C6-C8`` included) is defined in docs/theory.md by a bold anchor ``**Cn (...)**`` or a heading
that starts with it, not merely mentioned; (b) every "THEORY section N" (or "sections N-M")
citation names a numbered section ``## N.`` of docs/theory.md, whose sections keep the numbering
and topics 1-8; (c) the proof notes named in docs/theory.md exist (and every one is named), every
relative link in docs/*.md resolves to a file (and, with a fragment, to an anchor there), and the
tests and symbols the docs point at exist. The last test feeds each check a bad input, so that
the checks are shown to fail when they should.
"""

from __future__ import annotations

import importlib
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
THEORY = DOCS / "theory.md"

CLAIM = re.compile(r"\bC(\d+)\b")
CLAIM_RANGE = re.compile(r"\bC(\d+)\s*(?:-|–|\.\.\.?)\s*C(\d+)\b")
SECTION = re.compile(r"\bTHEORY\s+sections?\s+(\d+)(?:\s*(?:-|–|and)\s*(\d+))?")
CLAIM_ANCHOR = re.compile(r"^(?:\*\*C(\d+)\b[^*\n]*\*\*|#{1,6}\s+C(\d+)\b)", re.MULTILINE)
SECTION_HEADING = re.compile(r"^##\s+(\d+)\.\s+(.*)$", re.MULTILINE)
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.MULTILINE)
HTML_ANCHOR = re.compile(r"""<a\s+(?:id|name)=["']([^"']+)["']""")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
PROOF_NOTE = re.compile(r"proofs/(p\d\d_\w+\.md)")
TEST_REF = re.compile(r"((?:proofs|tests)/[\w/]+\.py)::(test_\w+)")
SYMBOL = re.compile(r"`(evoflow(?:\.\w+)+)")
PLANNED: set[str] = set()  # names the docs give as not yet present (none now)

# Sections of THEORY (the numbering docstrings cite) and a word of each one's topic.
TOPICS = {1: "conventions", 2: "forward process", 3: "vector field", 4: "paths", 5: "elbo",
          6: "likelihood", 7: "oracles", 8: "learned model"}


def _citing_files() -> list[pathlib.Path]:
    files = sorted((ROOT / "evoflow").rglob("*.py"))
    files += sorted((ROOT / "proofs").glob("*.py")) + sorted((ROOT / "proofs").glob("*.md"))
    files += [*sorted((ROOT / "bench").glob("*.py")), ROOT / "README.md"]
    return [f for f in files if f.is_file()]


def cited_claims(text: str) -> set[int]:
    """Claim numbers cited in ``text``: single labels and every label inside a range ``Ca-Cb``."""
    found = {int(n) for n in CLAIM.findall(text)}
    for lo, hi in CLAIM_RANGE.findall(text):
        found |= set(range(int(lo), int(hi) + 1))
    return found


def defined_claims(theory: str) -> list[int]:
    """Claim numbers defined by an anchor (bold label or heading at the start of a line), with repeats."""
    return [int(a or b) for a, b in CLAIM_ANCHOR.findall(_strip_code_blocks(theory))]


def cited_sections(text: str) -> set[int]:
    """Section numbers of "THEORY section N" and "THEORY sections N-M" citations."""
    found: set[int] = set()
    for lo, hi in SECTION.findall(text):
        found |= set(range(int(lo), int(hi or lo) + 1))
    return found


def numbered_sections(theory: str) -> dict[int, str]:
    """``{N: title}`` of the level-2 headings ``## N. title``."""
    return {int(n): title for n, title in SECTION_HEADING.findall(_strip_code_blocks(theory))}


def _strip_code_blocks(text: str) -> str:
    """Blank out fenced and indented code blocks (their lines are not markdown structure or links)."""
    text = re.sub(r"^```.*?^```[^\n]*$", "", text, flags=re.MULTILINE | re.DOTALL)
    out: list[str] = []
    prev_blank, in_block = True, False
    for line in text.splitlines():
        blank = not line.strip()
        indented = line.startswith(("    ", "\t"))
        in_block = (in_block and (blank or indented)) or (prev_blank and indented and not blank)
        out.append("" if in_block else line)
        prev_blank = blank
    return "\n".join(out)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(md: str) -> set[str]:
    """Every anchor a markdown page offers: heading slugs (with GitHub's -1, -2 for repeats) and <a id>."""
    seen: dict[str, int] = {}
    out = set(HTML_ANCHOR.findall(md))
    for _, title in HEADING.findall(_strip_code_blocks(md)):
        base = slug(title)
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return out


def broken_links(md_path: pathlib.Path, text: str | None = None) -> list[str]:
    """Relative links of a markdown file that point at no file, or at a missing anchor of a markdown file."""
    text = md_path.read_text() if text is None else text
    bad = []
    for target in LINK.findall(_strip_code_blocks(text)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("//"):
            continue  # http:, https:, mailto: ... are not checked here
        path, _, fragment = target.partition("#")
        dest = md_path if not path else (md_path.parent / path).resolve()
        if not dest.exists():
            bad.append(f"{target} (no such file)")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(
                text if dest == md_path else dest.read_text()):
            bad.append(f"{target} (no such anchor)")
    return bad


def claim_blocks(theory: str) -> dict[int, str]:
    """The text of each claim's definition: from its anchor to the next claim anchor or heading."""
    body = _strip_code_blocks(theory)
    starts = [(m.start(), int(m.group(1) or m.group(2))) for m in CLAIM_ANCHOR.finditer(body)]
    blocks = {}
    for k, (pos, n) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else len(body)
        heading = re.search(r"^#", body[pos + 1:end], re.MULTILINE)
        stop = pos + 1 + heading.start() if heading else end
        blocks[n] = body[pos:stop]
    return blocks


@pytest.fixture(scope="module")
def theory() -> str:
    assert THEORY.is_file(), "docs/theory.md is missing: the specification must live in the repository"
    return THEORY.read_text()


# (a) claims


def test_every_cited_claim_is_defined_in_docs_theory(theory):
    defined = set(defined_claims(theory))
    missing = {}
    for f in _citing_files():
        for n in cited_claims(f.read_text()) - defined:
            missing.setdefault(f"C{n}", []).append(str(f.relative_to(ROOT)))
    assert not missing, f"claims cited but not defined (as **Cn ...** anchors) in docs/theory.md: {missing}"


def test_each_claim_is_defined_once_and_the_labels_run_from_c1(theory):
    labels = defined_claims(theory)
    repeated = sorted({n for n in labels if labels.count(n) > 1})
    assert not repeated, f"claims defined more than once in docs/theory.md: {repeated}"
    assert sorted(labels) == list(range(1, max(labels) + 1)), f"claim labels are not C1..Cn: {sorted(labels)}"


def test_each_claim_says_where_its_proof_is_or_that_it_is_not_implemented(theory):
    for n, block in claim_blocks(theory).items():
        assert PROOF_NOTE.search(block) or "not yet implemented" in block, (
            f"C{n} in docs/theory.md names no proofs/pNN_*.md and does not say it is not yet implemented")


# (b) sections


def test_theory_keeps_the_numbered_sections_and_their_topics(theory):
    sections = numbered_sections(theory)
    assert sorted(sections) == sorted(TOPICS), f"docs/theory.md sections are {sorted(sections)}, expected 1-8"
    for n, word in TOPICS.items():
        assert word in sections[n].lower(), f"section {n} of docs/theory.md is {sections[n]!r}; its topic is {word}"


def test_every_theory_section_citation_resolves(theory):
    sections = set(numbered_sections(theory))
    missing = {}
    for f in _citing_files():
        for n in cited_sections(f.read_text()) - sections:
            missing.setdefault(n, []).append(str(f.relative_to(ROOT)))
    assert not missing, f"'THEORY section N' cited but docs/theory.md has no '## N.' section: {missing}"


# (c) files, links, tests and symbols


def test_proof_notes_named_in_theory_exist_and_every_note_is_named(theory):
    named = set(PROOF_NOTE.findall(theory))
    assert named, "docs/theory.md names no proof notes"
    missing = sorted(n for n in named if not (ROOT / "proofs" / n).is_file())
    assert not missing, f"docs/theory.md names proof notes that do not exist: {missing}"
    unnamed = sorted(p.name for p in (ROOT / "proofs").glob("p[0-9][0-9]_*.md") if p.name not in named)
    assert not unnamed, f"proof notes that docs/theory.md does not name: {unnamed}"


@pytest.mark.parametrize("md", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_relative_links_in_docs_resolve(md):
    assert not broken_links(md), f"{md.name}: broken links {broken_links(md)}"


def test_proofs_readme_links_the_docs():
    readme = ROOT / "proofs" / "README.md"
    text = readme.read_text()
    for page in ("theory.md", "architecture.md"):
        assert f"(../docs/{page})" in text, f"proofs/README.md does not link docs/{page}"
    assert not broken_links(readme), broken_links(readme)


@pytest.mark.parametrize("md", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_tests_named_in_docs_exist(md):
    for path, name in TEST_REF.findall(md.read_text()):
        source = ROOT / path
        assert source.is_file(), f"{md.name}: {path} does not exist"
        assert f"def {name}(" in source.read_text(), f"{md.name}: {path}::{name} does not exist"


def _resolves(symbol: str) -> bool:
    parts = symbol.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        for attr in parts[k:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                return False
        return True
    return False


@pytest.mark.parametrize("md", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_evoflow_names_in_docs_exist(md):
    names = set(SYMBOL.findall(md.read_text())) - PLANNED
    missing = sorted(n for n in names if not _resolves(n))
    assert not missing, f"{md.name} names evoflow objects that do not exist: {missing}"


# the checks can fail


def test_the_checks_can_fail(theory, tmp_path):
    defined = set(defined_claims(theory))
    assert 99 in cited_claims("see claim C99") - defined
    assert {6, 7, 8} <= cited_claims("claims C6-C8 assume alpha(1) = 0")
    assert defined_claims("a line that mentions C7 and **C7** in passing") == []
    assert defined_claims("**C7 (AR limit, exact).** text\n### C8 parallel") == [7, 8]
    assert 9 in cited_sections("(THEORY section 9)") - set(numbered_sections(theory))
    assert cited_sections("THEORY sections 7-8") == {7, 8}
    assert cited_sections("THEORY\n    section 4, claim C2") == {4}
    page = tmp_path / "page.md"
    page.write_text("# Top\n\n[ok](page.md#top) [gone](missing.md) [bad anchor](#nowhere) [web](https://x.org)\n")
    assert broken_links(page) == ["missing.md (no such file)", "#nowhere (no such anchor)"]
    assert slug("3. The shared vector field (C1, C2)") == "3-the-shared-vector-field-c1-c2"
    assert slug("What `Solver.step` does") == "what-solverstep-does"
    assert not _resolves("evoflow.paths.NoSuchPath") and _resolves("evoflow.paths.Rolling")
