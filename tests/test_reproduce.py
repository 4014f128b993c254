import json

from pipelines import reproduce
from pipelines.papers.robust_tickets import NUMBERS


def test_reproduce_robust_tickets_smoke_writes_every_row_with_the_paper_numbers(tmp_path):
    out = tmp_path / "rt"
    result = reproduce.main(["robust_tickets", "--budget", "smoke", "--seeds", "1", "--output_dir", str(out),
                             "--executor", "inline"])
    assert not [o for o in result["outcomes"].values() if o["status"] in ("failed", "blocked")]
    report = (out / "report.md").read_text()
    results = json.loads((out / "results.json").read_text())
    rows = ["fine-tune", "FreeLB", "IMP ticket", "random ticket", "robust ticket", "robust ticket w/o adversary"]
    assert sorted(results["sst2"]) == sorted(rows)
    for row in rows:
        assert f"| {row} |" in report
        cell = results["sst2"][row]["TextFooler Aua"]
        assert cell["n"] == 1 and 0.0 <= cell["mean"] <= 100.0 and cell["runs"]
        assert (out / cell["runs"][0] / "metrics.json").is_file()
        for column, value in NUMBERS["sst2"].get(row, {}).items():
            assert results["sst2"][row][column]["paper"] == value
    assert "| fine-tune | 92.0 |" in report and "26.7" in report
    assert (out / "figure2.png").stat().st_size > 1000
