"""bn_keras.testing.timing: interleaving order and the summary helpers (no timing asserted)."""

from bn_keras.testing import timing


def test_interleaved_calls_candidates_in_turn_and_drops_warmup_rounds():
    calls = []
    measures = {name: (lambda n=name: calls.append(n) or float(len(calls))) for name in "ab"}
    samples = timing.interleaved(measures, rounds=2, warmup=1)
    assert calls == ["a", "b"] * 3
    assert samples == {"a": [3.0, 5.0], "b": [4.0, 6.0]}
    assert timing.medians(samples) == {"a": 4.0, "b": 5.0}


def test_spread_formats_both_bounds():
    assert timing.spread([3.14159, 2.5, 10.0]) == "2.5-10"
    assert timing.spread([12450.0, 10325.4], ",.0f") == "10,325-12,450"


def test_report_to_writes_command_machine_tables_and_fenced_progress(tmp_path, monkeypatch,
                                                                       capsys):
    monkeypatch.setattr("sys.argv", ["benchmarks/bench_x.py", "--rounds=2"])
    path = tmp_path / "bench_x.md"
    with timing.report_to(str(path), "Title"):
        print("  case a: 10 img/s\n  case b: 12 img/s\n\ncaption\n| a | b |\n|---|---|\n| 1 | 2 |")
    text = path.read_text()
    assert text.startswith("# Title\n\nCommand: `python benchmarks/bench_x.py --rounds=2`\n")
    assert "Measured on: " in text and " cores; Python " in text
    assert "```text\n  case a: 10 img/s\n  case b: 12 img/s\n```" in text
    assert "```text\ncaption\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n" in text
    printed = capsys.readouterr().out  # the console still sees everything
    assert "case b: 12 img/s" in printed and f"wrote {path}" in printed


def test_report_to_without_a_path_only_prints(capsys):
    with timing.report_to(None, "Title"):
        print("x")
    assert capsys.readouterr().out == "x\n"
