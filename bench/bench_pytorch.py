#!/usr/bin/python3
"""The PyTorch twin of `nac bench`: one stage of a Table 5 run, timed over several steps,
printed as one JSON line (images/s, peak resident memory, parameters).

  --stage pretrain: one full NAC training step (forward of two views as per-view
    batch-norm passes, the NAC loss, backward, LARS update) of a CIFAR-stem ResNet, with
    the step's FLOPs counted as nac bench counts them;
  --stage vae: one VAE training step of the quick Table 5 row: ResNet body, posterior head
    Linear(F, 2L), reparameterised z, nacvae's decoder (Linear -> pre-activation residual
    blocks with nearest x2 upsampling -> BN-ReLU -> 3x3 convolutions to a mean and a log
    scale), the 256-bin discretised logistic, analytic KL, Adam (head at 10x the rate);
  --stage is: importance-sampled log p(x) with K samples drawn chunk at a time through the
    decoder in evaluation mode, a batch of test images at a time.
--precision bf16 runs the stage's forward under torch.autocast("cpu", torch.bfloat16)
(convolutions and matrix products in bf16, the loss and the optimiser in fp32), the
counterpart of nac bench --precision bf16.

  python3 bench/bench_pytorch.py --arch resnet18 --batch 64 --size 32 --threads 2
  python3 bench/bench_pytorch.py --stage vae --threads 2
  python3 bench/bench_pytorch.py --stage is --threads 2

The vae and is defaults are configs/table5_quick.json's (ResNet-18 at width 1/8 on
28x28x1, latent 32, decoder width 16, batch 128; K 100, chunk 100, 20 images a batch);
"params" must equal nac bench's for the same options (394970 at the defaults).
Uses Debian's python3-torch (1.13, same oneDNN 2.6 as nacvae). Not needed by the tests."""
import argparse, contextlib, json, math, resource, time

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


class Block(nn.Module):
    """nacvae's decoder block: [x2 nearest upsampling] -> BN-ReLU-conv3x3-BN-ReLU-conv3x3
    plus the input (through a 1x1 convolution where the width changes)."""

    def __init__(self, cin, cout, up):
        super().__init__()
        self.up = up
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.proj = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else None

    def forward(self, x):
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        y = self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))
        return y + (x if self.proj is None else self.proj(x))


class Decoder(nn.Module):
    """z (N, L) -> mean and log scale maps (N, C, H, W), as vae/decoder.c."""

    def __init__(self, latent, channels, size, width, blocks):
        super().__init__()
        self.s, nup = size, 0
        while self.s % 2 == 0 and self.s // 2 >= 4:
            self.s //= 2
            nup += 1
        self.c0 = width << nup
        self.fc = nn.Linear(latent, self.c0 * self.s * self.s)
        bl, cin = [], self.c0
        for st in range(nup + 1):
            w = width << (nup - st)
            for j in range(blocks):
                bl.append(Block(cin, w, st > 0 and j == 0))
                cin = w
        self.blocks = nn.Sequential(*bl)
        self.bn_out = nn.BatchNorm2d(cin)
        self.out = nn.Conv2d(cin, channels, 3, 1, 1)
        self.out_scale = nn.Conv2d(cin, channels, 3, 1, 1)

    def forward(self, z):
        x = self.fc(z).view(-1, self.c0, self.s, self.s)
        a = F.relu(self.bn_out(self.blocks(x)))
        return self.out(a), self.out_scale(a)


HALF_BIN = 1.0 / 255.0


def logistic_logp(x, m, ls):
    """log p(x | m, ls) per image of the 256-bin discretised logistic on [-1, 1], written as
    vae/likelihood.c writes it: x in {0, 1/255, ..., 1}; log scale clamped at -7."""
    xs = 2 * x - 1
    u = torch.exp(-torch.clamp(ls, min=-7.0))
    t = xs - m
    a, b = u * (t + HALF_BIN), u * (t - HALF_BIN)
    d = 2 * HALF_BIN * u
    nlo, nhi = (x > 0).float(), (x < 1).float()
    mid = nlo * nhi
    lp = nhi * (a - F.softplus(a)) - nlo * F.softplus(b) + \
        mid * (torch.log(torch.tanh(0.5 * d)) + F.softplus(-d))
    return lp.flatten(1).sum(1)


