"""The ``qatcore`` command line: thin faces on the library's functions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _reproduce(args: argparse.Namespace) -> int:
    from qatcore.reproduce import reproduce

    report = reproduce(
        Path(args.notebooks), Path(args.build), Path(args.figures), inplace=args.inplace, only=args.only
    )
    print(report.to_markdown())
    if report.ok:
        print(f"\nall {len(report.runs)} notebooks ran; every check passed")
        return 0
    print(f"\nFAILED: {len(report.failed_checks)} check(s) failed; "
          f"{sum(bool(r.error) for r in report.runs)} notebook(s) stopped with an error")
    return 1


def _equivalence(args: argparse.Namespace) -> int:
    import json

    from qatcore import distributed, runtime
    from qatcore.equivalence import EquivalenceConfig, run_equivalence

    if args.nproc > 1 and not distributed.init_from_environment():
        return distributed.launch(args.nproc, _without_nproc(args.argv))
    runtime.configure(seed=args.seed)
    config = EquivalenceConfig(
        estimator=args.estimator, bits=args.bits, optimizer=args.optimizer, lr=args.lr,
        epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
        dataset=args.dataset, data_dir=args.data_dir, device=args.device,
    )
    summary = run_equivalence(config, progress=not args.json and distributed.is_main_process()).to_dict()
    if not distributed.is_main_process():
        return 0
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{config.estimator}, {config.bits} bits, {config.optimizer}, lr {config.rate:g}, α = {summary['alpha']:.4f}")
    print(f"{'pair':<12}{'quantized agreement':>22}{'alignment error':>18}{'predictions':>14}")
    for pair, metrics in summary["pairs"].items():
        print(f"{pair:<12}{metrics['quantized_weight_agreement']:>22.4f}{metrics['alignment_error']:>18.4f}"
              f"{metrics['prediction_agreement']:>14.4f}")
    return 0


def _without_nproc(argv: list[str]) -> list[str]:
    """``argv`` less its ``--nproc N`` (the processes torchrun starts must not launch again)."""
    kept, args = [], iter(argv)
    for arg in args:
        if arg == "--nproc":
            next(args, None)
        elif not arg.startswith("--nproc="):
            kept.append(arg)
    return kept


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qatcore", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    rep = commands.add_parser("reproduce", help="run every notebook headless; print the report table")
    rep.add_argument("--notebooks", default="notebooks", help="folder of notebooks (default: notebooks)")
    rep.add_argument("--build", default="build/notebooks", help="where executed copies go")
    rep.add_argument("--figures", default="figures", help="where figures are written")
    rep.add_argument("--inplace", action="store_true", help="rewrite the notebooks themselves")
    rep.add_argument("--only", default="", metavar="PREFIX", help="only notebooks whose name starts so")
    rep.set_defaults(run=_reproduce)

    from qatcore.data import DATASETS
    from qatcore.estimators import names
    from qatcore.train import OPTIMIZERS

    eq = commands.add_parser(
        "equivalence", help="train a custom estimator, its adjusted STE, the ablation and the jitter baseline"
    )
    eq.add_argument("--estimator", default="dsq", choices=names())
    eq.add_argument("--bits", type=int, default=2)
    eq.add_argument("--optimizer", default="sgd", choices=OPTIMIZERS)
    eq.add_argument("--lr", type=float, default=None, help="learning rate (default: per optimizer)")
    eq.add_argument("--epochs", type=int, default=10)
    eq.add_argument("--batch-size", type=int, default=64)
    eq.add_argument("--seed", type=int, default=0)
    eq.add_argument("--dataset", default="digits", choices=DATASETS)
    eq.add_argument("--data-dir", default=None, help="folder of MNIST-format IDX files")
    eq.add_argument("--device", default="cpu", help="torch device to train on (cpu, cuda)")
    eq.add_argument("--json", action="store_true", help="print one JSON object")
    eq.add_argument(
        "--nproc", type=int, default=1,
        help="train on N local processes with DistributedDataParallel (through torchrun)",
    )
    eq.set_defaults(run=_equivalence)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:
        parser.exit(2, f"qatcore {args.command}: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
