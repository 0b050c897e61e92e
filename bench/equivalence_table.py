"""Tabulate ``qatcore equivalence --json`` results (one JSON file per run) as markdown.

The paper-scale run of notebook 02 (Fashion-MNIST, batch 600, 10 epochs, the paper's rates):

    for opt in sgd adam; do lr=1e-3; [ $opt = adam ] && lr=1e-4
      for est in dsq pwl; do
        qatcore equivalence --dataset fashion-mnist --data-dir DIR --optimizer $opt --lr $lr \\
          --batch-size 600 --epochs 10 --estimator $est --device cuda --json \\
          > bench/results/equivalence_fashion_mnist/$est-$opt.json
      done
    done
    python bench/equivalence_table.py bench/results/equivalence_fashion_mnist \\
      > bench/results/equivalence_fashion_mnist.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def table(folder: Path) -> str:
    """One row per run: agreement of the adjusted STE, the jitter baseline and the ablation."""
    rows = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    if not rows:
        raise SystemExit(f"no *.json results in {folder}")
    lines = [
        "| estimator | optimizer | lr | α | adjusted STE agreement | jitter agreement | margin (points) "
        "| ablation agreement | alignment error | test accuracy (custom / adjusted) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        margin = 100 * (r["quantized_weight_agreement"] - r["jitter_agreement"])
        acc = r["test_accuracy"]
        lines.append(
            f"| {r['estimator']} | {r['optimizer']} | {r['lr']:g} | {r['alpha']:.4f} "
            f"| {r['quantized_weight_agreement']:.4f} | {r['jitter_agreement']:.4f} | {margin:+.2f} "
            f"| {r['ablation_agreement']:.4f} | {r['alignment_error']:.4f} "
            f"| {acc['custom']:.4f} / {acc['adjusted']:.4f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(Path(sys.argv[1])))
