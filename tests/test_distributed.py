"""Two gloo processes on global batch B train the same weights as one process on batch B."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qatcore import distributed

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "ddp_worker.py"


def _run(command, env=None):
    env = {**os.environ, "QATCORE_THREADS": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout


def _torchrun(*args):
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node=2",
        "--master-addr=127.0.0.1",
        f"--master-port={distributed.free_port()}",
        *args,
    ]


@pytest.mark.distributed
def test_two_processes_train_the_weights_of_one(tmp_path):
    _run([sys.executable, str(WORKER), "cnn", str(tmp_path / "one.pt")])
    _run(_torchrun(str(WORKER), "cnn", str(tmp_path / "two.pt")))
    one = torch.load(tmp_path / "one.pt", weights_only=True)
    two = torch.load(tmp_path / "two.rank0.pt", weights_only=True)
    assert len(one["losses"]) == len(two["losses"]) == 20
    assert one["losses"] == pytest.approx(two["losses"], rel=1e-4)
    moved = 0.0
    for name, weight in one["state"].items():
        torch.testing.assert_close(two["state"][name], weight, rtol=1e-4, atol=1e-5, msg=name)
        moved = max(moved, float((weight - two["state"][name]).abs().max()))
    assert moved < 1e-5


@pytest.mark.distributed
def test_the_low_memory_bnn_trainer_runs_data_parallel(tmp_path):
    """Batch norm statistics are per process, so the weights differ from one process's; the two
    replicas' parameters must stay identical and the loss must fall."""
    _run(_torchrun(str(WORKER), "bnn", str(tmp_path / "bnn.pt")))
    rank0, rank1 = (torch.load(tmp_path / f"bnn.rank{r}.pt", weights_only=True) for r in (0, 1))
    for name, tensor in rank0["parameters"].items():
        assert torch.equal(tensor, rank1["parameters"][name]), name
    assert rank0["losses"] == rank1["losses"]
    losses = rank0["losses"]
    assert len(losses) == 40 and sum(losses[-5:]) < 0.7 * sum(losses[:5])


@pytest.mark.distributed
def test_equivalence_metrics_are_the_same_on_two_processes():
    args = ["equivalence", "--epochs", "1", "--json"]
    one = json.loads(_run([sys.executable, "-m", "qatcore", *args]))
    printed = [
        line
        for line in _run([sys.executable, "-m", "qatcore", *args, "--nproc", "2"]).splitlines()
        if line.startswith("{")
    ]
    assert len(printed) == 1, "only rank 0 prints"
    two = json.loads(printed[0])
    for key in ("quantized_weight_agreement", "jitter_agreement", "ablation_agreement", "alpha"):
        assert two[key] == pytest.approx(one[key], abs=2e-3), key


def test_the_shards_of_local_batch_k_make_up_global_batch_k():
    order = torch.randperm(256, generator=torch.Generator().manual_seed(0))
    for world in (2, 4):
        shards = [distributed.shard(order, 64, rank, world) for rank in range(world)]
        assert {local for _, local in shards} == {64 // world}
        for k in range(4):
            together = torch.cat(
                [part[k * 64 // world : (k + 1) * 64 // world] for part, _ in shards]
            )
            assert sorted(together.tolist()) == sorted(order[k * 64 : (k + 1) * 64].tolist())


def test_one_process_keeps_the_whole_order():
    order = torch.arange(10)
    assert distributed.shard(order, 4)[1] == 4 and distributed.shard(order, 4)[0] is order


def test_a_batch_that_does_not_split_over_the_processes_is_refused():
    with pytest.raises(ValueError, match="multiple of the 2 processes"):
        distributed.shard(torch.arange(128), 63, rank=0, world=2)
