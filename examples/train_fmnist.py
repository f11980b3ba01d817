#!/usr/bin/python3
"""Train a small CNN on Fashion-MNIST through gcomp, or through plain PyTorch DDP.

    build/deploy/gcomp-run --nodes 4 --codec powersgd:rank=2 --stats-file stats.jsonl -- \\
        /usr/bin/python3 examples/train_fmnist.py --steps 600 --stats-file stats.jsonl

--mode optimizer  gcomp.torch.DistributedOptimizer (no torch.distributed process group)
--mode hook       DistributedDataParallel with gcomp.torch.ddp_comm_hook
--mode ddp        DistributedDataParallel over gloo, gcompd unused (the PyTorch baseline);
                  --powersgd-rank R registers torch's own PowerSGD hook (one DDP bucket)
The DDP modes need MASTER_PORT (a free port); RANK and WORLD_SIZE come from gcomp-run.

Every trainer reads its shard of the training set (a fresh permutation per epoch, the
same on every rank) from the offline copy of Debian's dataset-fashion-mnist
(/usr/share/datasets/fashion-mnist, gzipped idx files). Rank 0 evaluates on the 10,000
test images every --eval-every steps and prints a progress line with the test accuracy
and the bytes sent so far: with gcomp, the daemons' payload bytes from the stats file
given to gcomp-run (--stats-file here too); with DDP, the bytes handed to allreduce.
--log FILE writes those points as JSON lines. The learning rate drops tenfold at 3/4 of
the steps.
"""

import argparse
import gzip
import json
import os
import struct
import sys
import time

# One BLAS thread per trainer: Debian's OpenBLAS otherwise starts one per core in every
# trainer, spinning (sched_yield) between calls. Must come before numpy and torch load it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import torch
import torch.nn.functional as F

DATA_DIR = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530  # of the Fashion-MNIST training images


def load_idx(path):
    """An idx file (gzipped) as a numpy array of uint8."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise ValueError(f"{path}: not an idx file of unsigned bytes")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {arr.size} bytes of data for dimensions {dims}")
    return arr.reshape(dims)


def load_split(data_dir, split):
    """(images as uint8 N x 28 x 28, labels as int64) of 'train' or 't10k'."""
    images = load_idx(os.path.join(data_dir, f"{split}-images-idx3-ubyte.gz"))
    labels = load_idx(os.path.join(data_dir, f"{split}-labels-idx1-ubyte.gz"))
    if len(images) != len(labels):
        raise ValueError(f"{data_dir}: {len(images)} {split} images but {len(labels)} labels")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def prepare(images):
    """uint8 images -> normalised float32 N x 1 x 28 x 28."""
    return ((images.float() / 255.0 - MEAN) / STD).unsqueeze(1)


class Net(torch.nn.Module):
    """Two 5x5 convolutions (8, 16 channels) with max-pooling, two dense layers: 105k
    parameters, of which the 128 x 784 layer holds 95%. Small enough for 2 cores."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 8, 5, padding=2)
        self.conv2 = torch.nn.Conv2d(8, 16, 5, padding=2)
        self.fc1 = torch.nn.Linear(16 * 7 * 7, 128)
        self.fc2 = torch.nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def batches(n, batch_size, rank, world, seed):
    """Endless index batches of this rank's shard: a new permutation every epoch."""
    epoch = 0
    while True:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        shard = perm[rank::world]
        for i in range(0, len(shard) - batch_size + 1, batch_size):
            yield shard[i:i + batch_size]
        epoch += 1


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        correct = sum((model(prepare(x[i:i + 1000])).argmax(1) == y[i:i + 1000]).sum().item()
                      for i in range(0, len(x), 1000))
    model.train()
    return correct / len(x)


class StatsBytes:
    """Payload bytes node 0's daemon sent so far, from its --stats-file (JSON lines,
    flushed every cycle), read incrementally. Buckets of broadcast_parameters are left
    out: the bytes are the gradients'."""

    def __init__(self, path):
        self.path, self.offset, self.total = path, 0, 0

    def read(self):
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # complete lines only
        self.offset += end
        self.total += sum(payload_bytes(json.loads(line)) for line in data[:end].splitlines() if line)
        return self.total


def payload_bytes(record):
    """A stats-file record's gradient payload bytes (0 for broadcast buckets)."""
    return 0 if record["bucket"].startswith("gcomp.broadcast") else record["payload_bytes"]


