#!/usr/bin/python3
"""A PyTorch mirror of `nac pretrain` on Fashion-MNIST, written from the official NAC code
(yookoon/nac: train() with the batch NAC objective, per-view forward passes, LARS with
linear warm-up and cosine decay), with the same online kNN monitor (k 200, T 0.1, a bank
of training images, held-out test queries). It is the end-to-end check of nacvae's loop:
run both on the same config and compare the loss and kNN curves; they should agree within
seed noise (the two draw different random numbers, so not bit for bit).

  python3 bench/nac_mirror.py --per-class 500 --epochs 5 --lr 8 --out mirror.jsonl
  python3 bench/nac_mirror.py --compare runs/<nac run>/metrics.jsonl mirror.jsonl

Needs Debian's python3-torch (1.13); torchvision is not needed. Not used by the tests."""
import argparse, gzip, json, math, os, struct, sys, time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torchvision_free_resnet as tvr  # noqa: E402
from bench_pytorch import LARS, nac_loss  # noqa: E402


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    nd = magic & 0xFF
    dims = struct.unpack(">" + "I" * nd, data[4:4 + 4 * nd])
    return torch.frombuffer(bytearray(data[4 + 4 * nd:]), dtype=torch.uint8).reshape(dims)


def load_fmnist(root, split):
    pre = "train" if split == "train" else "t10k"
    x = read_idx(os.path.join(root, pre + "-images-idx3-ubyte.gz")).float().div(255).unsqueeze(1)
    y = read_idx(os.path.join(root, pre + "-labels-idx1-ubyte.gz")).long()
    return x, y


def per_class(y, n, gen):
    idx = []
    for c in range(int(y.max()) + 1):
        rows = (y == c).nonzero().flatten()
        idx.append(rows[torch.randperm(len(rows), generator=gen)[:n]])
    return torch.cat(idx).sort().values


def augment(x, crop_min, gen):
    """RandomResizedCrop(scale (crop_min, 1), ratio 3/4-4/3), flip 0.5, ColorJitter
    (brightness 0.4, contrast 0.4, random order) with p 0.8, as torchvision does it."""
    n, c, h, w = x.shape
    out = torch.empty_like(x)
    for i in range(n):
        img = x[i]
        area = h * w
        for _ in range(10):
            a = area * float(torch.empty(1).uniform_(crop_min, 1.0, generator=gen))
            r = math.exp(float(torch.empty(1).uniform_(math.log(3 / 4), math.log(4 / 3), generator=gen)))
            cw, ch = int(round(math.sqrt(a * r))), int(round(math.sqrt(a / r)))
            if 0 < cw <= w and 0 < ch <= h:
                top = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
                left = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
                break
        else:
            ch, cw, top, left = h, w, 0, 0
        img = F.interpolate(img[None, :, top:top + ch, left:left + cw], size=(h, w), mode="bilinear",
                            align_corners=False)[0]
        if float(torch.rand(1, generator=gen)) < 0.5:
            img = img.flip(-1)
        if float(torch.rand(1, generator=gen)) < 0.8:
            ops = [0, 1] if float(torch.rand(1, generator=gen)) < 0.5 else [1, 0]
            for op in ops:
                f = float(torch.empty(1).uniform_(0.6, 1.4, generator=gen))
                if op == 0:
                    img = (img * f).clamp(0, 1)
                else:
                    img = (f * img + (1 - f) * img.mean()).clamp(0, 1)
        out[i] = img
    return out


@torch.no_grad()
def features(enc, x, mean, std, batch=512):
    enc.eval()
    out = torch.cat([enc((x[i:i + batch] - mean) / std) for i in range(0, len(x), batch)])
    enc.train()
    return out


@torch.no_grad()
def knn_top1(fb, yb, fq, yq, k=200, t=0.1, classes=10):
    fb, fq = F.normalize(fb, dim=1), F.normalize(fq, dim=1)
    sim = fq @ fb.t()
    w, i = sim.topk(min(k, len(fb)), dim=1)
    votes = torch.zeros(len(fq), classes).scatter_add_(1, yb[i], (w / t).exp())
    return float((votes.argmax(1) == yq).float().mean())


