#!/usr/bin/python3
"""The PyTorch twin of `nac bench`: one full NAC training step (forward of two views as
per-view batch-norm passes, the NAC loss, backward, LARS update) of a CIFAR-stem ResNet,
timed over several steps. Prints one JSON line: images/s and peak resident memory.

  python3 bench/bench_pytorch.py --arch resnet18 --batch 64 --size 32 --threads 2

Uses Debian's python3-torch (1.13, same oneDNN 2.6 as nacvae). Not needed by the tests."""
import argparse, json, math, resource, time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision_free_resnet as tvr  # local module next to this script


def nac_loss(o, l, p, gen):
    z = torch.tanh(o)
    mask = torch.where(torch.rand(z.shape, generator=gen) < p, -1.0, 1.0)
    zt = mask * z
    s = zt @ z.t() * (0.5 * math.log((1 - p) / p))
    k = o.shape[0] // 2
    lo = torch.cat([l[k:], l[:k]], 0)
    pos = 0.5 * (zt * lo + F.logsigmoid(lo) + F.logsigmoid(-lo) + math.log(4.0)).sum(1)
    return (-pos + torch.logsumexp(s, 1)).mean()


class LARS(torch.optim.Optimizer):
    def __init__(self, params, lr, momentum=0.9, weight_decay=1e-6, eta=0.001):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta))

    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                d = p.grad.add(p, alpha=g["weight_decay"])
                wn, gn = torch.norm(p), torch.norm(d)
                trust = torch.where((wn > 0) & (gn > 0), g["eta"] * wn / gn, torch.ones_like(wn))
                st = self.state[p]
                if "v" not in st:
                    st["v"] = torch.zeros_like(p)
                v = st["v"]
                v.mul_(g["momentum"]).add_(d, alpha=g["lr"] * float(trust))
                p.sub_(v)


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
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    enc = tvr.build(a.arch, a.channels, a.width)
    h = enc.features
    D = 128
    g = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, D))
    r = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, D))
    params = list(enc.parameters()) + list(g.parameters()) + list(r.parameters())
    opt = LARS(params, lr=0.1)
    gen = torch.Generator().manual_seed(1)
    x1 = torch.randn(a.batch, a.channels, a.size, a.size)
    x2 = torch.randn(a.batch, a.channels, a.size, a.size)

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
    print(json.dumps({"impl": "pytorch " + torch.__version__, "arch": a.arch, "batch_per_view": a.batch,
                      "images_per_step": 2 * a.batch, "size": a.size, "threads": a.threads,
                      "images_per_s": round(2 * a.batch * a.steps / dt, 2),
                      "step_s": round(dt / a.steps, 4), "peak_rss_mb": round(peak_kb / 1024, 1)}))


if __name__ == "__main__":
    main()
