"""Train the MNIST CNN on 1280 digits for one epoch; save the final weights (run alone or by torchrun).

Usage: ``python tests/ddp_worker.py OUT.pt`` (one process) or
``python -m torch.distributed.run --nproc-per-node 2 tests/ddp_worker.py OUT.pt``.
"""

import sys

import torch

from qatcore import data, distributed, runtime
from qatcore.models import MNISTCNN
from qatcore.train import TrainConfig, train

runtime.configure(seed=0, threads=1)
distributed.init_from_environment()
digits = data.subset(data.load("digits"), train=1280)
model = MNISTCNN(bits=2, estimator="dsq", image_size=digits.image_size)
result = train(model, digits, TrainConfig(optimizer="sgd", lr=0.02, batch_size=64, epochs=1), progress=False)
if distributed.is_main_process():
    torch.save({"state": model.state_dict(), "losses": result.losses}, sys.argv[1])