class DDPBytes:
    """Bytes this rank hands to allreduce under DDP: counted at torch.distributed.all_reduce
    when a hook sends them (torch's PowerSGD hook calls it), else `dense` bytes a step
    (DDP's reducer allreduces every gradient once a step)."""

    def __init__(self, dense, hooked):
        self.total, self.per_step = 0, 0 if hooked else dense
        if hooked:
            self._all_reduce = torch.distributed.all_reduce
            torch.distributed.all_reduce = self._counting

    def _counting(self, tensor, *args, **kwargs):
        self.total += tensor.numel() * tensor.element_size()
        return self._all_reduce(tensor, *args, **kwargs)

    def step(self):
        self.total += self.per_step


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=["optimizer", "hook", "ddp"], default="optimizer")
    p.add_argument("--powersgd-rank", type=int, default=0,
                   help="with --mode ddp: torch's PowerSGD hook of this rank (0: none)")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=32, help="per trainer")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--data", default=DATA_DIR)
    p.add_argument("--stats-file", help="the daemons' stats file (gcomp-run --stats-file), for the bytes")
    p.add_argument("--log", help="write the progress points here as JSON lines (rank 0)")
    args = p.parse_args()
    if args.powersgd_rank and args.mode != "ddp":
        p.error("--powersgd-rank goes with --mode ddp (gcomp's PowerSGD is a --codec of gcomp-run)")

    torch.set_num_threads(1)
    import gcomp.torch

    rank, world = int(os.environ["GCOMP_RANK"]), int(os.environ["GCOMP_WORLD_SIZE"])
    try:
        train_x, train_y = load_split(args.data, "train")
        test_x, test_y = load_split(args.data, "t10k")
    except OSError as exc:
        sys.exit(f"train_fmnist: cannot read Fashion-MNIST ({exc}); apt-get install dataset-fashion-mnist")

    torch.manual_seed(args.seed)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[args.steps * 3 // 4], gamma=0.1)
    counter = None
    if args.mode == "optimizer":
        gcomp.torch.broadcast_parameters(model.state_dict(), root_rank=0)
        opt = gcomp.torch.DistributedOptimizer(opt, named_parameters=model.named_parameters(),
                                               samples_per_step=args.batch_size)
        net = model
    else:
        gcomp.torch.init_process_group("gloo")
        dense = sum(q.numel() * 4 for q in model.parameters())
        if args.mode == "hook":
            net = torch.nn.parallel.DistributedDataParallel(model)
            net.register_comm_hook(gcomp.torch.HookState(named_parameters=model, optimizer=opt,
                                                         samples_per_step=args.batch_size),
                                   gcomp.torch.ddp_comm_hook)
        elif args.powersgd_rank:
            from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook
            counter = DDPBytes(dense, hooked=True)
            # One DDP bucket: torch 1.13's PowerSGD hook deadlocks on gloo with several.
            net = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=1000)
            state = powerSGD_hook.PowerSGDState(process_group=None, start_powerSGD_iter=2,
                                                matrix_approximation_rank=args.powersgd_rank,
                                                random_seed=args.seed)
            net.register_comm_hook(state, powerSGD_hook.powerSGD_hook)
        else:
            counter = DDPBytes(dense, hooked=False)
            net = torch.nn.parallel.DistributedDataParallel(model)
    stats = StatsBytes(args.stats_file) if args.stats_file and args.mode != "ddp" else None

    log = open(args.log, "w") if args.log and rank == 0 else None
    t0, loss_sum, loss_n = time.monotonic(), 0.0, 0
    source = batches(len(train_x), args.batch_size, rank, world, args.seed)
    for step in range(1, args.steps + 1):
        idx = next(source)
        opt.zero_grad()
        loss = F.cross_entropy(net(prepare(train_x[idx])), train_y[idx])
        loss.backward()
        opt.step()
        sched.step()
        loss_sum, loss_n = loss_sum + loss.item(), loss_n + 1
        if counter is not None:
            counter.step()
        if rank == 0 and (step % args.eval_every == 0 or step == args.steps):
            acc = accuracy(model, test_x, test_y)
            sent = counter.total if counter else stats.read() if stats else None
            point = {"step": step, "loss": loss_sum / loss_n, "test_acc": acc, "bytes": sent,
                     "lr": opt.param_groups[0]["lr"], "elapsed_s": time.monotonic() - t0}
            loss_sum, loss_n = 0.0, 0
            mb = "?" if sent is None else f"{sent / 1e6:.2f}"
            print(f"step {step:5d}/{args.steps}  loss {point['loss']:.4f}  test acc {acc:.4f}  "
                  f"sent {mb} MB  {point['elapsed_s']:.1f} s", flush=True)
            if log:
                log.write(json.dumps(point) + "\n")
                log.flush()
    if log:
        log.close()
    if torch.distributed.is_initialized():
        # An orderly end: a trainer that left with gloo's threads still up was once
        # aborted ("terminate called without an active exception") while rank 0 evaluated.
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
