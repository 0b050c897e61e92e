"""The ``qatcore`` command line: thin faces on the library's functions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

RESULTS_HEADER = """# Results

Every check and headline number of the course, as `qatcore reproduce` last wrote them (default
settings, digits). *Our threshold* is our own bar; *paper (source)* quotes a paper's claim, with where
it says so, and sits beside our number only when the two measure the same thing.

"""


def _reproduce(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from qatcore.course.reproduce import QUICK_PARAMETERS, reproduce

    parameters = {}
    if args.dataset != "digits":
        parameters = {"PAPER_SCALE": True, "DATASET": args.dataset, "DATA_DIR": args.data_dir}
    if args.quick:
        parameters |= QUICK_PARAMETERS

    def announce(run) -> None:
        status = f"ERROR: {run.error}" if run.error else "ok"
        print(f"{run.name:<32} {run.seconds:6.1f} s  {status}", file=sys.stderr if args.json else sys.stdout,
              flush=True)

    report = reproduce(
        Path(args.notebooks), Path(args.build), Path(args.figures), inplace=args.inplace, only=args.only,
        parameters=parameters, progress=announce, strict=not args.quick,
    )
    if args.json:
        print(json.dumps({"ok": report.ok, "runs": [dataclasses.asdict(r) for r in report.runs],
                          "entries": report.entries}))
        return 0 if report.ok else 1
    table = report.to_markdown()
    if args.results and not parameters and not args.only:  # the default run of the whole course
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        Path(args.results).write_text(RESULTS_HEADER + table + "\n", encoding="utf-8")
    print(table)
    if report.ok:
        print(f"\nall {len(report.runs)} notebooks ran; every check passed")
        return 0
    print(f"\nFAILED: {len(report.failed_checks)} check(s) failed; "
          f"{sum(bool(r.error) for r in report.runs)} notebook(s) stopped with an error"
          + (" (expected of --quick: its claims need the full run)" if args.quick else ""))
    return 1


def _equivalence(args: argparse.Namespace) -> int:
    import json

    from qatcore import distributed
    from qatcore.estimators import ablations
    from qatcore.estimators.equivalence import EquivalenceConfig, run_equivalence

    settings = dict(
        estimator=args.estimator, bits=args.bits, optimizer=args.optimizer, lr=args.lr,
        epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
        dataset=args.dataset, data_dir=args.data_dir, device=args.device,
    )
    runs = None if args.runs is None else tuple(r for part in args.runs for r in part.split(",") if r)
    if args.config is not None:  # the file's settings; flags given on the command line win
        given = {k: v for k, v in settings.items() if v is not None}
        config, file_runs, file_seeds = ablations.load_config(args.config, **given)
        runs, seeds = runs or file_runs, args.seeds or file_seeds
    else:
        defaults = dict(estimator="dsq", bits=2, optimizer="sgd", epochs=10, batch_size=64, seed=0,
                        dataset="digits", device="cpu")
        config = EquivalenceConfig(**{k: defaults.get(k) if v is None else v for k, v in settings.items()})
        seeds = args.seeds
    args.seed = config.seed
    if (launched := _launch_or_join(args)) is not None:
        return launched
    show = not args.json and distributed.is_main_process()
    if runs is None and seeds is None:  # the four runs of one seed
        summary = run_equivalence(config, progress=show).to_dict()
    else:
        summary = ablations.run_seeds(config, runs, seeds or 1, workers=args.workers, progress=show)
    if not distributed.is_main_process():
        return 0
    if args.json:
        print(json.dumps(summary))
    elif "runs" in summary:
        _print_named(summary)
    else:
        _print_pairs(summary)
    return 0


def _print_named(report: dict) -> None:
    """The named runs over seeds: a few of the authors' metrics, mean ± sd, one line a run."""
    print(f"{report['estimator']}, {report['bits']} bits, {report['optimizer']}, lr {report['lr']:g}, "
          f"seeds {report['seeds']}")
    shown = ("exact_correct_sequences_proportion", "correct_sequences_proportion",
             "inference_agreement_proportion", "avg_logit_difference")
    print(f"{'run':<16}{'q. agreement':>18}" + "".join(f"{name[:22]:>26}" for name in shown))
    for name, pair in report["runs"].items():
        def cell(m: dict | None) -> str:
            return "n/a" if m is None else f"{m['mean']:.4f} ± {m['sd']:.4f}"
        print(f"{name:<16}{cell(pair['ours']['quantized_weight_agreement']):>18}"
              + "".join(f"{cell(pair['authors'][k]):>26}" for k in shown))
    if "adjusted_vs_jitter" in report:
        claim = report["adjusted_vs_jitter"]
        print(f"adjusted − jitter agreement: {claim['mean']:+.2f} ± {claim['sd']:.2f} points; mean − 2 s.e. "
              f"{claim['lower']:+.2f} vs bar {claim['bar']:+.1f}: {'holds' if claim['holds'] else 'fails'} "
              f"(margin {claim['margin']:+.2f})")


