"""What the command line prints: each subcommand's result as lines of text, built from the
dictionaries the library returns (``--json`` prints those dictionaries themselves)."""

from __future__ import annotations

from collections.abc import Sequence

MIB = 2**20

RESULTS_HEADER = """# Results

Every check and headline number of the course, as `qatcore reproduce` last wrote them (default
settings, digits). *Our threshold* is our own bar. The last three columns quote a claim with where it is
said, one column per kind of source: the paper itself (its abstract or text), the authors' repository README,
the authors' spreadsheet. A quote sits beside our number only when the two measure the same thing.

"""


def notebook_run(name: str, seconds: float, error: str) -> str:
    """One notebook of ``qatcore reproduce`` as it finishes: name, wall time, ``ok`` or the error."""
    return f"{name:<32} {seconds:6.1f} s  {f'ERROR: {error}' if error else 'ok'}"


def reproduce_verdict(
    notebooks: int, failed_checks: int, failed_notebooks: int, quick: bool
) -> str:
    """The last line of ``qatcore reproduce``."""
    if not failed_checks and not failed_notebooks:
        return f"\nall {notebooks} notebooks ran; every check passed"
    return (
        f"\nFAILED: {failed_checks} check(s) failed; "
        f"{failed_notebooks} notebook(s) stopped with an error"
        + (" (expected of --quick: its claims need the full run)" if quick else "")
    )


def equivalence_named(report: dict) -> str:
    """The named runs over seeds: a few of the authors' metrics, mean ± sd, one line a run."""
    lines = [
        f"{report['estimator']}, {report['bits']} bits, {report['optimizer']}, lr {report['lr']:g}, "
        f"seeds {report['seeds']}"
    ]
    shown = (
        "exact_correct_sequences_proportion",
        "correct_sequences_proportion",
        "inference_agreement_proportion",
        "avg_logit_difference",
    )
    lines.append(f"{'run':<16}{'q. agreement':>18}" + "".join(f"{n[:22]:>26}" for n in shown))

    def cell(m: dict | None) -> str:
        return "n/a" if m is None else f"{m['mean']:.4f} ± {m['sd']:.4f}"

    for name, pair in report["runs"].items():
        lines.append(
            f"{name:<16}{cell(pair['ours']['quantized_weight_agreement']):>18}"
            + "".join(f"{cell(pair['authors'][k]):>26}" for k in shown)
        )
    if "adjusted_vs_jitter" in report:
        claim = report["adjusted_vs_jitter"]
        lines.append(
            f"adjusted − jitter agreement: {claim['mean']:+.2f} ± {claim['sd']:.2f} points; "
            f"mean − 2 s.e. {claim['lower']:+.2f} vs bar {claim['bar']:+.1f}: "
            f"{'holds' if claim['holds'] else 'fails'} (margin {claim['margin']:+.2f})"
        )
    return "\n".join(lines)


def equivalence_pairs(summary: dict) -> str:
    """The agreement of each run with the custom-estimator run, one line a pair."""
    alpha = "n/a" if summary["alpha"] is None else f"{summary['alpha']:.4f}"
    lines = [
        f"{summary['estimator']}, {summary['bits']} bits, {summary['optimizer']}, "
        f"lr {summary['lr']:g}, α = {alpha}",
        f"{'pair':<12}{'quantized agreement':>22}{'alignment error':>18}{'predictions':>14}",
    ]
    for pair, metrics in summary["pairs"].items():
        lines.append(
            f"{pair:<12}{metrics['quantized_weight_agreement']:>22.4f}"
            f"{metrics['alignment_error']:>18.4f}{metrics['prediction_agreement']:>14.4f}"
        )
    return "\n".join(lines)


def uncosted(model: str, unknown: list[str]) -> str:
    """Why ``qatcore ace`` refused to print a count: the layers it could not cost."""
    return (
        f"qatcore ace: {model}: {len(unknown)} layer(s) could not be costed, so any total would be "
        f"too low: {', '.join(unknown)}. Give those layers an ace_operations() method, or pass "
        "--allow-uncosted to print the partial count"
    )


def ace_headline(
    model: str, totals: dict, per_batch: bool, float_bits: int, unknown: Sequence[str] = ()
) -> str:
    """The totals line of ``qatcore ace``; a partial count says so first, and never shows 0 MACs."""
    per = "per batch" if per_batch else "per image"
    partial = (
        f"PARTIAL COUNT, {len(unknown)} layer(s) not costed ({', '.join(unknown)}): "
        if unknown
        else ""
    )
    macs = (
        "no MACs counted"
        if unknown and not totals["macs"]
        else f"{'at least ' if unknown else ''}{totals['macs']:,} MACs"
    )
    return (
        f"{partial}{model} ({per}, float operands at {float_bits} bits): {macs}, "
        f"ACE {totals['ace']:.4g}, sops {totals['sops']:.4g}, ACEv2 {totals['acev2']:.4g} "
        f"(our reading), energy {totals['energy_pj'] / 1e6:.4g} µJ (45 nm)"
    )


def trained(model: str, epochs: int, test_accuracy: float, checkpoint: str) -> str:
    """The line of ``qatcore train``."""
    return (
        f"{model}: test accuracy {100 * test_accuracy:.1f} % after {epochs} epoch(s); "
        f"wrote {checkpoint} (export it with: qatcore export {checkpoint} --format onnx --out DIR)"
    )


def exported(summary: dict, examples: int) -> str:
    """The two lines of ``qatcore export``: the files written, and parity with PyTorch."""
    float_size = (
        "n/a" if summary["float_size_bytes"] is None else f"{summary['float_size_bytes']:,}"
    )
    return (
        f"wrote {summary['path']} ({summary['size_bytes']:,} bytes; float32 ONNX "
        f"{float_size} bytes) and {summary['metadata']}\n"
        f"parity with PyTorch on {examples} test images: max |Δ| "
        f"{summary['max_abs_diff']:.3g} (one output step {summary['output_step']:.3g}), "
        f"prediction agreement {summary['prediction_agreement']:.4f}"
    )


def bnn_memory(model: str, batch_size: int, optimizer: str, accounting: str, summary: dict) -> str:
    """The lines of ``qatcore bnn-memory``: the model's two totals, then what was measured."""
    lines = [
        f"{model}, batch {batch_size}, {optimizer}, {accounting} accounting: standard "
        f"{summary['standard_bytes'] / MIB:.2f} MiB, low-memory "
        f"{summary['low_memory_bytes'] / MIB:.2f} MiB, ratio {summary['ratio']:.2f}× (model)"
    ]
    for mode, measured in summary.get("measured", {}).items():
        # the peak of a fresh process: one read in this process, after other steps, may hide or add freed memory
        fresh = summary.get(f"measured_peak_{mode}_bytes")
        peak = "n/a (Linux only)" if fresh is None else f"{fresh / MIB:.1f} MiB"
        lines.append(
            f"  measured {mode}: held {measured['held_bytes'] / MIB:.2f} MiB, peak of a step in a fresh "
            f"process {peak}"
        )
    return "\n".join(lines)


def bnn_trained(summary: dict) -> str:
    """The line of ``qatcore bnn-train``."""
    return (
        f"{summary['model']}, {summary['mode']}: test accuracy "
        f"{100 * summary['test_accuracy']:.1f} %, {1000 * summary['seconds_per_step']:.1f} ms a step"
    )
