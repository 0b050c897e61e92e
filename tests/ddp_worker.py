"""Train on 1280 digits for one epoch and save the final weights (run alone or under torchrun).

Usage: ``python tests/ddp_worker.py cnn|bnn OUT.pt`` (one process) or
``python -m torch.distributed.run --nproc-per-node 2 tests/ddp_worker.py cnn|bnn OUT.pt``.
``cnn``: the MNIST CNN with DSQ and SGD; ``bnn``: the BNN MLP in the paper's low-memory mode.
Every process saves its own replica as ``OUT.pt`` with ``.rank<r>`` before the suffix under torchrun.
"""

import sys
from pathlib import Path

import torch

from qatcore import data, distributed, runtime
from qatcore.bnn.models import BNNMLP
from qatcore.bnn.train import BNNConfig, train_bnn
from qatcore.estimators.models import MNISTCNN
from qatcore.estimators.train import TrainConfig, train
from qatcore.optimizers import OptimizerConfig

kind, out = sys.argv[1], Path(sys.argv[2])
runtime.configure(seed=0, threads=1)
distributed.init_from_environment()
digits = data.subset(data.load("digits"), train=1280)
if kind == "cnn":
    model = MNISTCNN(bits=2, estimator="dsq", image_size=digits.image_size)
    losses = train(
        model,
        digits,
        TrainConfig(OptimizerConfig("sgd", lr=0.02), batch_size=64, epochs=1),
        progress=False,
    ).losses
else:
    model = BNNMLP(image_size=digits.image_size)
    losses = train_bnn(
        model, digits, BNNConfig(mode="low_memory", epochs=2, batch_size=64), progress=False
    ).losses
if distributed.is_distributed():
    out = out.with_suffix(f".rank{torch.distributed.get_rank()}{out.suffix}")
parameters = {name: p.detach() for name, p in model.named_parameters()}
torch.save({"state": model.state_dict(), "parameters": parameters, "losses": losses}, out)
