"""The ``qatcore`` command line: thin faces on the library's functions."""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

from qatcore.checks import int_at_least


def _reproduce(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from qatcore.course.repository import require_extra, require_repository

    require_repository("qatcore reproduce", Path(args.notebooks))
    require_extra(
        "qatcore reproduce", "course", "nbformat", "nbclient", "ipykernel", "jupyter_client"
    )
    from qatcore.course import summaries
    from qatcore.course.reproduce import QUICK_PARAMETERS, reproduce

    parameters = {}
    if args.dataset != "digits":
        parameters = {"PAPER_SCALE": True, "DATASET": args.dataset, "DATA_DIR": args.data_dir}
    if args.quick:
        parameters |= QUICK_PARAMETERS

    def announce(run) -> None:
        print(
            summaries.notebook_run(run.name, run.seconds, run.error),
            file=sys.stderr if args.json else sys.stdout,
            flush=True,
        )

    report = reproduce(
        Path(args.notebooks),
        Path(args.build),
        Path(args.figures),
        inplace=args.inplace,
        only=args.only,
        parameters=parameters,
        progress=announce,
        strict=not args.quick,
        timeout=args.timeout,
    )
    if args.json:
        print(
            json.dumps(
                {
                    "ok": report.ok,
                    "runs": [dataclasses.asdict(r) for r in report.runs],
                    "entries": report.entries,
                }
            )
        )
        return 0 if report.ok else 1
    table = report.to_markdown()
    if (
        args.results and not parameters and not args.only and report.ok
    ):  # a passing default run of the whole course
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        Path(args.results).write_text(summaries.RESULTS_HEADER + table + "\n", encoding="utf-8")
    print(table)
    failed_notebooks = sum(bool(r.error) for r in report.runs)
    print(
        summaries.reproduce_verdict(
            len(report.runs), len(report.failed_checks), failed_notebooks, args.quick
        )
    )
    return 0 if report.ok else 1


def _equivalence(args: argparse.Namespace) -> int:
    import json

    from qatcore import distributed
    from qatcore.course import summaries
    from qatcore.estimators import ablations
    from qatcore.estimators.equivalence import EquivalenceConfig, digits_optimizer, run_equivalence

    settings = dict(
        estimator=args.estimator,
        bits=args.bits,
        optimizer=args.optimizer,
        lr=args.lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        dataset=args.dataset,
        data_dir=args.data_dir,
        device=args.device,
    )
    runs = (
        None if args.runs is None else tuple(r for part in args.runs for r in part.split(",") if r)
    )
    if args.config is not None:  # the file's settings; flags given on the command line win
        given = {k: v for k, v in settings.items() if v is not None}
        config, file_runs, file_seeds = ablations.load_config(args.config, **given)
        runs, seeds = runs or file_runs, file_seeds if args.seeds is None else args.seeds
    else:
        defaults = _defaults(EquivalenceConfig)
        values: dict[str, Any] = {
            k: defaults.get(k) if v is None else v for k, v in settings.items()
        }
        optimizer = values.pop("optimizer") or _preset_name(defaults["optimizer"], by_rule=True)
        values["optimizer"] = digits_optimizer(optimizer, values.pop("lr"))
        config = EquivalenceConfig(**values)
        seeds = args.seeds
    if seeds is not None:
        int_at_least("seeds", seeds, 1)
    int_at_least("workers", args.workers, 1)
    if args.stack_size is not None:
        int_at_least("stack_size", args.stack_size, 1)
    args.seed = config.seed
    if (launched := _launch_or_join(args)) is not None:
        return launched
    show = not args.json and distributed.is_main_process()
    if runs is None and seeds is None:  # the four runs of one seed
        summary = run_equivalence(config, progress=show, stack_size=args.stack_size).to_dict()
    else:
        summary = ablations.run_seeds(
            config,
            runs,
            seeds or 1,
            workers=args.workers,
            progress=show,
            stack_size=args.stack_size,
        )
    if not distributed.is_main_process():
        return 0
    if args.json:
        print(json.dumps(summary))
    elif "runs" in summary:
        print(summaries.equivalence_named(summary))
    else:
        print(summaries.equivalence_pairs(summary))
    return 0


def _imagenet(args: argparse.Namespace) -> int:
    import json

    from qatcore import distributed
    from qatcore.course import summaries
    from qatcore.estimators.imagenet import load_config, run_imagenet

    config = load_config(args.config, data_dir=args.data_dir, out=args.out)
    args.seed = config.seed
    if (launched := _launch_or_join(args)) is not None:
        return launched
    result = run_imagenet(
        config,
        progress=not args.json and distributed.is_main_process(),
        stop_after_epochs=args.stop_after_epochs,
    )
    if result is None:
        if distributed.is_main_process():
            print(f"stopped; give the same command again to continue from {config.out}/runs/")
        return 0
    summary = result.to_dict()
    if args.json:
        print(json.dumps(summary))
    else:
        print(summaries.equivalence_pairs(summary))
        print(f"written: {config.out}/summary.json")
    return 0


def _launch_or_join(args: argparse.Namespace) -> int | None:
    """Under torchrun: join its process group and seed; with ``--nproc N``: start torchrun and
    return its exit status (``None`` means: go on and train here)."""
    from qatcore import distributed, runtime

    int_at_least("nproc", args.nproc, 1)
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

    from qatcore import zoo
    from qatcore.cost.sweeps import count_model
    from qatcore.course import summaries

    report = count_model(
        *zoo.load(args.model),
        args.bits,
        args.a_bits,
        args.elementwise_bits,
        args.cost_model,
        args.batch_size,
        args.float_bits,
        not args.per_batch,
    )
    if report.unknown and not args.allow_uncosted:
        print(summaries.uncosted(args.model, report.unknown), file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_dict()))
        return 0
    print(
        summaries.ace_headline(
            args.model, report.totals, args.per_batch, args.float_bits, report.unknown
        )
    )
    print(report.to_markdown())
    return 0


