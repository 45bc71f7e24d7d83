"""benchmarks/compare.py, the `make perf` comparison, on pytest-benchmark JSON files."""

import importlib.util
import json
from pathlib import Path

spec = importlib.util.spec_from_file_location("compare", Path(__file__).parents[1] / "benchmarks" / "compare.py")
compare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare)


def _write(path: Path, mins: dict[str, float], ratio: float) -> Path:
    benchmarks = [{"fullname": name, "stats": {"min": m}, "extra_info": {"ratio_ours_over_ref": ratio, "n": 4}}
                  for name, m in mins.items()]
    path.write_text(json.dumps({"benchmarks": benchmarks}))
    return path


def test_a_slower_benchmark_fails_and_ratios_are_shown(tmp_path, capsys):
    base = _write(tmp_path / "base.json", {"a": 1.0, "b": 2.0, "gone": 1.0}, 0.5)
    same = _write(tmp_path / "same.json", {"a": 1.2, "b": 2.2, "new": 1.0}, 0.6)
    assert compare.main([str(base), str(same)]) == 0
    out = capsys.readouterr().out
    assert "| a | 1 | 1.2 | 1.20 | ratio_ours_over_ref 0.5 → 0.6 |" in out
    assert "| gone | 1 | – | only in one run |" in out and "| new | – | 1 | only in one run |" in out
    slow = _write(tmp_path / "slow.json", {"a": 1.6, "b": 2.0}, 0.5)
    assert compare.main([str(base), str(slow)]) == 1
    captured = capsys.readouterr()
    assert "1.60 SLOWER" in captured.out and "more than 1.5× slower" in captured.err
    assert compare.main([str(base), str(slow), "--slower", "2"]) == 0


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    base = _write(tmp_path / "base.json", {"a": 1.0}, 0.5)
    (tmp_path / "bad.json").write_text("{not json")
    assert compare.main([str(base), str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"compare: {tmp_path / 'bad.json'} is not a pytest-benchmark JSON file") and "\n" not in err
