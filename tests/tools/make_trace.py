#!/usr/bin/python3
"""Synthetic gradient traces in the gcomp-trace/1 format (design.md section 5).

Command line::

    make_trace.py --workers W --steps S --out DIR [--preset small|resnet|random]
                  [--seed N] [--bucket-kb KB] [--no-hints]

Presets (layer shapes are those of real models, grouped into buckets in reverse layer
order with a size cap, the way PyTorch DDP does):

- ``small``: a small CNN (3 conv layers with biases, 2 fully connected), ~60 k
  parameters; a 64 KiB cap makes several buckets.
- ``resnet``: ResNet-18 for ImageNet (conv weights, batch-norm weights and biases,
  downsample convs, the 1000-way fc), 11.7 M parameters, 25 MiB buckets.
- ``random``: 2-4 buckets of 1-4 layers with random shapes (1 to 4 dimensions).

Gradients: float32, per layer N(0, 1/sqrt(fan_in)) times a per-worker and per-step
factor, plus a mean shared by all workers, from a fixed seed: the same arguments give
the same bytes. Hints (on by default): a step-decayed learning rate, samples per
step, and an epoch end every 4 steps and at the last step.

As a module: :func:`write_trace`, :func:`preset_buckets`, :func:`read_bucket` and
:func:`exact_mean` (the oracle for replay tests).
"""

import argparse
import json
import math
import os
import sys

import numpy as np

FORMAT = "gcomp-trace/1"


def _conv(name, cout, cin, k, bias=False):
    layers = [(f"{name}.weight", (cout, cin, k, k))]
    if bias:
        layers.append((f"{name}.bias", (cout,)))
    return layers


def _bn(name, c):
    return [(f"{name}.weight", (c,)), (f"{name}.bias", (c,))]


def small_layers():
    """A small CNN: conv 3->16->32->64 (3x3, with biases), fc 256->128->10."""
    return (_conv("conv1", 16, 3, 3, True) + _conv("conv2", 32, 16, 3, True)
            + _conv("conv3", 64, 32, 3, True)
            + [("fc1.weight", (128, 256)), ("fc1.bias", (128,)),
               ("fc2.weight", (10, 128)), ("fc2.bias", (10,))])


def resnet18_layers():
    """ResNet-18 (ImageNet) parameters in definition order."""
    layers = _conv("conv1", 64, 3, 7) + _bn("bn1", 64)
    cin = 64
    for stage, cout in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            p = f"layer{stage}.{block}"
            layers += _conv(f"{p}.conv1", cout, cin, 3) + _bn(f"{p}.bn1", cout)
            layers += _conv(f"{p}.conv2", cout, cout, 3) + _bn(f"{p}.bn2", cout)
            if block == 0 and cin != cout:
                layers += _conv(f"{p}.downsample.0", cout, cin, 1) + _bn(f"{p}.downsample.1", cout)
            cin = cout
    return layers + [("fc.weight", (1000, 512)), ("fc.bias", (1000,))]


def resnet50_layers():
    """ResNet-50 (torchvision, ImageNet) parameters in definition order: 25,557,032."""
    layers = _conv("conv1", 64, 3, 7) + _bn("bn1", 64)
    cin = 64
    for stage, (width, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3)), start=1):
        for block in range(blocks):
            p = f"layer{stage}.{block}"
            layers += _conv(f"{p}.conv1", width, cin, 1) + _bn(f"{p}.bn1", width)
            layers += _conv(f"{p}.conv2", width, width, 3) + _bn(f"{p}.bn2", width)
            layers += _conv(f"{p}.conv3", 4 * width, width, 1) + _bn(f"{p}.bn3", 4 * width)
            if block == 0:
                layers += _conv(f"{p}.downsample.0", 4 * width, cin, 1)
                layers += _bn(f"{p}.downsample.1", 4 * width)
            cin = 4 * width
    return layers + [("fc.weight", (1000, 2048)), ("fc.bias", (1000,))]


def bucketize(layers, cap_bytes):
    """Group layers into buckets of at most cap_bytes (one layer may exceed it alone),
    in reverse order like DDP (the last layers' gradients are ready first)."""
    buckets, current, size = [], [], 0
    for name, shape in reversed(layers):
        nbytes = 4 * math.prod(shape)
        if current and size + nbytes > cap_bytes:
            buckets.append(current)
            current, size = [], 0
        current.append((name, shape))
        size += nbytes
    if current:
        buckets.append(current)
    return [{"name": f"b{i}", "layers": b} for i, b in enumerate(buckets)]


