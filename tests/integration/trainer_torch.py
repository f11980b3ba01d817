#!/usr/bin/python3
"""A PyTorch trainer for the gcomp.torch tests, started by gcomp-run.

Trains two small models side by side for --steps steps, one with float32 parameters,
one with float16 ones (the gradients keep the parameters' dtype), through gcomp: the
DDP hook (--mode hook; the float32 model with state None, the float16 one with its own
HookState) or DistributedOptimizer (--mode optimizer, after broadcast_parameters from
rank-dependent initial values). Every rank takes its slice of a global batch that
depends only on the step, so the result can be compared with single-process training
on the whole batch (reference() below). Writes --out/rank{R}.pt.
"""

import argparse
import os

# One BLAS thread per trainer: Debian's OpenBLAS otherwise starts one per core in every
# trainer, spinning (sched_yield) between calls. Must come before numpy and torch load it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch

import gcomp.torch

LOCAL_BATCH = 6
LR = 0.1
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


class Net(torch.nn.Module):
    """A small MLP whose parameters are registered output layer first, so that DDP's first
    bucket (reverse registration order) is not in the order the gradients come in."""

    def __init__(self, dtype, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.out = torch.nn.Parameter((torch.randn(16, 4, generator=g) * 0.3).to(dtype))
        self.out_bias = torch.nn.Parameter(torch.zeros(4).to(dtype))
        self.hidden = torch.nn.Parameter((torch.randn(8, 16, generator=g) * 0.3).to(dtype))
        self.hidden_bias = torch.nn.Parameter((torch.randn(16, generator=g) * 0.1).to(dtype))
        self.scale = torch.nn.Parameter(torch.tensor(1.0).to(dtype))  # a 0-d parameter

    def forward(self, x):
        h = torch.tanh(x @ self.hidden.float() + self.hidden_bias.float())
        return self.scale.float() * (h @ self.out.float()) + self.out_bias.float()


def batch(step, world):
    """The global batch of a step: (inputs, targets) for world * LOCAL_BATCH samples."""
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(world * LOCAL_BATCH, 8, generator=g), torch.randn(world * LOCAL_BATCH, 4, generator=g)


def make_optimizer(model):
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)


def reference(steps, world, seed):
    """Single-process training on the whole batches: {dtype name: state_dict}."""
    out = {}
    for name, dtype in DTYPES.items():
        model = Net(dtype, seed)
        opt, sched = make_optimizer(model)
        for step in range(steps):
            x, y = batch(step, world)
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            sched.step()
        out[name] = model.state_dict()
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["hook", "optimizer"], required=True)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    rank, world = int(os.environ["GCOMP_RANK"]), int(os.environ["GCOMP_WORLD_SIZE"])

    # Rank-dependent starting points: DDP's constructor or broadcast_parameters must
    # make them rank 0's.
    models = {name: Net(dtype, args.seed + rank) for name, dtype in DTYPES.items()}
    record = {"bucket_names": []}
    if args.mode == "hook":
        gcomp.torch.init_process_group("gloo")
        trained = {}
        for name, model in models.items():
            # DDP's first iteration has one bucket of everything; then it rebuilds them in
            # the order the gradients came: one bucket in another order for fp32 (its first
            # bucket may hold 1 MB), one per parameter for fp16 (tiny caps).
            first_cap = torch.distributed._DEFAULT_FIRST_BUCKET_BYTES
            if name == "fp16":
                torch.distributed._DEFAULT_FIRST_BUCKET_BYTES = 1
            ddp = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=1e-5)
            torch.distributed._DEFAULT_FIRST_BUCKET_BYTES = first_cap
            state = None if name == "fp32" else gcomp.torch.HookState(named_parameters=ddp)
            ddp.register_comm_hook(state, gcomp.torch.ddp_comm_hook)
            trained[name] = (ddp, *make_optimizer(ddp), state)
    else:
        trained = {}
        for name, model in models.items():
            gcomp.torch.broadcast_parameters(model.state_dict(), root_rank=0)
            opt, sched = make_optimizer(model)
            dopt = gcomp.torch.DistributedOptimizer(opt, named_parameters=model.named_parameters(),
                                                    bucket_cap_mb=1e-4, samples_per_step=LOCAL_BATCH)
            # The scheduler drives the wrapped optimizer's learning rate through dopt.
            trained[name] = (model, dopt, torch.optim.lr_scheduler.StepLR(dopt, step_size=2, gamma=0.5), None)
        opt, sched = None, None
        record["after_broadcast"] = {name: {k: v.clone() for k, v in m.state_dict().items()}
                                     for name, m in models.items()}

    for step in range(args.steps):
        x, y = batch(step, world)
        x, y = x[rank * LOCAL_BATCH:(rank + 1) * LOCAL_BATCH], y[rank * LOCAL_BATCH:(rank + 1) * LOCAL_BATCH]
        for name, (model, opt, sched, state) in trained.items():
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            for p in model.parameters():
                assert p.grad.dtype == DTYPES[name], (name, p.grad.dtype)
            opt.step()
            sched.step()
        if args.mode == "hook" and step in (0, args.steps - 1):
            states = {"fp32": gcomp.torch._default_state, "fp16": trained["fp16"][3]}
            record["bucket_names"].append({name: sorted(b.name for b in s._buckets.values())
                                           for name, s in states.items()})
            record["layers"] = {name: [[n for n, _ in b.layers] for b in s._buckets.values()]
                                for name, s in states.items()}
    record["final"] = {name: m.state_dict() for name, m in models.items()}
    torch.save(record, os.path.join(args.out, f"rank{rank}.pt"))


if __name__ == "__main__":
    main()