class VAE(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.body = tvr.build(a.arch, a.channels, a.width)
        self.latent = a.latent
        self.head = nn.Linear(self.body.features, 2 * a.latent)
        self.dec = Decoder(a.latent, a.channels, a.size, a.dec_width, a.dec_blocks)

    def encode(self, x):
        q = self.head(self.body(x))
        return q[:, :self.latent], q[:, self.latent:]

    def loss(self, x, raw):
        mu, lv = self.encode(x)
        z = mu + torch.exp(0.5 * lv) * torch.randn_like(mu)
        m, ls = self.dec(z)
        rec = -logistic_logp(raw, m.float(), ls.float())
        kl = 0.5 * (mu.float() ** 2 + torch.exp(lv.float()) - 1 - lv.float()).sum(1)
        return (rec + kl).mean()

    @torch.no_grad()
    def log_px(self, x, raw, k, chunk):
        """Importance-sampled log p(x) per image, K samples chunk at a time."""
        mu, lv = self.encode(x)
        mu, lv = mu.float(), lv.float()
        sd, b, L = torch.exp(0.5 * lv), x.shape[0], self.latent
        rep = raw.repeat(chunk, 1, 1, 1)
        logw = []
        c2 = L * math.log(2 * math.pi)
        for _ in range(k // chunk):
            eps = torch.randn(chunk, b, L, device=mu.device)
            z = (mu + sd * eps).reshape(chunk * b, L)
            m, ls = self.dec(z)
            lpx = logistic_logp(rep, m.float(), ls.float()).view(chunk, b)
            lpz = -0.5 * ((z.view(chunk, b, L) ** 2).sum(2) + c2)
            lqz = -0.5 * ((eps ** 2 + lv).sum(2) + c2)
            logw.append(lpx + lpz - lqz)
        return torch.logsumexp(torch.cat(logw, 0), 0) - math.log(k)


def autocast(a):
    if a.precision == "bf16":
        return torch.autocast(a.device.split(":")[0], dtype=torch.bfloat16)
    return contextlib.nullcontext()


def images(a, n):
    """Random pixels k/255 and the normalised input the body reads, as nac bench's."""
    raw = (torch.randint(0, 256, (n, a.channels, a.size, a.size)).float() / 255).to(a.device)
    return (raw - 0.5) / 0.25, raw


def vae_stage(a):
    torch.manual_seed(0)
    model = VAE(a).to(a.device)
    head = list(model.head.parameters())
    rest = [p for n, p in model.named_parameters() if not n.startswith("head.")]
    opt = torch.optim.Adam([{"params": rest}, {"params": head, "lr": a.lr * a.head_lr_mult}],
                           lr=a.lr)
    x, raw = images(a, a.batch)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(a):
            loss = model.loss(x, raw)
        loss.backward()
        opt.step()
        return float(loss)

    if a.stage == "is":
        model.eval()

        def step():  # noqa: F811
            with autocast(a):
                return float(model.log_px(x, raw, a.k, a.chunk).mean())
    return model, step, a.batch


def pretrain_stage(a):
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
        with autocast(a):
            h1, h2 = enc(x1), enc(x2)  # per-view BN statistics, as the official code
            hh = torch.cat([h1, h2], 0)
            o = g(hh) / math.sqrt(D)
            l = r(hh) / math.sqrt(D)
        loss = nac_loss(o.float(), l.float(), 0.1, gen)
        loss.backward()
        opt.step()
        return float(loss)

    a.flops = lambda: step_flops(enc, g, r, x1, x2, D)
    return nn.ModuleList([enc, g, r]), step, 2 * a.batch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage", choices=["pretrain", "vae", "is"], default="pretrain")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--batch", type=int, default=None,
                    help="pretrain: images per view (64); vae: 128; is: images a batch (20)")
    ap.add_argument("--size", type=int, default=None, help="pretrain 32, vae/is 28")
    ap.add_argument("--channels", type=int, default=None, help="pretrain 3, vae/is 1")
    ap.add_argument("--width", type=float, default=None, help="pretrain 1, vae/is 0.125")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=None, help="5 (is: 3)")
    ap.add_argument("--warmup", type=int, default=None, help="2 (is: 1)")
    ap.add_argument("--latent", type=int, default=32)
    ap.add_argument("--dec-width", type=int, default=16)
    ap.add_argument("--dec-blocks", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--head-lr-mult", type=float, default=10.0)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--chunk", type=int, default=None, help="K")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (scripts/gpu-check.sh)")
    a = ap.parse_args()
    pre = a.stage == "pretrain"
    for key, p, v in (("batch", 64, 128 if a.stage == "vae" else 20), ("size", 32, 28),
                      ("channels", 3, 1), ("width", 1.0, 0.125),
                      ("steps", 5, 3 if a.stage == "is" else 5),
                      ("warmup", 2, 1 if a.stage == "is" else 2)):
        if getattr(a, key) is None:
            setattr(a, key, p if pre else v)
    a.chunk = a.chunk or a.k
    if a.k % a.chunk:
        ap.error("--chunk must divide --k")
    torch.set_num_threads(a.threads)
    model, step, per_step = (pretrain_stage if pre else vae_stage)(a)

    for _ in range(a.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    dt = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    out = {"impl": "pytorch " + torch.__version__, "stage": a.stage, "precision": a.precision,
           "arch": a.arch, "width": a.width, "batch": a.batch, "size": a.size,
           "channels": a.channels, "threads": a.threads, "params": params, "device": a.device}
    if a.device.startswith("cuda"):
        out["device_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    if pre:
        out.update({"batch_per_view": a.batch, "images_per_step": per_step})
    else:
        out.update({"latent": a.latent, "dec_width": a.dec_width, "dec_blocks": a.dec_blocks,
                    "likelihood": "logistic"})
    if a.stage == "is":
        out.update({"k": a.k, "chunk": a.chunk})
    out.update({"images_per_s": round(per_step * a.steps / dt, 2), "step_s": round(dt / a.steps, 4),
                "peak_rss_mb": round(peak_kb / 1024, 1)})
    if pre:
        gflop = a.flops() / 1e9
        out.update({"gflop_per_step": round(gflop, 2), "gflop_per_s": round(gflop * a.steps / dt, 1)})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
