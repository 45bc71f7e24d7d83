"""Entries and the maintainers' verified.json: what validate rejects (one line each), limits,
verification that an entry cannot claim, and loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from board_records import make_record

from ntkbench import cli
from ntkbench.leaderboard.entries import load_entries, validate, verified_path
from ntkbench.leaderboard.export import make_entry
from ntkbench.leaderboard.schema import MAX_FILE_BYTES, MAX_RESULTS, Entry, compute_checksum
from ntkbench.record import Config


def good_entry(seeds=(0, 1), **options) -> Entry:
    return make_entry([make_record("iris", "ntk", seed=s, acc=0.9 + s / 100, **options) for s in seeds])


@pytest.fixture
def entries(tmp_path) -> Path:
    folder = tmp_path / "entries"
    folder.mkdir()
    entry = good_entry()
    (folder / entry.file_name).write_text(entry.to_text())
    return folder


def write(path: Path, data: dict, rehash: bool = True) -> None:
    if rehash:  # so that the one intended problem is the only one
        data["checksum"] = compute_checksum(data)
    path.write_text(json.dumps(data, sort_keys=True, indent=2) + "\n")


def test_a_made_entry_is_valid_and_complete(entries):
    (path,) = entries.glob("*.json")
    data = json.loads(path.read_text())
    record = make_record("iris", "ntk")
    assert path.name == f"iris__ntk__mlp__{record.fingerprint}__amd-epyc-7b13.json"
    assert data["schema_version"] == 2 and data["config"] == record.config.to_json()
    assert data["fingerprint"] == record.fingerprint and data["commit"] == record.environment.git_commit
    assert "git_commit" not in data["environment"] and "verified" not in data and "verified_by" not in data
    assert [r["seed"] for r in data["results"]] == [0, 1]
    assert data["results"][0] == {"seed": 0, "n_train": 100, "run_id": record.run_id, **record.evaluation.to_json()}
    assert data["command"] == ("ntkbench run --task iris --method ntk --arch mlp --seeds 0,1 --device cpu "
                               "--set arch.depth=2 --set arch.width=256 --set ntk.lr=0.1 "
                               "--set task.label_noise=0.0 --set task.n_train=100")
    assert validate(entries) == [] and validate(path) == []
    assert path.read_text() == good_entry().to_text()  # deterministic


def bad_variants(good: dict, folder: Path) -> dict[str, tuple[str, str]]:
    """Bad copies of a good entry; file name → (field, a word of the one-line reason)."""
    def variant(name: str, change, rehash: bool = True) -> None:
        data = json.loads(json.dumps(good))
        change(data)
        write(folder / name, data, rehash)

    text = json.dumps(good, indent=2)
    (folder / "truncated.json").write_text(text[: len(text) // 2])
    (folder / "huge.json").write_text(text + " " * MAX_FILE_BYTES)  # valid JSON, too big
    variant("missing.json", lambda d: d.pop("commit"))
    variant("accuracy.json", lambda d: d["results"][0].update(test_accuracy=1.5))
    variant("extra.json", lambda d: d.update(comment="hello"))
    variant("tampered.json", lambda d: d["results"][1].update(time_fit_s=d["results"][1]["time_fit_s"] + 1), False)
    variant("version.json", lambda d: d.update(schema_version=1))
    variant("forged.json", lambda d: d.update(verified=True, verified_by="me"))
    variant("seeds.json", lambda d: d.update(results=[{**d["results"][0], "seed": s, "run_id": f"r{s}"}
                                                     for s in range(MAX_RESULTS + 1)]))

    def escape(d: dict) -> None:
        d["config"]["task"] = "../../etc/passwd"
        d["fingerprint"] = Config.from_json(d["config"]).fingerprint

    variant("escape.json", escape)
    variant("hostname.json", lambda d: d["environment"].update(hostname="h" * 300))
    variant("option.json", lambda d: d["config"]["arch_options"].update(note="x" * 2000))
    variant("fingerprint.json", lambda d: d["config"]["arch_options"].update(width=64))
    variant("seed.json", lambda d: d["results"][1].update(seed=0))
    variant("misnamed.json", lambda d: None)
    return {"truncated.json": ("<file>", "not valid JSON"), "huge.json": ("<file>", "limited to 1048576 bytes"),
            "missing.json": ("commit", "required"), "accuracy.json": ("results.0.test_accuracy", "less than or equal"),
            "extra.json": ("comment", "not permitted"), "tampered.json": ("checksum", "mismatch"),
            "version.json": ("schema_version", "2"), "forged.json": ("verified", "cannot verify itself"),
            "seeds.json": ("results", f"at most {MAX_RESULTS}"), "escape.json": ("config.task", "pattern"),
            "hostname.json": ("environment.hostname", "at most 255"),
            "option.json": ("config.arch_options.note", "limited to 1000"),
            "fingerprint.json": ("fingerprint", "not the config's"), "seed.json": ("results", "repeat a seed"),
            "misnamed.json": ("<file>", "is named iris__ntk__mlp__")}


def test_validate_reports_each_bad_file_in_one_line_and_load_keeps_the_good(entries, capsys):
    (good_path,) = entries.glob("*.json")
    expected = bad_variants(json.loads(good_path.read_text()), entries)
    problems = validate(entries)
    assert sorted(Path(p.file).name for p in problems) == sorted(expected)  # one problem each
    for problem in problems:
        field, word = expected[Path(problem.file).name]
        assert problem.field == field and word in problem.reason, str(problem)
        assert "\n" not in str(problem) and len(str(problem)) < 400
    results, load_problems = load_entries(entries)
    assert load_problems == problems
    assert sorted(r.record.seed for r in results) == [0, 1] and {r.source for r in results} == {"self-reported"}
    assert cli.main(["validate", str(entries)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == len(expected) and any("forged.json: verified: an entry cannot verify itself" in e for e in err)


def test_maintainers_verify_by_checksum(entries, capsys):
    (path,) = entries.glob("*.json")
    checksum = json.loads(path.read_text())["checksum"]
    listing = {"schema_version": 1, "verified": [{"checksum": checksum, "by": "Ann", "date": "2026-12-01"}]}
    verified_path(entries).write_text(json.dumps(listing))
    results, problems = load_entries(entries)
    assert problems == [] and {(r.source, r.verified_by) for r in results} == {("verified", "Ann on 2026-12-01")}
    assert validate(entries) == [] and cli.main(["validate", str(entries)]) == 0

    edited = json.loads(path.read_text())  # a re-export with other figures: a new checksum
    edited["results"][0]["test_accuracy"] = 1.0
    write(path, edited)
    results, problems = load_entries(entries)
    assert {r.source for r in results} == {"self-reported"} and problems == []
    (problem,) = validate(entries)
    assert problem.file == str(verified_path(entries)) and f"checksum {checksum} names no valid entry" in problem.reason


def test_a_bad_verified_file_is_reported_and_verifies_nothing(entries):
    (path,) = entries.glob("*.json")
    checksum = json.loads(path.read_text())["checksum"]
    listing = {"schema_version": 1, "verified": [{"checksum": checksum, "by": "Ann", "date": "2026-12-01"},
                                                 {"checksum": "xyz", "by": "", "date": "yesterday"}]}
    verified_path(entries).write_text(json.dumps(listing))
    fields = sorted(p.field for p in validate(entries))
    assert fields == ["verified.1.by", "verified.1.checksum", "verified.1.date"]
    results, problems = load_entries(entries)
    assert {r.source for r in results} == {"self-reported"} and len(problems) == 3
    listing["verified"] = [listing["verified"][0]] * 2
    verified_path(entries).write_text(json.dumps(listing))
    (problem,) = validate(entries)
    assert problem.field == "verified" and "listed twice" in problem.reason
    verified_path(entries).write_text('{"schema_version": 1, "verified": [], "by": "me"}')
    assert [p.field for p in validate(entries)] == ["by"]


def test_a_run_in_two_entries_is_reported(entries):
    other = make_entry([make_record("iris", "ntk", seed=0, arch_options={"depth": 1, "width": 64},
                                    run_id=good_entry().results[0].run_id)])
    (entries / other.file_name).write_text(other.to_text())
    (problem,) = validate(entries)
    assert problem.field == "results" and "is also in" in problem.reason
    results, _ = load_entries(entries)
    assert len(results) == 2  # the second file (in name order) is left out


def test_make_entry_refuses_mixed_commits_duplicate_seeds_and_bad_names():
    with pytest.raises(ValueError, match=r"differ in git_commit; export runs of one commit"):
        make_entry([make_record("iris", "ntk", seed=0), make_record("iris", "ntk", seed=1, commit="f" * 40)])
    with pytest.raises(ValueError, match=r"are all seed 0; export one run per seed"):
        make_entry([make_record("iris", "ntk", seed=0, finished_at=f"2026-12-0{d}T00:00:00Z") for d in (1, 2)])
    with pytest.raises(ValueError, match=r"would not be a valid entry: config\.task"):
        make_entry([make_record("../../etc/passwd", "ntk")])


def test_load_entries_never_raises(tmp_path):
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    results, problems = load_entries(tmp_path)
    assert results == [] and {(Path(p.file).name, p.field) for p in problems} == {
        ("list.json", "<file>"), ("binary.json", "<file>"), ("deep.json", "<file>")}
    assert load_entries(tmp_path / "nowhere") == ([], []) and validate(tmp_path / "nowhere") != []
