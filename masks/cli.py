"""`subnets-masks` / `python -m subnets.masks`: list, show, diff, plot, export, verify and remove mask records.

Human-readable tables by default, `--json` for scripts. Errors print one sentence and exit with status 2;
`verify` exits with status 1 when it finds a damaged record.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from subnets.errors import SubnetsError
from subnets.io import atomic_write_bytes, atomic_write_json, check_writable_dir
from subnets.sparsity import keep_probability, parse_pattern, pattern_violations
from subnets.weights import apply_masks, save_plain_model

from .record import MaskRecord
from .report import diff_masks, grid_columns, layer_kind_grid, record_grid, state_values, update_frequency_by_layer
from .store import DEFAULT_ROOT, ROOT_ENV, MaskStore, store_root

EXPORT_FORMATS = ("dense", "prune", "pt", "sparse")
EXPORT_MARKER = "export.json"  # in an exported folder: {"record": id, "format": ...}, so a re-export may replace it


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="subnets-masks", description="Inspect and manage the subnets mask store.")
    parser.add_argument("--root", default=None, help=f"mask store directory (default: ${ROOT_ENV}, else ./{DEFAULT_ROOT})")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    commands = parser.add_subparsers(dest="command", required=True)

    listing = commands.add_parser("list", parents=[common], help="records, filtered")
    for field in ("task", "method", "model", "kind"):
        listing.add_argument(f"--{field}")
    listing.add_argument("--min-sparsity", type=float)
    listing.add_argument("--max-sparsity", type=float)

    show = commands.add_parser("show", parents=[common], help="metadata and a layer x matrix kind table")
    show.add_argument("id")

    diff = commands.add_parser("diff", parents=[common], help="IoU (Jaccard) and Hamming distance of two tickets")
    diff.add_argument("a")
    diff.add_argument("b")

    plot = commands.add_parser("plot", parents=[common], help="PNG heat map")
    plot.add_argument("id")
    plot.add_argument("--out", help="PNG path (default: <id prefix>.png)")
    plot.add_argument("--force", action="store_true", help="replace --out if it exists")

    export = commands.add_parser("export", parents=[common], help="write a mask or a masked model elsewhere")
    export.add_argument("id")
    export.add_argument("--format", choices=EXPORT_FORMATS, required=True,
                        help="dense: masked from_pretrained dir; sparse: sparse checkpoint; prune: structured; pt: torch.save of the mask dict")
    export.add_argument("--model", help="base model (name, path or 'minilm') for dense/sparse/prune")
    export.add_argument("--out", required=True, help="output directory (or .pt file)")
    export.add_argument("--force", action="store_true",
                        help="replace --out even if it holds something other than an earlier export of this record")

    verify = commands.add_parser("verify", parents=[common], help="check checksums of one record or all")
    verify.add_argument("id", nargs="?")

    remove = commands.add_parser("rm", parents=[common], help="delete records")
    remove.add_argument("ids", nargs="+")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        root = store_root(args.root)
        if not root.is_dir():
            raise SubnetsError(f"No mask store at {root}: the directory does not exist; expected --root DIR or "
                               f"${ROOT_ENV}.")
        return COMMANDS[args.command](MaskStore(root), args)
    except SubnetsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


# ---- output helpers --------------------------------------------------------------------------------------------
def emit_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in header]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def grid_table(grid: dict[str, Any]) -> str:
    columns = grid_columns(grid)
    rows = [[f"layer {i}"] + [row.get(k) for k in columns] for i, row in grid["layers"].items()]
    rows += [[kind] + [value] + [None] * (len(columns) - 1) for kind, value in sorted(grid["other"].items())]
    return table(["", *columns], rows)


# ---- commands --------------------------------------------------------------------------------------------------
def cmd_list(store: MaskStore, args: argparse.Namespace) -> int:
    records, skipped = store.scan(task=args.task, method=args.method, model=args.model, kind=args.kind,
                                  min_sparsity=args.min_sparsity, max_sparsity=args.max_sparsity)
    for record_id, problem in sorted(skipped.items()):
        print(f"warning: skipped unreadable record {record_id[:12]} ({problem}); run `subnets-masks verify`.",
              file=sys.stderr)
    if args.json:
        emit_json([summary_row(r) for r in records])
        return 0
    rows = [[r.id[:12], r.kind, r.meta.get("method"), r.meta.get("task"), r.meta.get("model"),
             r.global_sparsity, r.meta.get("created")] for r in records]
    print(table(["id", "kind", "method", "task", "model", "sparsity", "created"], rows))
    return 0


def summary_row(record: MaskRecord) -> dict[str, Any]:
    keys = ("kind", "method", "task", "model", "target_sparsity", "seed", "step", "epoch", "parent", "created")
    return {"id": record.id, **{k: record.meta.get(k) for k in keys}, "sparsity": record.global_sparsity}


def cmd_show(store: MaskStore, args: argparse.Namespace) -> int:
    record = store.get(args.id)
    grid, label = record_grid(record)
    if args.json:
        emit_json({"id": record.id, "record": record.meta, "grid": grid, "grid_values": label})
        return 0
    meta = record.meta
    print(f"id:        {record.id}")
    for key in ("kind", "method", "model", "model_fingerprint", "task", "seed", "step", "epoch", "parent", "created"):
        if meta.get(key) is not None:
            print(f"{key + ':':<10} {meta[key]}")
    sparsity = meta.get("sparsity")
    if sparsity:
        target = meta.get("target_sparsity")
        print(f"sparsity:  {sparsity['global']:.4f} ({sparsity['pruned']} of {sparsity['total']} weights pruned; "
              f"over {sparsity['denominator']})" + (f", target {target}" if target is not None else ""))
    if meta.get("pattern") is not None and record.kind == "ticket":
        print(f"pattern:   {pattern_line(record)}")
    if record.kind == "update":
        print(f"steps:     {meta['steps_logged']} logged" + ("" if meta.get("complete") else " (log not closed)"))
    print(f"tensors:   {len(meta['tensors'])}\n\n{label} per layer x matrix kind:")
    print(grid_table(grid))
    return 0


def pattern_line(record: MaskRecord) -> str:
    """The ticket's declared N:M pattern, checked again on its masks."""
    pattern = parse_pattern(record.meta["pattern"])
    if pattern is None:
        return "unstructured"
    bad = pattern_violations(record.masks, pattern)
    n, m = pattern
    if bad:
        return f"{n}:{m}, NOT held by {len(bad)} of {len(record.masks)} tensors (first: {bad[0]})"
    return (f"{n}:{m} (checked: every group of {m} consecutive input weights keeps {n}, in all {len(record.masks)} "
            f"tensors)")


