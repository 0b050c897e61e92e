"""Paper 1: custom gradient estimators are straight-through estimators in disguise.

``core`` defines each estimator once, as a sympy expression of Q̂′ within a bin, and derives its
torch backward, α and weight map; its public names are re-exported here
(``from qatcore.estimators import get``). ``layers`` and ``models`` quantize networks, ``train``
trains them recording trajectories, ``theory`` and ``quadratic`` check the theorem symbolically
and numerically, ``trajectory``, ``equivalence`` and ``imagenet`` run the four-run experiment,
``plots`` and ``widgets`` show it.
"""

from qatcore.estimators.core import (
    CLOSED_FORM,
    COMPLEX_NUMPY,
    DELTA,
    DSQ_AUTHORS_SHARPNESS,
    GRAD_SIGN,
    M_RANGE,
    QUADRATURE,
    Definition,
    Derivation,
    Estimator,
    Parameter,
    definition,
    derive,
    describe,
    dsq_default_sharpness,
    get,
    names,
    register,
    u,
    without_reciprocal_hyperbolics,
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
    "DSQ_AUTHORS_SHARPNESS",
    "dsq_default_sharpness",
    "names",
    "definition",
    "get",
    "register",
    "describe",
]
