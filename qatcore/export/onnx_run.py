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


def run(sess, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """The session's outputs for ``x`` (float32, N×C×H×W), in batches."""
    x = np.ascontiguousarray(x, np.float32)
    return np.concatenate(
        [
            sess.run([OUTPUT], {INPUT: x[i : i + batch_size]})[0]
            for i in range(0, len(x), batch_size)
        ]
    )