def _print_pairs(summary: dict) -> None:
    """The agreement of each run with the custom-estimator run, one line a pair."""
    alpha = "n/a" if summary["alpha"] is None else f"{summary['alpha']:.4f}"
    print(f"{summary['estimator']}, {summary['bits']} bits, {summary['optimizer']}, lr {summary['lr']:g}, α = {alpha}")
    print(f"{'pair':<12}{'quantized agreement':>22}{'alignment error':>18}{'predictions':>14}")
    for pair, metrics in summary["pairs"].items():
        print(f"{pair:<12}{metrics['quantized_weight_agreement']:>22.4f}{metrics['alignment_error']:>18.4f}"
              f"{metrics['prediction_agreement']:>14.4f}")


def _imagenet(args: argparse.Namespace) -> int:
    import json

    from qatcore import distributed
    from qatcore.estimators.imagenet import load_config, run_imagenet

    config = load_config(args.config, data_dir=args.data_dir, out=args.out)
    args.seed = config.seed
    if (launched := _launch_or_join(args)) is not None:
        return launched
    result = run_imagenet(config, progress=not args.json and distributed.is_main_process(),
                          stop_after_epochs=args.stop_after_epochs)
    if result is None:
        if distributed.is_main_process():
            print(f"stopped; give the same command again to continue from {config.out}/runs/")
        return 0
    summary = result.to_dict()
    if args.json:
        print(json.dumps(summary))
    else:
        _print_pairs(summary)
        print(f"written: {config.out}/summary.json")
    return 0


def _launch_or_join(args: argparse.Namespace) -> int | None:
    """Under torchrun: join its process group and seed; with ``--nproc N``: start torchrun and
    return its exit status (``None`` means: go on and train here)."""
    from qatcore import distributed, runtime

    if not distributed.init_from_environment() and args.nproc > 1:
        return distributed.launch(args.nproc, _without_nproc(args.argv))
    runtime.configure(seed=args.seed)
    return None


def _without_nproc(argv: list[str]) -> list[str]:
    """``argv`` less its ``--nproc N`` (the processes torchrun starts must not launch again)."""
    kept, args = [], iter(argv)
    for arg in args:
        if arg == "--nproc":
            next(args, None)
        elif not arg.startswith("--nproc="):
            kept.append(arg)
    return kept


def _ace(args: argparse.Namespace) -> int:
    import json

    from qatcore.cost.ace import count_zoo_model

    report = count_zoo_model(args.model, args.w_bits, args.a_bits, args.elementwise_bits, args.cost_model,
                             args.batch_size, args.float_bits, not args.per_batch)
    if args.json:
        print(json.dumps(report.to_dict()))
        return 0
    totals = report.totals
    per = "per batch" if args.per_batch else "per image"
    print(f"{args.model} ({per}, float operands at {args.float_bits} bits): {totals['macs']:,} MACs, "
          f"ACE {totals['ace']:.4g}, sops {totals['sops']:.4g}, ACEv2 {totals['acev2']:.4g} (our reading), "
          f"energy {totals['energy_pj'] / 1e6:.4g} µJ (45 nm)")
    print(report.to_markdown())
    return 0


def _train(args: argparse.Namespace) -> int:
    import json

    from qatcore.export.training import train_checkpoint

    trained = train_checkpoint(args.model, args.out, bits=args.bits, epochs=args.epochs, dataset=args.dataset,
                               data_dir=args.data_dir, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                               overwrite=args.overwrite)
    summary = trained.to_dict()
    print(json.dumps(summary) if args.json else
          f"{args.model}: test accuracy {100 * trained.test_accuracy:.1f} % after {args.epochs} epoch(s); "
          f"wrote {summary['checkpoint']} (export it with: qatcore export {summary['checkpoint']} --format onnx --out DIR)")
    return 0


