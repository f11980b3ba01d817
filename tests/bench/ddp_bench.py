#!/usr/bin/python3
"""PyTorch DDP (gloo) over ResNet-50's parameter shapes, with or without its PowerSGD
hook, for bench_link.py. One process per rank (RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT from the environment). The model's forward is a dot product of each
parameter with a fixed random tensor, so backward costs almost nothing and the step
is DDP's communication (one DDP bucket: torch 1.13's PowerSGD hook deadlocks on gloo
with several). Rank 0 prints {"step_ms": median}.

    ddp_bench.py [--powersgd RANK] [--steps N] [--warmup W]
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))

import make_trace  # noqa: E402


class Shapes(torch.nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.ps = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(s)) for _, s in layers])
        g = torch.Generator().manual_seed(0)
        self.ws = [torch.randn(s, generator=g) for _, s in layers]

    def forward(self):
        return sum((p * w).sum() for p, w in zip(self.ps, self.ws))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--powersgd", type=int, default=0)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    model = DDP(Shapes(make_trace.resnet50_layers()), bucket_cap_mb=200)
    if a.powersgd:
        from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as psgd
        state = psgd.PowerSGDState(process_group=None, matrix_approximation_rank=a.powersgd,
                                   start_powerSGD_iter=2, min_compression_rate=2,
                                   use_error_feedback=True, warm_start=True)
        model.register_comm_hook(state, psgd.powerSGD_hook)
    times = []
    for step in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        model.zero_grad(set_to_none=False)
        model().backward()
        if step >= a.warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    if dist.get_rank() == 0:
        print(json.dumps({"step_ms": statistics.median(times)}), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
