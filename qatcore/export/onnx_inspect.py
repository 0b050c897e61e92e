"""Reading a qatcore ONNX file back: its node types and pattern, each quantized weight's stored type
and consumer, the JSON ``metadata_props`` qatcore writes, and a check that the stored weight codes
keep to the range recorded for them."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
from onnx import helper, numpy_helper

#: the graph's input and output names
INPUT, OUTPUT = "input", "logits"
#: metadata_props keys: each quantized weight's code range, each activation quantizer's bits
CODE_BOUNDS_KEY = "qatcore.weight_code_bounds"
ACTIVATION_BITS_KEY = "qatcore.activation_bits"


def node_types(model: onnx.ModelProto) -> dict[str, int]:
    """How many nodes of each op type the graph has."""
    return dict(sorted(Counter(node.op_type for node in model.graph.node).items()))


def pattern(model: onnx.ModelProto) -> list[tuple[str, list[str]]]:
    """Each node as (op type, what feeds each input: ``input``, an initializer's element type such
    as ``INT4``, or the op type of the node producing it): the graph's shape, free of names."""
    types = {
        t.name: helper.tensor_dtype_to_string(t.data_type).removeprefix("TensorProto.")
        for t in model.graph.initializer
    }
    producer = {out: node.op_type for node in model.graph.node for out in node.output}
    inputs = {v.name for v in model.graph.input}
    return [
        (
            node.op_type,
            ["input" if i in inputs else types.get(i) or producer[i] for i in node.input],
        )
        for node in model.graph.node
    ]


def describe(model: onnx.ModelProto) -> list[str]:
    """The graph node by node, one line each: op type ← what feeds it (with initializer names)."""
    types = {
        t.name: helper.tensor_dtype_to_string(t.data_type).removeprefix("TensorProto.")
        for t in model.graph.initializer
    }
    lines = []
    for (op_type, feeds), node in zip(pattern(model), model.graph.node, strict=True):
        shown = [
            f"{feed} {name}" if name in types else feed
            for feed, name in zip(feeds, node.input, strict=True)
        ]
        lines.append(f"{op_type:<18}← {', '.join(shown)}")
    return lines


def qdq_weights(model: onnx.ModelProto) -> dict[str, tuple[str, str]]:
    """For each quantized weight: its initializer's element type and the op its DequantizeLinear
    feeds (``("INT4", "Conv")`` is the standard pattern), by layer name."""
    types = {
        t.name: helper.tensor_dtype_to_string(t.data_type).removeprefix("TensorProto.")
        for t in model.graph.initializer
    }
    found = {}
    for layer, entry in metadata(model, CODE_BOUNDS_KEY).items():
        dequantize = next(
            n
            for n in model.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] == entry["initializer"]
        )
        consumers = [n.op_type for n in model.graph.node if dequantize.output[0] in n.input]
        found[layer] = (types[entry["initializer"]], "+".join(consumers))
    return found


def metadata(model: onnx.ModelProto, key: str) -> dict:
    """One of the JSON ``metadata_props`` qatcore writes (empty if absent)."""
    found = next((p.value for p in model.metadata_props if p.key == key), None)
    return {} if found is None else json.loads(found)


def clip_bounds(model: onnx.ModelProto) -> dict[str, tuple[int, int]]:
    """The integer range of every quantized weight's codes, by layer name (from ``metadata_props``)."""
    return {
        layer: (entry["min"], entry["max"])
        for layer, entry in metadata(model, CODE_BOUNDS_KEY).items()
    }


def check_stored_codes(model: onnx.ModelProto) -> dict[str, tuple[int, int]]:
    """ValueError unless each layer's stored weight codes lie in the range ``metadata_props`` gives
    it, and the initializer feeds a DequantizeLinear directly; returns the bounds checked."""
    values = {t.name: t for t in model.graph.initializer}
    dequantized = {node.input[0] for node in model.graph.node if node.op_type == "DequantizeLinear"}
    for layer, entry in metadata(model, CODE_BOUNDS_KEY).items():
        name = entry["initializer"]
        if name not in values or name not in dequantized:
            raise ValueError(
                f"layer {layer!r}: initializer {name!r} does not feed a DequantizeLinear"
            )
        codes = numpy_helper.to_array(values[name]).astype(np.int64)
        if codes.size and (codes.min() < entry["min"] or codes.max() > entry["max"]):
            raise ValueError(
                f"layer {layer!r}: stored codes span [{codes.min()}, {codes.max()}], "
                f"outside the declared [{entry['min']}, {entry['max']}]"
            )
    return clip_bounds(model)
