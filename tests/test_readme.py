"""README's first two lines are the two commands, and its Python tour runs."""
import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_opens_with_the_two_commands():
    block = re.match(r"```bash\n(.*?)\n```", README, re.S)
    assert block, "README must open with a bash block"
    lines = block.group(1).splitlines()
    assert lines == ["python -m pip install '.[plot]' && python -m pdlt verify",
                     "python -m pip install '.[test]' && python -m pytest"]
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert lines[1] in ci.splitlines(), ".ci/run must run README's second command verbatim"


def test_readme_tour_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the tour writes run.npz / run.json
    code = re.search(r"## A short tour\n\n```python\n(.*?)\n```", README, re.S)
    assert code
    exec(compile(code.group(1), "README-tour", "exec"), {})
