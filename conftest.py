"""Root conftest: what every test process, and every kernel nbval starts from it, runs with."""

import os

# No progress bars in stored or compared outputs: tqdm widgets carry random ids and timings.
os.environ["QATCORE_PROGRESS"] = "0"
# sympy's integrate may order terms by hash; a fixed hash seed keeps printed expressions stable.
os.environ["PYTHONHASHSEED"] = "0"