def _export(args: argparse.Namespace) -> int:
    import json

    from qatcore.export.exporter import export_checkpoint

    result = export_checkpoint(args.checkpoint, args.format, args.out, dataset=args.dataset,
                               data_dir=args.data_dir, overwrite=args.overwrite, threads=args.threads)
    summary = result.to_dict()
    if args.json:
        print(json.dumps(summary))
    else:
        float_size = "n/a" if summary["float_size_bytes"] is None else f"{summary['float_size_bytes']:,}"
        print(f"wrote {summary['path']} ({summary['size_bytes']:,} bytes; float32 ONNX "
              f"{float_size} bytes) and {summary['metadata']}")
        print(f"parity with PyTorch on {result.parity.examples} test images: max |Δ| "
              f"{summary['max_abs_diff']:.3g} (one output step {summary['output_step']:.3g}), "
              f"prediction agreement {summary['prediction_agreement']:.4f}")
    return 0 if result.parity.ok else 1


def _bnn_memory(args: argparse.Namespace) -> int:
    import json

    from qatcore.bnn.measure import memory_summary

    summary = memory_summary(args.model, args.batch, measure=args.measure, optimizer=args.optimizer,
                             accounting=args.accounting, gradient=args.gradient)
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{args.model}, batch {args.batch}, {args.optimizer}, {args.accounting} accounting: standard "
          f"{summary['standard_bytes'] / 2**20:.2f} MiB, low-memory {summary['low_memory_bytes'] / 2**20:.2f} MiB, "
          f"ratio {summary['ratio']:.2f}× (model)")
    for mode, measured in summary.get("measured", {}).items():
        peak = measured["peak_rss_bytes"]
        print(f"  measured {mode}: held {measured['held_bytes'] / 2**20:.2f} MiB, peak RSS increase "
              f"{'n/a' if peak is None else f'{peak / 2**20:.1f} MiB'}")
        fresh = summary.get(f"measured_peak_{mode}_bytes")
        if fresh is not None:
            print(f"  measured {mode}: peak of a step in a fresh process {fresh / 2**20:.1f} MiB")
    return 0


