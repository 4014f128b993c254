"""Attack metrics with TextAttack's definitions, its summary JSON, table and CSV, and a methods-side-by-side table.

With n examples of which `skipped` were already misclassified (no attack run):
  Original accuracy      Clean = (n - skipped) / n
  Accuracy under attack  Aua   = failed / n
  Attack success rate    Suc   = successful / (successful + failed) = (Clean - Aua) / Clean
  Avg num queries        mean queries over attacked (non-skipped) examples
  Avg perturbed word %   mean of perturbed / words over successful attacks
Values are fractions in `metrics.json` (like HF's eval_accuracy) and percentages in the tables.
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Mapping, Sequence

import numpy as np

from ..io import atomic_write_text
from .search import FAILED, SKIPPED, SUCCEEDED, AttackResult
from .text import split_words


def summarize(results: Sequence[AttackResult]) -> dict[str, float]:
    """The attack metrics under the names `pipelines/evaluate.py` writes to metrics.json."""
    n = len(results)
    succeeded = [r for r in results if r.status == SUCCEEDED]
    failed = sum(r.status == FAILED for r in results)
    skipped = sum(r.status == SKIPPED for r in results)
    attacked = len(succeeded) + failed
    return {
        "num_examples": n,
        "num_successful": len(succeeded),
        "num_failed": failed,
        "num_skipped": skipped,
        "clean_accuracy": attacked / n if n else 0.0,
        "accuracy_under_attack": failed / n if n else 0.0,
        "attack_success_rate": len(succeeded) / attacked if attacked else 0.0,
        "avg_queries": float(np.mean([r.queries for r in results if r.status != SKIPPED])) if attacked else 0.0,
        "perturbed_word_ratio": float(np.mean([r.perturbed_word_ratio for r in succeeded])) if succeeded else 0.0,
        "avg_words_per_input": float(np.mean([r.num_words for r in results])) if n else 0.0,
    }


def _grid(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join([line, body[0], line, *body[1:], line])


def textattack_summary(summary: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """TextAttack's results_summary.json ({"Attack Results": {row label: value}}): counts as integers, the rest
    rounded to 2 decimals, percentages in percent (AttackLogManager.log_summary + JsonSummaryLogger)."""
    return {"Attack Results": {
        "Number of successful attacks:": int(summary["num_successful"]),
        "Number of failed attacks:": int(summary["num_failed"]),
        "Number of skipped attacks:": int(summary["num_skipped"]),
        "Original accuracy:": round(100 * summary["clean_accuracy"], 2),
        "Accuracy under attack:": round(100 * summary["accuracy_under_attack"], 2),
        "Attack success rate:": round(100 * summary["attack_success_rate"], 2),
        "Average perturbed word %:": round(100 * summary["perturbed_word_ratio"], 2),
        "Average num. words per input:": round(summary["avg_words_per_input"], 2),
        "Avg num queries:": round(summary["avg_queries"], 2),
    }}


def summary_table(summary: Mapping[str, float]) -> str:
    """TextAttack's "Attack Results" table for one attack run."""
    rows = textattack_summary(summary)["Attack Results"]
    percent = {"Original accuracy:", "Accuracy under attack:", "Attack success rate:", "Average perturbed word %:"}
    return _grid([("Attack Results", "")] + [(k, f"{v}%" if k in percent else str(v)) for k, v in rows.items()])


def comparison_table(rows: Mapping[str, Mapping[str, float]]) -> str:
    """Methods side by side in the papers' layout: | method | Clean% | Aua% | Suc% | #Query | Perturbed% |."""
    lines = ["| method | Clean% | Aua% | Suc% | #Query | Perturbed% |", "|---|---:|---:|---:|---:|---:|"]
    for name, s in rows.items():
        lines.append(f"| {name} | {100 * s['clean_accuracy']:.1f} | {100 * s['accuracy_under_attack']:.1f} | "
                     f"{100 * s['attack_success_rate']:.1f} | {s['avg_queries']:.1f} | "
                     f"{100 * s['perturbed_word_ratio']:.1f} |")
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ("original_text", "perturbed_text", "original_score", "perturbed_score", "original_output",
               "perturbed_output", "ground_truth_output", "num_queries", "result_type")
SPLIT_TOKEN = "<SPLIT>"  # AttackedText.SPLIT_TOKEN: how CSVLogger writes the newline between two text fields


def _marked(fields: Sequence[str], changed: set[int]) -> str:
    """The fields joined by SPLIT_TOKEN with every changed word wrapped in [[ ]] (CSVLogger's color_method="file")."""
    words = split_words(tuple(fields))
    pieces: list[list[str]] = [[] for _ in fields]
    cursors = [0] * len(fields)
    for position in sorted(changed):
        if position >= len(words):
            continue
        w = words[position]
        pieces[w.field] += [fields[w.field][cursors[w.field]:w.start], f"[[{w.text}]]"]
        cursors[w.field] = w.end
    return SPLIT_TOKEN.join("".join(p) + f[c:] for p, f, c in zip(pieces, fields, cursors))


def _changed_positions(result: AttackResult) -> set[int]:
    """Word positions whose text differs between original and perturbed (TextAttack's all_words_diff)."""
    before = [w.text for w in split_words(result.original)]
    after = [w.text for w in split_words(result.perturbed)]
    return {i for i in range(min(len(before), len(after))) if before[i] != after[i]}


def csv_rows(results: Sequence[AttackResult]) -> list[list]:
    rows = []
    for r in results:
        changed = _changed_positions(r)
        rows.append([_marked(r.original, changed), _marked(r.perturbed, changed), r.original_score,
                     r.perturbed_score, r.original_prediction, r.perturbed_prediction, r.label, r.queries,
                     r.status.capitalize()])
    return rows


def write_textattack_outputs(prefix: str | os.PathLike, results: Sequence[AttackResult]) -> dict[str, float]:
    """`<prefix>_results_summary.json`, `<prefix>_summary.txt` (the printed table) and `<prefix>_results.csv`
    (TextAttack's CSVLogger columns), each written atomically; returns the summary."""
    summary = summarize(results)
    # TextAttack's JsonSummaryLogger: json.dump(indent=4), rows in table order
    atomic_write_text(f"{prefix}_results_summary.json", json.dumps(textattack_summary(summary), indent=4))
    atomic_write_text(f"{prefix}_summary.txt", summary_table(summary) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_NONNUMERIC)
    writer.writerow(CSV_COLUMNS)
    writer.writerows(csv_rows(results))
    atomic_write_text(f"{prefix}_results.csv", buffer.getvalue())
    return summary
