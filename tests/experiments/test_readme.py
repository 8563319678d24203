"""README.md: a front page whose commands CI runs and whose figures come from the reports."""

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _readme():
    with open(os.path.join(REPO, "README.md")) as f:
        return f.read()


def test_readme_is_a_front_page_with_the_two_commands():
    text = _readme()
    assert len(text.splitlines()) <= 200
    for marker in ("<!-- ci: quickstart -->", "<!-- ci: tests -->"):
        assert re.search(re.escape(marker) + r"\n```bash\n.+\n```", text), marker


def test_results_table_equals_the_reports(load_script):
    """Every figure in the README's table is read from a report
    (experiments/readme_results.py), so a rerun cannot leave two versions."""
    script = load_script("experiments/readme_results")
    block = script.BLOCK.search(_readme())
    assert block is not None
    assert block.group(2) == script.table()
    # header, rule and a row per report
    rows = 2 + len(script.RUNS) + len(script.SEEDS) + len(script.STUDIES)
    assert block.group(2).count("\n") == rows >= 4


def test_relative_links_point_at_files():
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", _readme()):
        if "://" not in target:
            assert os.path.exists(os.path.join(REPO, target)), target
