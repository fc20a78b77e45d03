#!/usr/bin/env python3
"""Manual cross-check of libelle's AutoAttack against a PyTorch AutoAttack.

Not registered in meson (it needs a network-free but non-Debian package and
takes minutes): run it by hand.

The Python reference (fra31/auto-attack) is not on PyPI; torchattacks 3.5.1
is, and its APGD / APGDT / FAB / Square are ports of the reference code.
torchattacks' own ``AutoAttack`` wrapper is NOT the reference pipeline (it
leaves APGD/FAB at 10 steps, Square's schedule rescaled, and runs every
attack on the whole input through MultiAttack), so this script drives the
four attacks itself, as the reference's ``run_standard_evaluation`` does
(spec/autoattack.md section 2):

  clean pass in chunks of bs -> robust flags; then for each attack in
  ['apgd-ce', 'apgd-t', 'fab-t', 'square']: the still-robust indices in
  increasing order, split into chunks of bs; per chunk the attack's seed
  is set (torch.manual_seed(seed) is called once inside perturb), the chunk
  is attacked, and a fresh forward pass on the returned images decides
  which points lose their flag.

Attack settings (reference 'standard', L-inf):
  APGD   loss ce,  steps 100, n_restarts 1, rho .75, eot_iter 1
  APGDT  steps 100, n_restarts 1, rho .75, n_classes 10 (9 target classes)
  FAB    multi_targeted (FAB-T), steps 100, n_restarts 1, n_classes 10,
         alpha_max .1, eta 1.05, beta .9
  Square n_queries 5000, p_init .8, n_restarts 1, loss margin,
         resc_schedule False

The model is libelle's small_cnn read from a safetensors file into the
SmallCNN of tests/crosscheck/torch_models.py (same parameter names, loaded
with strict=True), in eval mode. The images are the first N Fashion-MNIST
test images (t10k, file order) from Debian's dataset-fashion-mnist package,
bytes / 255 in float32, as libelle's eval reads them.

Setup (torch from Debian's python3-torch; scipy only because torchattacks
imports it at package import; pin it to one built for Debian's numpy 1.x):
    /usr/bin/python3 -m venv --system-site-packages /tmp/aavenv
    /tmp/aavenv/bin/pip install --no-deps torchattacks==3.5.1 'scipy==1.11.4'

Usage:
    /tmp/aavenv/bin/python tests/crosscheck/aa_crosscheck.py \\
        --weights out/demo/elle-a/model.safetensors --n 1000 --eps 0.2 \\
        --seed 0 --bs 250 [--threads 2] [--json flags.json] [--start-dump F]

and compare with
    build/tools/elle/elle eval --weights out/demo/elle-a/model.safetensors \\
        --eps 0.2 --n 1000 --bs 250 --seed 0 --attack autoattack

--json writes the per-sample robust flags after each stage (and the clean
predictions); --start-dump writes, as raw float32, torch.rand of the first
APGD-CE chunk's shape for the seed (the random-start draws) and the start
points computed both as the reference does, x + eps * (t / (max|t| + 1e-12)),
and as torchattacks does, x + (eps * t) / max|t|, for a bit-level comparison
with libelle's MT19937 and elle__apgd_random_start.
"""
import argparse
import gzip
import json
import os
import struct
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_models import SmallCNN, st_read  # noqa: E402