def cmd_diff(store: MaskStore, args: argparse.Namespace) -> int:
    a, b = store.get(args.a), store.get(args.b)
    result = diff_masks(a.masks, b.masks)
    if args.json:
        emit_json({"a": a.id, "b": b.id, **result})
        return 0
    rows = [[key, v["iou"], v["hamming"], v["hamming_fraction"]] for key, v in result["per_layer"].items()]
    rows.append(["overall", result["iou"], result["hamming"], result["hamming_fraction"]])
    print(f"a: {a.id}\nb: {b.id}\n")
    print(table(["layer", "iou", "hamming", "hamming frac"], rows))
    return 0


def cmd_plot(store: MaskStore, args: argparse.Namespace) -> int:
    from .plot import image_format, plot_grid, plot_steps

    record = store.get(args.id)
    out = output_path(args.out or f"{record.id[:12]}.png")
    if out.is_dir() or (out.exists() and not args.force):
        raise SubnetsError(f"--out {out} already exists; expected a new file path, or --force to replace a file.")
    check_writable_dir(out.parent, "Plot folder")
    image_format(out)
    title = f"{record.id[:12]} {record.meta.get('method') or ''} {record.meta.get('task') or ''}".strip()
    if record.kind == "update":
        steps, per_layer = update_frequency_by_layer(record)
        if not steps:
            raise SubnetsError(f"Update-mask record {record.id[:12]} has no logged steps to plot.")
        plot_steps(steps, per_layer, title, out)
    elif record.kind == "state" and record.meta.get("method") == "hard_concrete":
        # gate log-alphas drawn as keep probabilities P(z != 0) (docs/methods.md, hard-concrete), with a histogram
        shapes = {name: info["shape"] for name, info in record.meta["tensors"].items()}
        means = {name: float(keep_probability(t.float()).mean()) for name, t in record.masks.items()}
        plot_grid(layer_kind_grid(means, shapes), title, "mean keep probability", out,
                  values=keep_probability(state_values(record)))
    elif record.kind == "state":  # score values: coloured over the cells' own range, with a histogram
        grid, label = record_grid(record)
        cells = [v for row in grid["layers"].values() for v in row.values()]
        low, high = min(cells), max(cells)
        plot_grid(grid, title, label, out, scale=(low, high if high > low else low + 1.0), values=state_values(record))
    else:
        grid, label = record_grid(record)
        plot_grid(grid, title, label, out)
    if args.json:
        emit_json({"id": record.id, "png": str(out)})
    else:
        print(f"wrote {out}")
    return 0


def output_path(option: str) -> Path:
    """An --out path; a link stands for its target, so that writing there never replaces the link itself."""
    path = Path(option)
    return path.resolve() if path.is_symlink() else path


def check_export_target(out: Path, record_id: str, force: bool) -> None:
    """Refuse to replace a folder unless it is empty, an earlier export of the same record, or --force is given."""
    check_writable_dir(out, "Export target")
    if force or not out.exists() or not any(out.iterdir()):
        return
    try:
        earlier = json.loads((out / EXPORT_MARKER).read_text()).get("record")
    except (OSError, ValueError, AttributeError):
        earlier = None
    if earlier != record_id:
        raise SubnetsError(f"--out {out} is not empty and is not an earlier export of record {record_id[:12]}; "
                           f"expected a new or empty directory, or --force to replace it.")


