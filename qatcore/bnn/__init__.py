"""BNN training on the edge: the standard and the low-memory algorithm, modelled and measured.

Modules: ``layers`` (binary layers, sign, pooling, l1 batch norm — same classes in both modes),
``packing`` (1-bit storage), ``functions`` (what each algorithm keeps for backward, and its
gradients), ``models`` (MLP, CNV, BinaryNet; ``set_mode``), ``optim`` (SGD, Adam, Bop; float16 state),
``train`` (training in either mode), ``memory`` (two accountings: the authors' sheet, autograd), ``measure``
(what a real training step keeps, and peak process memory).
"""

from qatcore.bnn.layers import BinaryConv2d, BinaryLinear, SignActivation
from qatcore.bnn.models import BNNMLP, CNV, MODES, BinaryNet, set_mode

__all__ = [
    "BNNMLP",
    "CNV",
    "MODES",
    "BinaryConv2d",
    "BinaryLinear",
    "BinaryNet",
    "SignActivation",
    "set_mode",
]