def _train(args: argparse.Namespace) -> int:
    import json

    from qatcore.course import summaries
    from qatcore.training import train_checkpoint

    trained = train_checkpoint(
        args.model,
        args.out,
        bits=args.bits,
        epochs=args.epochs,
        dataset=args.dataset,
        data_dir=args.data_dir,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    summary = trained.to_dict()
    print(
        json.dumps(summary)
        if args.json
        else summaries.trained(
            args.model, args.epochs, trained.test_accuracy, summary["checkpoint"]
        )
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    import json

    from qatcore.export import check_installed

    check_installed(args.format)  # before the slow imports and before any folder is made
    if args.int8 and args.format != "onnx":
        raise ValueError(f"--int8 is a variant of --format onnx, not of {args.format!r}")
    from qatcore.course import summaries
    from qatcore.training import export_checkpoint

    result = export_checkpoint(
        args.checkpoint,
        args.format,
        args.out,
        dataset=args.dataset,
        data_dir=args.data_dir,
        overwrite=args.overwrite,
        threads=args.threads,
        int8=args.int8,
    )
    summary = result.to_dict()
    if args.json:
        print(json.dumps(summary))
    else:
        print(summaries.exported(summary, result.parity.examples))
    return 0 if result.parity.ok else 1


def _bnn_memory(args: argparse.Namespace) -> int:
    import json

    from qatcore.bnn.measure import memory_summary
    from qatcore.course import summaries

    summary = memory_summary(
        args.model,
        args.batch_size,
        measure=args.measure,
        optimizer=args.optimizer,
        accounting=args.accounting,
        gradient=args.gradient,
    )
    if args.json:
        print(json.dumps(summary))
        return 0
    print(
        summaries.bnn_memory(args.model, args.batch_size, args.optimizer, args.accounting, summary)
    )
    return 0


def _bnn_train(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from qatcore import data, distributed, zoo
    from qatcore.bnn.models import MODELS
    from qatcore.bnn.train import BNNConfig, train_bnn
    from qatcore.checks import check_choice
    from qatcore.course import summaries
    from qatcore.optimizers import OptimizerConfig

    if (launched := _launch_or_join(args)) is not None:
        return launched
    check_choice("model", args.model, sorted(MODELS))
    optimizer = OptimizerConfig.of(args.optimizer)
    config = BNNConfig(
        mode=args.mode,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        optimizer=optimizer if args.lr is None else dataclasses.replace(optimizer, lr=args.lr),
        gradient=args.gradient,
    )
    dataset = data.load(args.dataset, args.data_dir)
    side = dataset.image_size
    try:  # ResNetE-18 takes sides that are multiples of 32 (ImageNet's 224)
        model = zoo.build(args.model, image_size=side, num_classes=dataset.num_classes)
    except ValueError as refusal:
        raise ValueError(
            f"--model {args.model} cannot take the {args.dataset} images, {side}×{side} ({refusal}); "
            "bnn_mlp, cnv and binarynet can"
        ) from refusal
    result = train_bnn(
        model, dataset, config, progress=not args.json and distributed.is_main_process()
    )
    if not distributed.is_main_process():
        return 0
    summary = {
        "model": args.model,
        "mode": args.mode,
        "optimizer": args.optimizer,
        "test_accuracy": round(result.test_accuracy, 4),
        "train_accuracy": round(result.train_accuracy, 4),
        "final_loss": round(result.losses[-1], 4),
        "seconds_per_step": round(result.seconds_per_step, 5),
    }
    print(json.dumps(summary) if args.json else summaries.bnn_trained(summary))
    return 0


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help with every argument's default shown (once, and not for flags or unset options)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action) or text


def _parent(*arguments: tuple[tuple[str, ...], dict]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    for flags, options in arguments:
        parser.add_argument(*flags, **options)
    return parser


#: options several subcommands share, spelled and explained once
JSON = _parent((("--json",), {"action": "store_true", "help": "print one JSON object"}))
SEED = _parent((("--seed",), {"type": int, "default": 0, "help": "random seed"}))
DATA_DIR = _parent((("--data-dir",), {"default": None, "help": "folder of MNIST-format IDX files"}))
NPROC = _parent(
    (
        ("--nproc",),
        {
            "type": int,
            "default": 1,
            "help": "train on N local processes with DistributedDataParallel (through torchrun)",
        },
    )
)


def _arguments_reproduce(parser: argparse.ArgumentParser) -> None:
    from qatcore.data import DATASETS

    parser.add_argument(
        "--notebooks", default="notebooks", help="folder of notebooks (default: notebooks)"
    )
    parser.add_argument("--build", default="build/notebooks", help="where executed copies go")
    parser.add_argument("--figures", default="figures", help="where figures are written")
    parser.add_argument("--inplace", action="store_true", help="rewrite the notebooks themselves")
    parser.add_argument(
        "--only", default="", metavar="PREFIX", help="only notebooks whose name starts so"
    )
    parser.add_argument(
        "--dataset",
        default="digits",
        choices=DATASETS,
        help="another dataset runs each notebook's paper-scale variant (PAPER_SCALE, DATASET, DATA_DIR)",
    )
    parser.add_argument(
        "--data-dir", default=None, help="folder of MNIST-format IDX files for --dataset"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: one epoch, one seed; failed claims warn (they need the full run)",
    )
    parser.add_argument(
        "--timeout", type=int, default=1200, help="seconds a cell may run before it is stopped"
    )
    parser.add_argument(
        "--json", action="store_true", help="print runs and entries as one JSON object"
    )
    parser.add_argument(
        "--results",
        default="docs/results.md",
        help="where a full default run writes its table for the website ('' for nowhere)",
    )


def _arguments_equivalence(parser: argparse.ArgumentParser) -> None:
    from qatcore.data import DATASETS
    from qatcore.estimators import names
    from qatcore.estimators.equivalence import EquivalenceConfig
    from qatcore.optimizers import OPTIMIZERS

    default = _defaults(EquivalenceConfig)
    parser.add_argument(
        "--estimator", default=None, choices=names(), help=f"default: {default['estimator']}"
    )
    parser.add_argument("--bits", type=int, default=None, help=f"default: {default['bits']}")
    parser.add_argument(
        "--optimizer",
        default=None,
        choices=OPTIMIZERS,
        help=f"default: {_preset_name(default['optimizer'], by_rule=True)} ("
        + _optimizer_help(OPTIMIZERS, rate=False)
        + ")",
    )
    parser.add_argument(
        "--lr", type=float, default=None, help="learning rate (default: per optimizer)"
    )
    parser.add_argument("--epochs", type=int, default=None, help=f"default: {default['epochs']}")
    parser.add_argument(
        "--batch-size", type=int, default=None, help=f"default: {default['batch_size']}"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help=f"first seed (default: {default['seed']})"
    )
    parser.add_argument(
        "--dataset", default=None, choices=DATASETS, help=f"default: {default['dataset']}"
    )
    parser.add_argument(
        "--device", default=None, help=f"torch device to train on (default: {default['device']})"
    )
    parser.add_argument(
        "--config", default=None, help="a TOML file, e.g. configs/paper_mnist_sgd.toml"
    )
    parser.add_argument(
        "--runs",
        nargs="+",
        default=None,
        help="named runs: main jitter no_warp scaledown bits_1 bits_4 ablation_ours "
        "(default with --seeds: all that apply)",
    )
    parser.add_argument(
        "--seeds", type=int, default=None, help="repeat the named runs over N seeds; mean and sd"
    )
    parser.add_argument("--workers", type=int, default=1, help="train seeds in N processes")
    parser.add_argument(
        "--stack-size",
        type=int,
        default=None,
        metavar="N",
        help="train runs of the same length (all seeds) together, as stacked networks of at most "
        "N runs: one step for all of them (for a GPU); default: one by one",
    )


def _arguments_imagenet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", required=True, help="a TOML file, e.g. configs/imagenet_resnet50_dsq_sgd.toml"
    )
    parser.add_argument(
        "--data-dir", default=None, help="ImageNet folder (ROOT/train/CLASS/*, ROOT/val/CLASS/*)"
    )
    parser.add_argument("--out", default=None, help="output folder (default: the config's out)")
    parser.add_argument(
        "--stop-after-epochs",
        type=int,
        default=None,
        help="stop after N epochs of this call (rerun the command to continue)",
    )


def _arguments_ace(parser: argparse.ArgumentParser) -> None:
    from qatcore import zoo

    parser.add_argument(
        "--model",
        required=True,
        metavar="NAME|package.module:factory",
        help=f"a built-in model ({', '.join(zoo.names())}) or a factory of yours, called with no "
        "arguments; its model needs example_input() or input_shape",
    )
    parser.add_argument(
        "--bits",
        type=int,
        default=None,
        help="weight bits of every conv/linear layer, 1 to 16 (PokeBNN's limit) or 32 for float "
        "(default: the model's)",
    )
    parser.add_argument(
        "--a-bits",
        type=int,
        default=None,
        help="input (activation) bits of every conv/linear layer, 1 to 16 or 32 for float",
    )
    parser.add_argument(
        "--elementwise-bits",
        type=int,
        default=None,
        help="bits of element-wise ops, 1 to 16 or 32 (default: float)",
    )
    parser.add_argument(
        "--float-bits",
        type=int,
        default=16,
        choices=(16, 32),
        help="width of an unquantised operand: 16 (bfloat16, as PokeBNN) or 32 (float32)",
    )
    parser.add_argument("--batch-size", type=int, default=1, help="images in the zero input batch")
    parser.add_argument(
        "--per-batch", action="store_true", help="count the whole batch, not one image"
    )
    parser.add_argument(
        "--cost-model",
        default="acev2",
        choices=("ace", "sops", "acev2", "energy"),
        help="cost model",
    )
    parser.add_argument(
        "--allow-uncosted",
        action="store_true",
        help="print the count even when some layers could not be costed (they are named); "
        "without it such a model exits 1",
    )


def _arguments_train(parser: argparse.ArgumentParser) -> None:
    import inspect

    from qatcore.data import DATASETS
    from qatcore.training import DEFAULT_LR, TRAINABLE, train_checkpoint

    default = {k: p.default for k, p in inspect.signature(train_checkpoint).parameters.items()}
    parser.add_argument("--model", required=True, choices=sorted(TRAINABLE), help="model")
    parser.add_argument(
        "--bits",
        type=int,
        default=None,
        help="weight bits (mnist_cnn, pikelpn_mobilenet; default: the model's)",
    )
    parser.add_argument("--epochs", type=int, default=default["epochs"], help="epochs")
    parser.add_argument("--out", required=True, help="checkpoint file to write (e.g. c.pt)")
    parser.add_argument("--dataset", default=default["dataset"], choices=DATASETS, help="dataset")
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help=f"learning rate (default: {DEFAULT_LR['estimators']:g}, BNNs {DEFAULT_LR['bnn']:g})",
    )
    parser.add_argument("--batch-size", type=int, default=default["batch_size"], help="batch size")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")


def _arguments_export(parser: argparse.ArgumentParser) -> None:
    from qatcore.data import DATASETS
    from qatcore.export import FORMATS

    parser.add_argument(
        "checkpoint", help="a checkpoint written by `qatcore train` or qatcore.checkpoint.save"
    )
    parser.add_argument("--format", required=True, choices=FORMATS, help="format")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing export files")
    parser.add_argument(
        "--dataset", default=None, choices=DATASETS, help="test data (default: the checkpoint's)"
    )
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument(
        "--int8",
        action="store_true",
        help="with --format onnx: the 8-bit QDQ variant (UINT8 activations calibrated on the test "
        "images, INT8 weights) that onnxruntime runs as QLinearConv/QGemm; re-quantizes, so it is "
        "checked on prediction agreement",
    )


def _arguments_bnn_memory(parser: argparse.ArgumentParser) -> None:
    from qatcore.bnn.functions import GRADIENT_FORMATS
    from qatcore.bnn.memory import ACCOUNTINGS
    from qatcore.bnn.models import MODELS
    from qatcore.bnn.optim import BNN_OPTIMIZERS

    parser.add_argument("--model", default="bnn_mlp", choices=tuple(MODELS), help="model")
    parser.add_argument("--batch-size", type=int, default=100, help="batch size")
    parser.add_argument(
        "--optimizer",
        default="bnn_adam",
        choices=BNN_OPTIMIZERS,
        help=_optimizer_help(BNN_OPTIMIZERS),
    )
    parser.add_argument(
        "--accounting",
        default="autograd",
        choices=ACCOUNTINGS,
        help="the authors' spreadsheet rows, or what autograd really holds (default)",
    )
    parser.add_argument(
        "--gradient",
        default="po2",
        choices=GRADIENT_FORMATS,
        help="dY format of the low-memory mode: power of two or float16 (default: po2)",
    )
    parser.add_argument(
        "--measure", action="store_true", help="also measure one real training step of each mode"
    )


def _arguments_bnn_train(parser: argparse.ArgumentParser) -> None:
    from qatcore.bnn.functions import GRADIENT_FORMATS
    from qatcore.bnn.models import MODELS, MODES
    from qatcore.bnn.optim import BNN_OPTIMIZERS
    from qatcore.bnn.train import BNNConfig
    from qatcore.data import DATASETS

    default = BNNConfig()
    parser.add_argument("--model", default="bnn_mlp", choices=tuple(MODELS), help="model")
    parser.add_argument("--mode", default="low_memory", choices=MODES, help="mode")
    parser.add_argument("--epochs", type=int, default=default.epochs, help="epochs")
    parser.add_argument("--batch-size", type=int, default=default.batch_size, help="batch size")
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help=f"learning rate (default: the optimizer's, {default.optimizer.lr:g})",
    )
    parser.add_argument(
        "--optimizer",
        default=_preset_name(default.optimizer),
        choices=BNN_OPTIMIZERS,
        help=_optimizer_help(BNN_OPTIMIZERS),
    )
    parser.add_argument(
        "--gradient",
        default=default.gradient,
        choices=GRADIENT_FORMATS,
        help="low-memory dY format",
    )
    parser.add_argument("--dataset", default="digits", choices=DATASETS, help="dataset")


def _preset_name(config, by_rule: bool = False) -> str:
    """The name of ``config`` in ``qatcore.optimizers.PRESETS`` (``by_rule``: the preset of its rule
    whatever its rate, as the first paper's digits rates differ from the presets')."""
    from qatcore.optimizers import PRESETS

    if by_rule:
        return next(n for n, p in PRESETS.items() if p.name == config.name)
    return next(name for name, preset in PRESETS.items() if preset == config)


def _defaults(config_class) -> dict:
    """The default of every field of the dataclass ``config_class``, by name."""
    import dataclasses

    return {
        f.name: f.default
        for f in dataclasses.fields(config_class)
        if f.default is not dataclasses.MISSING
    }


def _optimizer_help(names: tuple[str, ...], rate: bool = True) -> str:
    """What each named optimizer config means, read from the configs themselves (``rate``: with
    its base rate)."""
    from qatcore.optimizers import PRESETS

    def meaning(name: str) -> str:
        c = PRESETS[name]
        rule = {
            "sgd": f"SGD, momentum {c.momentum:g}",
            "adam": f"Adam, β₂ {c.beta2:g}",
            "bop": f"Bop (γ {c.gamma:g}) + Adam β₂ {c.beta2:g}",
        }[c.name]
        return f"{name}: {rule}, " + (f"lr {c.lr:g}, " if rate else "") + c.schedule

    return "; ".join(meaning(name) for name in names)


#: subcommand: (help, argument builder, function, parent parsers); a builder runs only for the
#: subcommand chosen, so `qatcore --help` imports neither torch nor sympy
SUBCOMMANDS = {
    "reproduce": (
        "run every notebook headless; print the report table",
        _arguments_reproduce,
        _reproduce,
        (),
    ),
    "equivalence": (
        "train a custom estimator, its adjusted STE, the ablations and the jitter baseline",
        _arguments_equivalence,
        _equivalence,
        (JSON, DATA_DIR, NPROC),
    ),
    "imagenet": (
        "the first paper's ImageNet ResNet experiment, from a TOML config (under torchrun)",
        _arguments_imagenet,
        _imagenet,
        (JSON, NPROC),
    ),
    "ace": (
        "count MACs, ACE, sops, ACEv2 and 45 nm energy of a model",
        _arguments_ace,
        _ace,
        (JSON,),
    ),
    "train": (
        "train a course model and save a checkpoint for `qatcore export`",
        _arguments_train,
        _train,
        (JSON, SEED, DATA_DIR),
    ),
    "export": (
        "export a checkpoint (ONNX QDQ, QONNX, packed binary, torch.export) and check it",
        _arguments_export,
        _export,
        (JSON, DATA_DIR),
    ),
    "bnn-memory": (
        "modelled (and measured) memory of standard vs low-memory BNN training",
        _arguments_bnn_memory,
        _bnn_memory,
        (JSON,),
    ),
    "bnn-train": (
        "train a BNN with the standard or the low-memory algorithm",
        _arguments_bnn_train,
        _bnn_train,
        (JSON, SEED, DATA_DIR, NPROC),
    ),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s own arguments are built (all of them when None is not asked)."""
    parser = argparse.ArgumentParser(
        prog="qatcore", description=__doc__, formatter_class=_Formatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('qatcore')}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (summary, arguments, run, parents) in SUBCOMMANDS.items():
        sub = commands.add_parser(
            name,
            help=summary,
            description=summary,
            parents=list(parents),
            formatter_class=_Formatter,
        )
        if command in (name, "*"):
            arguments(sub)
        sub.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 success; 1 a run that failed or a check that did not hold; 2 a usage error
    (bad arguments, a missing file, a value out of range)."""
    from qatcore.export import MissingDependencyError  # a format's package not installed

    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if a in SUBCOMMANDS), None)
    parser = build_parser(chosen)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return args.run(args)
    except _failed_checks() as failure:
        print(f"qatcore {args.command}: failed: {failure}", file=sys.stderr)
        return 1
    except (
        ValueError,
        TypeError,
        FileNotFoundError,
        FileExistsError,
        MissingDependencyError,
    ) as error:
        parser.exit(2, f"qatcore {args.command}: error: {_one_line(error)}\n")
    except (PermissionError, IsADirectoryError, NotADirectoryError) as error:  # a path given wrong
        parser.exit(2, f"qatcore {args.command}: error: {_os_error(error)}\n")
    except (
        OSError
    ) as error:  # the machine: a full disk, an I/O error (nothing half-written is kept)
        print(f"qatcore {args.command}: failed: {_os_error(error)}", file=sys.stderr)
        return 1


def _os_error(error: OSError) -> str:
    where = f": {error.filename!r}" if error.filename else ""
    return (error.strerror or _one_line(error)) + where


def _one_line(error: BaseException) -> str:
    """The error's message on one line; for one re-raised from a DataLoader worker (its message
    holds the worker's traceback), the original exception's last line."""
    text = str(error).strip()
    if "Original Traceback" in text:
        text = [line for line in text.splitlines() if line.strip()][-1]
    return " ".join(text.split()) or type(error).__name__


def _failed_checks() -> tuple[type[BaseException], ...]:
    """Exceptions that mean a check did not hold (exit 1), not that the input was wrong (exit 2)."""
    from qatcore.course.report import CheckFailed

    failures: list[type[BaseException]] = [CheckFailed]
    if "qatcore.export.exporter" in sys.modules:
        failures.append(sys.modules["qatcore.export.exporter"].ParityError)
    return tuple(failures)


if __name__ == "__main__":
    sys.exit(main())