def _export_pt(record: MaskRecord, args: argparse.Namespace) -> None:
    """torch.save of the mask dict; an existing file is replaced only if it has these exact bytes, or with --force
    (the file is never loaded: it is a pickle)."""
    out = Path(args.out)
    check_writable_dir(out.parent, "Export target folder")
    if out.is_dir():
        raise SubnetsError(f"--out {out} is a directory; expected a file path for --format pt.")
    buffer = io.BytesIO()
    torch.save(record.masks, buffer)
    if out.exists() and not args.force and out.read_bytes() != buffer.getvalue():
        raise SubnetsError(f"--out {out} already exists and is not an export of record {record.id[:12]}; expected a "
                           f"new file path, or --force to replace it.")
    atomic_write_bytes(out, buffer.getvalue())


def cmd_export(store: MaskStore, args: argparse.Namespace) -> int:
    record = store.get(args.id)
    args.out = str(output_path(args.out))
    if args.format == "pt":
        _export_pt(record, args)
    else:
        out = Path(args.out)
        check_export_target(out, record.id, args.force)
        EXPORTERS[args.format](record, args)
        atomic_write_json(out / EXPORT_MARKER, {"record": record.id, "format": args.format})
    if args.json:
        emit_json({"id": record.id, "format": args.format, "out": args.out})
    else:
        print(f"wrote {args.out} ({args.format})")
    return 0


def _masked_base_model(record: MaskRecord, args: argparse.Namespace):
    """The base model named by --model, loaded, with the record's binary mask applied."""
    from subnets.models import load_classifier

    if record.kind != "ticket":
        raise SubnetsError(f"Record {record.id[:12]} is a {record.kind} record; export {args.format} needs a binary ticket.")
    if not args.model:
        raise SubnetsError(f"Export format '{args.format}' needs the base model: pass --model NAME_OR_PATH.")
    model, tokenizer = load_classifier(args.model)
    return apply_masks(model, record.masks), tokenizer


def _export_dense(record: MaskRecord, args: argparse.Namespace) -> None:
    model, tokenizer = _masked_base_model(record, args)
    save_plain_model(model, tokenizer, args.out)


def _export_sparse(record: MaskRecord, args: argparse.Namespace) -> None:
    from .checkpoint import save_sparse_checkpoint

    model, tokenizer = _masked_base_model(record, args)
    save_sparse_checkpoint(model, record.masks, args.out, tokenizer=tokenizer, mask_id=record.id)


def _export_prune(record: MaskRecord, args: argparse.Namespace) -> None:
    """Physically remove the heads and FFN neurons a structured ticket prunes (`subnets.export`)."""
    from subnets.export import compact_export, save_compact, structured_masks_from_weight_masks

    model, tokenizer = _masked_base_model(record, args)
    try:
        heads, neurons = structured_masks_from_weight_masks(model, record.masks)
    except SubnetsError as e:
        if record.meta.get("granularity", "weight") == "weight":
            raise
        raise SubnetsError(f"{e} (A structured search's own ticket keeps each matrix's gates; stage 3 draws whole "
                           f"heads and neurons from its state: subnets-retrain --mask <run> --sparsity S.)") from e
    save_compact(compact_export(model, heads, neurons), tokenizer, args.out,
                 source=f"{args.model} with mask record {record.id[:12]}")


EXPORTERS: dict[str, Callable[[MaskRecord, argparse.Namespace], None]] = {
    "dense": _export_dense,
    "sparse": _export_sparse,
    "prune": _export_prune,
}


def cmd_verify(store: MaskStore, args: argparse.Namespace) -> int:
    results = store.verify(args.id)
    if args.json:
        emit_json(results)
    else:
        for r in results:
            print(f"ok   {r['id']}" if r["ok"] else f"BAD  {r['id']}: {r['problem']}")
        print(f"{sum(r['ok'] for r in results)} of {len(results)} records ok")
    return 0 if all(r["ok"] for r in results) else 1


def cmd_rm(store: MaskStore, args: argparse.Namespace) -> int:
    full_ids = [store.resolve(i) for i in args.ids]  # resolve all first: nothing is removed if one id is bad
    removed = [store.remove(i) for i in full_ids]
    if args.json:
        emit_json({"removed": removed})
    else:
        for record_id in removed:
            print(f"removed {record_id}")
    return 0


COMMANDS: dict[str, Callable[[MaskStore, argparse.Namespace], int]] = {
    "list": cmd_list,
    "show": cmd_show,
    "diff": cmd_diff,
    "plot": cmd_plot,
    "export": cmd_export,
    "verify": cmd_verify,
    "rm": cmd_rm,
}
