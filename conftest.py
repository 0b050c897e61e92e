"""Root conftest: what every test process, and every kernel nbval starts from it, runs with."""

import os

# No progress bars in stored or compared outputs: tqdm widgets carry random ids and timings.
os.environ["QATCORE_PROGRESS"] = "0"
