#!/usr/bin/python3
"""The PyTorch twin of `nac bench`: one full NAC training step (forward of two views as
per-view batch-norm passes, the NAC loss, backward, LARS update) of a CIFAR-stem ResNet,
timed over several steps. Prints one JSON line: images/s, peak resident memory, and the
step's FLOPs counted as nac bench counts them (divide gflop_per_s by the
sgemm_gflop_per_s that nac bench measures on the same machine for the fraction of the
sgemm peak: Debian's torch.mm goes through a generic BLAS, not oneDNN, so it is no
yardstick).

  python3 bench/bench_pytorch.py --arch resnet18 --batch 64 --size 32 --threads 2

Uses Debian's python3-torch (1.13, same oneDNN 2.6 as nacvae). Not needed by the tests."""
import argparse, json, math, resource, time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision_free_resnet as tvr  # local module next to this script


def nac_loss(o, l, p, gen):
    z = torch.tanh(o)
    mask = torch.where(torch.rand(z.shape, generator=gen, device=z.device) < p, -1.0, 1.0)
    zt = mask * z
    s = zt @ z.t() * (0.5 * math.log((1 - p) / p))
    k = o.shape[0] // 2
    lo = torch.cat([l[k:], l[:k]], 0)
    pos = 0.5 * (zt * lo + F.logsigmoid(lo) + F.logsigmoid(-lo) + math.log(4.0)).sum(1)
    return (-pos + torch.logsumexp(s, 1)).mean()


class LARS(torch.optim.Optimizer):
    """LARS as the official lars.py with TensorFlow's guard; a parameter group with
    exclude=True (biases, BN) gets neither weight decay nor the trust ratio."""

    def __init__(self, params, lr, momentum=0.9, weight_decay=1e-6, eta=0.001):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta,
                                      exclude=False))

    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                d = p.grad if g["exclude"] else p.grad.add(p, alpha=g["weight_decay"])
                wn, gn = torch.norm(p), torch.norm(d)
                trust = torch.where((wn > 0) & (gn > 0) & (not g["exclude"]), g["eta"] * wn / gn,
                                    torch.ones_like(wn))
                st = self.state[p]
                if "v" not in st:
                    st["v"] = torch.zeros_like(p)
                v = st["v"]
                v.mul_(g["momentum"]).add_(d, alpha=g["lr"] * float(trust))
                p.sub_(v)


def step_flops(enc, g, r, x1, x2, D):
    """FLOPs of one step as nac bench counts them: two a multiply-add, for every
    convolution's forward, backward-data (not for the first, whose input needs no
    gradient) and backward-weights, every Linear's forward and both backwards, and the
    objective's (2K x D) (D x 2K) similarity product and its two backward products."""
    macs = {"conv_fwd": 0.0, "first": None, "lin": 0.0}

    def conv_hook(m, inp, out):
        mac = out.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        if macs["first"] is None:
            macs["first"] = mac
        macs["conv_fwd"] += mac

    def lin_hook(m, inp, out):
        macs["lin"] += out.numel() * m.in_features

    hs = [m.register_forward_hook(conv_hook) for m in enc.modules() if isinstance(m, nn.Conv2d)]
    hs += [m.register_forward_hook(lin_hook) for mod in (g, r) for m in mod.modules()
           if isinstance(m, nn.Linear)]
    with torch.no_grad():
        hh = torch.cat([enc(x1), enc(x2)], 0)
        g(hh), r(hh)
    for h in hs:
        h.remove()
    n2 = hh.shape[0]
    total = 3 * macs["conv_fwd"] - macs["first"] + 3 * macs["lin"] + 3 * n2 * n2 * D
    return 2.0 * total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--batch", type=int, default=64, help="images per view")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (scripts/gpu-check.sh)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    enc = tvr.build(a.arch, a.channels, a.width)
    h = enc.features
    D = 128
    g = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, D))
    r = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, D))
    enc, g, r = enc.to(a.device), g.to(a.device), r.to(a.device)
    params = list(enc.parameters()) + list(g.parameters()) + list(r.parameters())
    opt = LARS(params, lr=0.1)
    gen = torch.Generator(device=a.device).manual_seed(1)
    x1 = torch.randn(a.batch, a.channels, a.size, a.size).to(a.device)
    x2 = torch.randn(a.batch, a.channels, a.size, a.size).to(a.device)

    def step():
        opt.zero_grad(set_to_none=True)
        h1, h2 = enc(x1), enc(x2)  # per-view BN statistics, as the official code
        hh = torch.cat([h1, h2], 0)
        o = g(hh) / math.sqrt(D)
        l = r(hh) / math.sqrt(D)
        loss = nac_loss(o, l, 0.1, gen)
        loss.backward()
        opt.step()
        return float(loss)

    for _ in range(a.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    dt = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gflop = step_flops(enc, g, r, x1, x2, D) / 1e9
    print(json.dumps({"impl": "pytorch " + torch.__version__, "arch": a.arch, "batch_per_view": a.batch,
                      "images_per_step": 2 * a.batch, "size": a.size, "threads": a.threads,
                      "images_per_s": round(2 * a.batch * a.steps / dt, 2),
                      "step_s": round(dt / a.steps, 4), "peak_rss_mb": round(peak_kb / 1024, 1),
                      "gflop_per_step": round(gflop, 2),
                      "gflop_per_s": round(gflop * a.steps / dt, 1), "device": a.device,
                      "device_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)
                      if a.device.startswith("cuda") else None}))


if __name__ == "__main__":
    main()