def _bnn_train(args: argparse.Namespace) -> int:
    import json

    from qatcore import data, distributed, zoo
    from qatcore.bnn.measure import CLI_MODELS
    from qatcore.bnn.train import BNNConfig, train_bnn

    if (launched := _launch_or_join(args)) is not None:
        return launched
    if args.model not in CLI_MODELS:
        raise ValueError(f"model must be one of {sorted(CLI_MODELS)}, got {args.model!r}")
    config = BNNConfig(mode=args.mode, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                       optimizer=args.optimizer, gradient=args.gradient)
    dataset = data.load(args.dataset, args.data_dir)
    model = zoo.build(CLI_MODELS[args.model], image_size=dataset.image_size, num_classes=dataset.num_classes)
    result = train_bnn(model, dataset, config, progress=not args.json and distributed.is_main_process())
    if not distributed.is_main_process():
        return 0
    summary = {"model": args.model, "mode": args.mode, "optimizer": args.optimizer, "test_accuracy": round(result.test_accuracy, 4),
               "train_accuracy": round(result.train_accuracy, 4), "final_loss": round(result.losses[-1], 4),
               "seconds_per_step": round(result.seconds_per_step, 5)}
    print(json.dumps(summary) if args.json else
          f"{args.model}, {args.mode}: test accuracy {100 * result.test_accuracy:.1f} %, "
          f"{1000 * result.seconds_per_step:.1f} ms a step")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from qatcore.data import DATASETS

    parser = argparse.ArgumentParser(prog="qatcore", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    rep = commands.add_parser("reproduce", help="run every notebook headless; print the report table")
    rep.add_argument("--notebooks", default="notebooks", help="folder of notebooks (default: notebooks)")
    rep.add_argument("--build", default="build/notebooks", help="where executed copies go")
    rep.add_argument("--figures", default="figures", help="where figures are written")
    rep.add_argument("--inplace", action="store_true", help="rewrite the notebooks themselves")
    rep.add_argument("--only", default="", metavar="PREFIX", help="only notebooks whose name starts so")
    rep.add_argument(
        "--dataset", default="digits", choices=DATASETS,
        help="another dataset runs each notebook's paper-scale variant (PAPER_SCALE, DATASET, DATA_DIR)",
    )
    rep.add_argument("--data-dir", default=None, help="folder of MNIST-format IDX files for --dataset")
    rep.add_argument("--quick", action="store_true",
                     help="smoke run: one epoch, one seed; failed claims warn (they need the full run)")
    rep.add_argument("--json", action="store_true", help="print runs and entries as one JSON object")
    rep.add_argument("--results", default="docs/results.md",
                     help="where a full default run writes its table for the website ('' for nowhere)")
    rep.set_defaults(run=_reproduce)

    from qatcore.estimators import names
    from qatcore.estimators.train import OPTIMIZERS

    eq = commands.add_parser(
        "equivalence", help="train a custom estimator, its adjusted STE, the ablation and the jitter baseline"
    )
    eq.add_argument("--estimator", default=None, choices=names(), help="default: dsq")
    eq.add_argument("--bits", type=int, default=None, help="default: 2")
    eq.add_argument("--optimizer", default=None, choices=OPTIMIZERS, help="default: sgd")
    eq.add_argument("--lr", type=float, default=None, help="learning rate (default: per optimizer)")
    eq.add_argument("--epochs", type=int, default=None, help="default: 10")
    eq.add_argument("--batch-size", type=int, default=None, help="default: 64")
    eq.add_argument("--seed", type=int, default=None, help="first seed (default: 0)")
    eq.add_argument("--dataset", default=None, choices=DATASETS, help="default: digits")
    eq.add_argument("--data-dir", default=None, help="folder of MNIST-format IDX files")
    eq.add_argument("--device", default=None, help="torch device to train on (cpu, cuda)")
    eq.add_argument("--config", default=None, help="a TOML file, e.g. configs/paper_mnist_sgd.toml")
    eq.add_argument("--runs", nargs="+", default=None,
                    help="named runs: main jitter no_warp scaledown bits_1 bits_4 unadjusted_ours "
                         "(default with --seeds: all that apply)")
    eq.add_argument("--seeds", type=int, default=None, help="repeat the named runs over N seeds; mean and sd")
    eq.add_argument("--workers", type=int, default=1, help="train seeds in N processes")
    eq.add_argument("--json", action="store_true", help="print one JSON object")
    eq.add_argument(
        "--nproc", type=int, default=1,
        help="train on N local processes with DistributedDataParallel (through torchrun)",
    )
    eq.set_defaults(run=_equivalence)

    im = commands.add_parser(
        "imagenet", help="the first paper's ImageNet ResNet experiment, from a TOML config (under torchrun)"
    )
    im.add_argument("--config", required=True, help="a TOML file, e.g. configs/imagenet_resnet50_dsq_sgd.toml")
    im.add_argument("--data-dir", default=None, help="ImageNet folder (ROOT/train/CLASS/*, ROOT/val/CLASS/*)")
    im.add_argument("--out", default=None, help="output folder (default: the config's out)")
    im.add_argument("--stop-after-epochs", type=int, default=None,
                    help="stop after N epochs of this call (rerun the command to continue)")
    im.add_argument("--json", action="store_true", help="print one JSON object")
    im.add_argument("--nproc", type=int, default=1, help="train on N local processes (DDP through torchrun)")
    im.set_defaults(run=_imagenet)

    from qatcore import zoo

    ace = commands.add_parser("ace", help="count MACs, ACE, sops, ACEv2 and 45 nm energy of a model")
    ace.add_argument("--model", required=True, metavar="NAME|package.module:factory",
                     help=f"a built-in model ({', '.join(zoo.names())}) or a factory of yours, called with no "
                          "arguments; its model needs example_input() or input_shape")
    ace.add_argument("--w-bits", type=int, default=None, help="weight bits of every conv/linear layer")
    ace.add_argument("--a-bits", type=int, default=None, help="input (activation) bits of every conv/linear layer")
    ace.add_argument("--elementwise-bits", type=int, default=None, help="bits of element-wise ops (default: float)")
    ace.add_argument("--float-bits", type=int, default=16, choices=(16, 32),
                     help="width of an unquantised operand: 16 (bfloat16, as PokeBNN) or 32 (float32)")
    ace.add_argument("--batch-size", type=int, default=1, help="images in the zero input batch")
    ace.add_argument("--per-batch", action="store_true", help="count the whole batch, not one image")
    ace.add_argument("--cost-model", default="acev2", choices=("ace", "sops", "acev2", "energy"))
    ace.add_argument("--json", action="store_true", help="print one JSON object")
    ace.set_defaults(run=_ace)

    from qatcore.export import FORMATS
    from qatcore.export.training import TRAINABLE

    tr = commands.add_parser("train", help="train a course model and save a checkpoint for `qatcore export`")
    tr.add_argument("--model", required=True, choices=sorted(TRAINABLE))
    tr.add_argument("--bits", type=int, default=None, help="weight bits (mnist_cnn, pikelpn_mobilenet; default: the model's)")
    tr.add_argument("--epochs", type=int, default=3)
    tr.add_argument("--out", required=True, help="checkpoint file to write (e.g. c.pt)")
    tr.add_argument("--dataset", default="digits", choices=DATASETS)
    tr.add_argument("--data-dir", default=None, help="folder of MNIST-format IDX files")
    tr.add_argument("--lr", type=float, default=None, help="learning rate (default: 3e-3, BNNs 1e-3)")
    tr.add_argument("--batch-size", type=int, default=64)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")
    tr.add_argument("--json", action="store_true", help="print one JSON object")
    tr.set_defaults(run=_train)

    ex = commands.add_parser(
        "export", help="export a checkpoint (ONNX QDQ, QONNX, packed binary, torch.export) and check it")
    ex.add_argument("checkpoint", help="a checkpoint written by `qatcore train` or qatcore.checkpoint.save")
    ex.add_argument("--format", required=True, choices=FORMATS)
    ex.add_argument("--out", required=True, help="output folder (created if missing)")
    ex.add_argument("--json", action="store_true", help="print one JSON object")
    ex.add_argument("--overwrite", action="store_true", help="replace existing export files")
    ex.add_argument("--dataset", default=None, choices=DATASETS, help="test data (default: the checkpoint's)")
    ex.add_argument("--data-dir", default=None, help="folder of MNIST-format IDX files")
    ex.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    ex.set_defaults(run=_export)

    bnn = commands.add_parser("bnn-memory", help="modelled (and measured) memory of standard vs low-memory BNN training")
    bnn.add_argument("--model", default="mlp", choices=("mlp", "cnv", "binarynet"))
    bnn.add_argument("--batch", type=int, default=100, help="batch size (default: 100)")
    bnn.add_argument("--optimizer", default="adam", choices=("sgd", "adam", "bop"))
    bnn.add_argument("--accounting", default="autograd", choices=("authors", "autograd"),
                     help="the authors' spreadsheet rows, or what autograd really holds (default)")
    bnn.add_argument("--gradient", default="po2", choices=("po2", "float16"),
                     help="dY format of the low-memory mode: power of two or float16 (default: po2)")
    bnn.add_argument("--measure", action="store_true", help="also measure one real training step of each mode")
    bnn.add_argument("--json", action="store_true", help="print one JSON object")
    bnn.set_defaults(run=_bnn_memory)

    from qatcore.bnn.models import MODES

    bt = commands.add_parser("bnn-train", help="train a BNN with the standard or the low-memory algorithm")
    bt.add_argument("--model", default="mlp", choices=("mlp", "cnv", "binarynet"))
    bt.add_argument("--mode", default="low_memory", choices=MODES)
    bt.add_argument("--epochs", type=int, default=5)
    bt.add_argument("--batch-size", type=int, default=100)
    bt.add_argument("--lr", type=float, default=1e-3)
    bt.add_argument("--optimizer", default="adam", choices=("sgd", "adam", "bop"),
                    help="Adam (the paper's), SGD with momentum, or Bop for the binary weights")
    bt.add_argument("--gradient", default="po2", choices=("po2", "float16"), help="low-memory dY format")
    bt.add_argument("--seed", type=int, default=0)
    bt.add_argument("--dataset", default="digits", choices=DATASETS)
    bt.add_argument("--data-dir", default=None, help="folder of MNIST-format IDX files")
    bt.add_argument("--json", action="store_true", help="print one JSON object")
    bt.add_argument("--nproc", type=int, default=1, help="train on N local processes (DDP through torchrun)")
    bt.set_defaults(run=_bnn_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        parser.exit(2, f"qatcore {args.command}: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
