"""Paper 1: custom gradient estimators are straight-through estimators in disguise.

``definitions`` defines each estimator once, as a sympy expression of Q̂′ within a bin;
``estimator`` derives its torch backward, α and weight map; ``registry`` names them. Their public
names are re-exported here (``from qatcore.estimators import get``). ``layers`` and ``models`` quantize networks, ``train``
trains them recording trajectories, ``theory`` and ``quadratic`` check the theorem symbolically
and numerically, ``trajectory``, ``equivalence`` and ``imagenet`` run the four-run experiment,
``plots`` and ``widgets`` show it.
"""

from qatcore.estimators.definitions import (
    CLOSED_FORM,
    COMPLEX_NUMPY,
    DELTA,
    GRAD_SIGN,
    M_RANGE,
    QUADRATURE,
    Definition,
    Derivation,
    Parameter,
    derive,
    u,
    without_reciprocal_hyperbolics,
)
from qatcore.estimators.estimator import BoundEstimator, Estimator
from qatcore.estimators.registry import (
    DSQ_AUTHORS_SHARPNESS,
    definition,
    describe,
    dsq_default_sharpness,
    get,
    names,
    register,
)

__all__ = [
    "u",
    "DELTA",
    "M_RANGE",
    "GRAD_SIGN",
    "CLOSED_FORM",
    "QUADRATURE",
    "Parameter",
    "Definition",
    "without_reciprocal_hyperbolics",
    "COMPLEX_NUMPY",
    "Derivation",
    "derive",
    "Estimator",
    "BoundEstimator",
    "DSQ_AUTHORS_SHARPNESS",
    "dsq_default_sharpness",
    "names",
    "definition",
    "get",
    "register",
    "describe",
]