def random_buckets(rng, nbuckets=None, max_layers=4, max_numel=5000):
    """2-4 buckets (or nbuckets) of 1..max_layers layers with random shapes."""
    nbuckets = nbuckets or int(rng.integers(2, 5))
    buckets = []
    for b in range(nbuckets):
        layers = []
        for i in range(int(rng.integers(1, max_layers + 1))):
            ndim = int(rng.integers(1, 5))
            shape = [int(rng.integers(1, 9)) for _ in range(ndim)]
            # Let the first dimension carry the size: up to max_numel elements.
            rest = math.prod(shape[1:])
            shape[0] = int(rng.integers(1, max(2, max_numel // rest + 1)))
            layers.append((f"layer{b}_{i}.weight" if ndim > 1 else f"layer{b}_{i}.bias", tuple(shape)))
        buckets.append({"name": f"b{b}", "layers": layers})
    return buckets


def preset_buckets(preset, rng=None, bucket_kb=None):
    """The buckets of a preset: [{"name": ..., "layers": [(name, shape), ...]}]."""
    if preset == "small":
        return bucketize(small_layers(), 1024 * (bucket_kb or 64))
    if preset == "resnet":
        return bucketize(resnet18_layers(), 1024 * (bucket_kb or 25 * 1024))
    if preset == "resnet50":
        return bucketize(resnet50_layers(), 1024 * (bucket_kb or 25 * 1024))
    if preset == "random":
        return random_buckets(rng if rng is not None else np.random.default_rng(0))
    raise ValueError(f"unknown preset {preset!r} (small, resnet, random)")


def default_hints(steps, steps_per_epoch=4, lr=0.1, samples=32):
    """A learning rate divided by 10 every 2 epochs, samples per step, epoch ends."""
    hints = []
    for s in range(steps):
        epoch = s // steps_per_epoch
        hints.append({"step": s, "lr": lr * 0.1 ** (epoch // 2), "samples": samples,
                      "epoch_end": (s + 1) % steps_per_epoch == 0 or s == steps - 1})
    return hints


def _fan_in(shape):
    return math.prod(shape[1:]) if len(shape) > 1 else shape[0]


def write_trace(out, workers, steps, buckets, seed=0, hints=True):
    """Write a trace to ``out``; return its manifest (a dict).

    ``buckets``: [{"name": ..., "layers": [(name, shape), ...]}]. ``hints``: True for
    :func:`default_hints`, a list to use as is, or False/None for none.
    """
    if workers < 1 or steps < 1:
        raise ValueError(f"workers and steps must be >= 1, got {workers} and {steps}")
    rng = np.random.default_rng(seed)
    manifest = {
        "format": FORMAT, "workers": workers, "steps": steps,
        "buckets": [{"name": b["name"],
                     "layers": [{"name": n, "shape": list(s), "dtype": "float32"}
                                for n, s in b["layers"]]} for b in buckets],
    }
    if hints is True:
        manifest["hints"] = default_hints(steps)
    elif hints:
        manifest["hints"] = list(hints)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    for step in range(steps):
        for b in buckets:
            # The part of the gradient all workers share, and each worker's noise.
            common = [rng.standard_normal(math.prod(s)) / math.sqrt(_fan_in(s))
                      for _, s in b["layers"]]
            for w in range(workers):
                scale = 0.5 + rng.random()
                parts = [c + scale * rng.standard_normal(c.size) / math.sqrt(_fan_in(s))
                         for c, (_, s) in zip(common, b["layers"])]
                d = os.path.join(out, f"w{w}", f"s{step}")
                os.makedirs(d, exist_ok=True)
                np.save(os.path.join(d, f"{b['name']}.npy"),
                        np.concatenate(parts).astype("<f4"))
    return manifest


def read_bucket(trace_dir, worker, step, bucket):
    """The flat float32 gradients of one worker, step and bucket name."""
    return np.load(os.path.join(trace_dir, f"w{worker}", f"s{step}", f"{bucket}.npy"))


def exact_mean(trace_dir, step, bucket, workers):
    """The exact mean over workers (computed in float64) of one step and bucket."""
    total = sum(read_bucket(trace_dir, w, step, bucket).astype(np.float64) for w in range(workers))
    return total / workers


def main(argv=None):
    p = argparse.ArgumentParser(description="Write a synthetic gcomp-trace/1 trace.")
    p.add_argument("--workers", type=int, required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--preset", default="small", choices=["small", "resnet", "random"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bucket-kb", type=int, help="bucket size cap (small: 64, resnet: 25600)")
    p.add_argument("--no-hints", action="store_true", help="write no hints")
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    buckets = preset_buckets(args.preset, rng, args.bucket_kb)
    manifest = write_trace(args.out, args.workers, args.steps, buckets, seed=args.seed,
                           hints=not args.no_hints)
    numel = sum(math.prod(layer["shape"]) for b in manifest["buckets"] for layer in b["layers"])
    print(f"{args.out}: {args.workers} workers, {args.steps} steps, "
          f"{len(manifest['buckets'])} buckets, {numel} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
