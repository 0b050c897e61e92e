"""Hypothesis strategies shared by the property tests."""

from hypothesis import settings
from hypothesis import strategies as st

#: bits, range m and a handful of weights, some far outside [-m, m]
quantizer_inputs = dict(
    bits=st.integers(1, 16),
    m=st.floats(1e-3, 10.0),
    ws=st.lists(st.floats(-20.0, 20.0), min_size=1, max_size=30),
)


def examples(n: int) -> settings:
    """Hypothesis settings for ``n`` examples under the ``ci`` profile (``make test-all``), scaled
    down with the active profile's ``max_examples`` (``fast``, ``make test``, runs a quarter)."""
    return settings(max_examples=max(5, n * settings.default.max_examples // 100), deadline=None)
