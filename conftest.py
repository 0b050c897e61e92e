"""Root conftest: what every test process, and every kernel nbval starts from it, runs with."""

import os

# No progress bars in stored or compared outputs: tqdm widgets carry random ids and timings.
os.environ["QATCORE_PROGRESS"] = "0"
# sympy's integrate may order terms by hash; a fixed hash seed keeps printed expressions stable.
os.environ["PYTHONHASHSEED"] = "0"
# Under pytest-xdist (make test, make test-all) the cores are shared out among the workers: one
# thread each, for the tests in the worker and the notebook kernels it starts.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("QATCORE_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# Hypothesis profiles: `ci` keeps every property test's full example count (make test-all),
# `fast` runs a quarter of them (make test); tests take their counts from tests/strategies.examples.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", max_examples=100, deadline=None)
settings.register_profile(
    "fast", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