def train(a):
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)
    xtr, ytr = load_fmnist(a.data, "train")
    xte, yte = load_fmnist(a.data, "test")
    mean, std = xtr.mean(), xtr.std()
    sel = per_class(ytr, a.per_class, gen) if a.per_class > 0 else torch.arange(len(ytr))
    x, y = xtr[sel], ytr[sel]
    bank = per_class(y, min(a.knn_bank, a.per_class or 6000), gen)
    queries = per_class(yte, a.knn_queries, gen)
    enc = tvr.build("resnet18", 1, a.width)
    h, D = enc.features, a.proj_dim
    g = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, D))
    r = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, D))
    params = [(n, p) for m in (enc, g, r) for n, p in m.named_parameters()]
    excl = [p for n, p in params if p.ndim == 1]  # biases and BN weights/biases
    rest = [p for n, p in params if p.ndim > 1]
    opt = LARS([{"params": rest}, {"params": excl, "exclude": True}], lr=a.lr)
    steps_per_epoch = len(x) // a.batch
    total, warm = steps_per_epoch * a.epochs, steps_per_epoch * a.warmup_epochs
    out = open(a.out, "w") if a.out else sys.stdout

    def log(d):
        out.write(json.dumps(d) + "\n")
        out.flush()

    def monitor(epoch, step):
        top1 = knn_top1(features(enc, x[bank], mean, std), y[bank], features(enc, xte[queries], mean, std),
                        yte[queries])
        log({"kind": "knn", "epochs_done": epoch, "step": step, "top1": round(top1, 4)})

    step = 0
    monitor(0, 0)
    t0 = time.time()
    for epoch in range(a.epochs):
        perm = torch.randperm(len(x), generator=gen)
        for b in range(steps_per_epoch):
            idx = perm[b * a.batch:(b + 1) * a.batch]
            v1 = (augment(x[idx], a.crop_min, gen) - mean) / std
            v2 = (augment(x[idx], a.crop_min, gen) - mean) / std
            lr = a.lr * step / warm if step < warm else \
                a.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
            for grp in opt.param_groups:
                grp["lr"] = lr
            opt.zero_grad(set_to_none=True)
            hh = torch.cat([enc(v1), enc(v2)], 0)  # per-view batch-norm statistics
            loss = nac_loss(g(hh) / math.sqrt(D), r(hh) / math.sqrt(D), a.p, gen)
            loss.backward()
            opt.step()
            step += 1
            if step % a.log_every == 0:
                log({"kind": "train", "epoch": epoch, "step": step, "loss": round(float(loss), 6),
                     "lr": lr})
        monitor(epoch + 1, step)
    log({"kind": "done", "seconds": round(time.time() - t0, 1)})


def compare(ours, theirs):
    """Per epoch: the mean train loss and the kNN top-1 of both runs, side by side."""
    def curves(path):
        loss, knn = {}, {}
        for line in open(path):
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if d.get("kind") == "train":
                loss.setdefault(d["epoch"], []).append(d["loss"])
            elif d.get("kind") == "knn":
                knn[d["epochs_done"]] = d["top1"]
        return {e: sum(v) / len(v) for e, v in loss.items()}, knn
    la, ka = curves(ours)
    lb, kb = curves(theirs)
    print("epoch  loss nacvae  loss pytorch  kNN nacvae  kNN pytorch")
    for e in sorted(set(ka) | set(kb)):
        fa, fb = la.get(e - 1), lb.get(e - 1)
        print("%5d  %11s  %12s  %10s  %11s" % (
            e, "%.4f" % fa if fa is not None else "-", "%.4f" % fb if fb is not None else "-",
            "%.4f" % ka[e] if e in ka else "-", "%.4f" % kb[e] if e in kb else "-"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--per-class", type=int, default=500)
    ap.add_argument("--width", type=float, default=0.125)
    ap.add_argument("--proj-dim", type=int, default=128)
    ap.add_argument("--p", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=1.0)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--warmup-epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--crop-min", type=float, default=0.2)
    ap.add_argument("--knn-bank", type=int, default=500)
    ap.add_argument("--knn-queries", type=int, default=100)
    ap.add_argument("--log-every", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--compare", nargs=2, metavar=("NACVAE_METRICS", "MIRROR_METRICS"))
    a = ap.parse_args()
    if a.compare:
        compare(*a.compare)
    else:
        train(a)


if __name__ == "__main__":
    main()
