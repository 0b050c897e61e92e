"""Running an ONNX file in onnxruntime: a session with a fixed thread count, and batched inference."""

from __future__ import annotations

import numpy as np

from qatcore.export.onnx_inspect import INPUT, OUTPUT


def session(path_or_bytes, threads: int = 1):
    """An onnxruntime CPU session with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    source = str(path_or_bytes) if not isinstance(path_or_bytes, bytes) else path_or_bytes
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def optimized(path_or_bytes, threads: int = 1):
    """The graph onnxruntime actually runs (``SessionOptions.optimized_model_filepath``, at the
    extended level, where its QDQ fusions happen; the full level only adds a CPU-specific layout)."""
    import tempfile
    from pathlib import Path

    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    with tempfile.TemporaryDirectory() as folder:
        options.optimized_model_filepath = str(Path(folder) / "optimized.onnx")
        source = str(path_or_bytes) if not isinstance(path_or_bytes, bytes) else path_or_bytes
        ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        return onnx.load(options.optimized_model_filepath)


#: onnxruntime's integer kernels for convolutions and matrix products
INTEGER_KERNELS = ("QLinearConv", "QGemm", "QLinearMatMul", "MatMulInteger", "ConvInteger")


def integer_kernels(path_or_bytes, threads: int = 1) -> dict[str, int]:
    """How many of each integer conv/matmul kernel onnxruntime's optimized graph runs (empty: none)."""
    types: dict[str, int] = {}
    for node in optimized(path_or_bytes, threads).graph.node:
        if node.op_type in INTEGER_KERNELS:
            types[node.op_type] = types.get(node.op_type, 0) + 1
    return types


def run(sess, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """The session's outputs for ``x`` (float32, N×C×H×W), in batches."""
    x = np.ascontiguousarray(x, np.float32)
    return np.concatenate(
        [
            sess.run([OUTPUT], {INPUT: x[i : i + batch_size]})[0]
            for i in range(0, len(x), batch_size)
        ]
    )