DATA_DIR = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    op = gzip.open if path.endswith(".gz") else open
    with op(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find(data_dir, stem):
    for suffix in ("", ".gz"):
        p = os.path.join(data_dir, stem + suffix)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(os.path.join(data_dir, stem))


def load_test(data_dir, n):
    img = read_idx(find(data_dir, "t10k-images-idx3-ubyte"))[:n]
    lab = read_idx(find(data_dir, "t10k-labels-idx1-ubyte"))[:n]
    # float32 division, as libelle's u8_to_float table ((float)v / 255.0f)
    x = torch.from_numpy(img.astype(np.float32)).unsqueeze(1) / 255.0
    y = torch.from_numpy(lab.astype(np.int64))
    return x.contiguous(), y


def load_model(path, **kw):
    model = SmallCNN(**kw)
    sd = st_read(path)
    model.load_state_dict(sd, strict=True)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@torch.no_grad()
def predict(model, x, bs):
    out = []
    for i in range(0, x.shape[0], bs):
        out.append(model(x[i:i + bs]).max(1)[1])
    return torch.cat(out)


def make_attacks(model, eps, seed):
    import torchattacks as ta
    atks = {
        "apgd-ce": ta.APGD(model, norm="Linf", eps=eps, steps=100, n_restarts=1, seed=seed,
                           loss="ce", eot_iter=1, rho=.75),
        "apgd-t": ta.APGDT(model, norm="Linf", eps=eps, steps=100, n_restarts=1, seed=seed,
                           eot_iter=1, rho=.75, n_classes=10),
        "fab-t": ta.FAB(model, norm="Linf", eps=eps, steps=100, n_restarts=1, alpha_max=0.1,
                        eta=1.05, beta=0.9, seed=seed, multi_targeted=True, n_classes=10),
        "square": ta.Square(model, norm="Linf", eps=eps, n_queries=5000, n_restarts=1,
                            p_init=.8, loss="margin", resc_schedule=False, seed=seed),
    }
    return atks


def dump_start(path, x0, eps, seed):
    """torch.rand draws of the first APGD-CE chunk and both start formulas."""
    torch.manual_seed(seed)
    u = torch.rand(x0.shape)
    t = 2 * u - 1
    tmax = t.reshape([t.shape[0], -1]).abs().max(dim=1)[0].reshape([-1, 1, 1, 1])
    ref = (x0 + eps * torch.ones_like(x0) * (t / (tmax + 1e-12))).clamp(0., 1.)
    tat = (x0 + eps * torch.ones([x0.shape[0], 1, 1, 1]) * t / tmax).clamp(0., 1.)
    with open(path, "wb") as f:
        for a in (u, ref, tat):
            f.write(a.contiguous().numpy().astype(np.float32).tobytes())
    ndiff = int((ref != tat).sum())
    print(f"start dump: {path} ({tuple(x0.shape)}: rand, reference start, torchattacks start); "
          f"reference vs torchattacks start formula differ in {ndiff} of {ref.numel()} values")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", default=DATA_DIR)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--bs", type=int, default=250)
    ap.add_argument("--eps", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--attacks", default="apgd-ce,apgd-t,fab-t,square")
    ap.add_argument("--json", help="write per-sample robust flags per stage here")
    ap.add_argument("--start-dump", help="write first APGD-CE chunk's draws/start points here")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    model = load_model(args.weights)
    x, y = load_test(args.data, args.n)
    n = x.shape[0]

    t0 = time.time()
    clean_pred = predict(model, x, args.bs)
    robust = clean_pred == y
    print(f"torch {torch.__version__}, n {n}, bs {args.bs}, eps {args.eps}, seed {args.seed}")
    print(f"{'stage':<10} {'robust':>7} {'accuracy':>9} {'time':>8}")
    print(f"{'clean':<10} {int(robust.sum()):>7} {100.0 * robust.float().mean():>8.2f}% "
          f"{time.time() - t0:>7.1f}s")
    stages = {"clean": robust.tolist()}

    atks = make_attacks(model, args.eps, args.seed)
    for name in args.attacks.split(","):
        atk = atks[name]
        t1 = time.time()
        idx = robust.nonzero().flatten()
        if idx.numel() == 0:
            break
        if name == "apgd-ce" and args.start_dump:
            dump_start(args.start_dump, x[idx[:args.bs]], args.eps, args.seed)
        for b in range(0, idx.numel(), args.bs):
            chunk = idx[b:b + args.bs]
            xc, yc = x[chunk].clone(), y[chunk].clone()
            atk.seed = args.seed  # torch.manual_seed(seed) once per (attack, chunk), in perturb
            adv = atk(xc, yc)
            with torch.no_grad():
                pred = model(adv).max(1)[1]
            fooled = pred != yc
            assert float((adv - xc).abs().max()) <= args.eps + 1e-6
            robust[chunk[fooled]] = False
        stages[name] = robust.tolist()
        print(f"{name:<10} {int(robust.sum()):>7} {100.0 * robust.float().mean():>8.2f}% "
              f"{time.time() - t1:>7.1f}s", flush=True)

    print(f"robust accuracy: {int(robust.sum())}/{n} = {100.0 * robust.float().mean():.2f}%")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"n": n, "bs": args.bs, "eps": args.eps, "seed": args.seed,
                       "labels": y.tolist(), "clean_pred": clean_pred.tolist(),
                       "robust": stages}, f)
        print(f"per-sample flags: {args.json}")


if __name__ == "__main__":
    main()
