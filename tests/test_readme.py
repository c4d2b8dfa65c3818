"""README opens with its title, a one-line description and the two commands; its Python tour runs."""
import re
from pathlib import Path

import pytest
from background import FOLDER, Command, python

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


FIRST = "python -m pip install '.[plot]' && python -m pdlt verify"
SECOND = "python -m pip install '.[test]' && python -m pytest"
TOUR = re.search(r"## A short tour\n\n```python\n(.*?)\n```", README, re.S)

#: the tour in a fresh interpreter, in the background while the suite runs (tests/background.py)
JOBS = {"tour": Command((python("import os, sys\nos.chdir(sys.argv[1])\n" + (TOUR.group(1) if TOUR else "raise SystemExit("
                                "'README has no tour')"), FOLDER),), cost=10)}


def test_readme_opens_with_title_description_and_the_two_commands():
    """Title, a one-line description, then exactly the two commands, each in its own block after one sentence
    saying what it does; nothing (no code) above the title."""
    paras = [p.strip() for p in README.split("\n\n") if p.strip()]
    assert paras[0] == "# pdlt", "README must open with its title"
    assert "\n" not in paras[1] and not paras[1].startswith(("`", "#")), "then a one-line description"
    for k, cmd in ((2, FIRST), (4, SECOND)):
        sentence, block = paras[k], paras[k + 1]
        assert "\n" not in sentence and sentence.endswith(":") and not sentence.startswith("`"), sentence
        assert block == f"```bash\n{cmd}\n```", block
    assert "verify" in paras[2] and "test" in paras[4]
    assert README.count("```bash\n" + FIRST) == 1 and "```" not in README.split("# pdlt", 1)[0]
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert SECOND in ci.splitlines(), ".ci/run must run README's second command verbatim"


@pytest.mark.background("tour")
def test_readme_tour_runs(background):
    """The tour, as a user would paste it into a fresh interpreter (run in its own folder: it writes run.npz)."""
    res = background("tour")
    assert res.codes == (0,), res.show()
