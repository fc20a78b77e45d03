#!/usr/bin/python3
"""PyTorch side of `make bench`: PreActResNet-18 step times to compare with elle-bench.

Three commands:

  torch_bench.py [run] [--json PATH] [--batch 128] [--threads 2] [--width 64]
                 [--iters 5] [--warmup 2] [--only fwd|train|fgsm|elle|ellea|gradalign]
                 [--quick] [--profile] [--device cpu|cuda] [--cudnn-benchmark 0|1]
      Times, in training mode, on one random batch of 32x32x3 images:
        fwd    forward of the batch (no autograd graph is kept);
        train  training step: zero grad, forward, mean cross-entropy, backward,
               SGD step (lr 0.01, momentum 0.9, weight decay 5e-4);
        fgsm   FGSM-AT step: delta = eps*sign(grad_x CE_mean(f(x))) (eps = 8/255,
               model in train mode, weights' gradients not computed), x_adv = x + delta
               (no clamp, as the reference CIFAR code), then a training step on x_adv;
        elle   the reference ELLE step (lambda 1000);
        ellea  the reference ELLE-A step: the ELLE step weighted by the adaptive lambda
               (lambda_max 4000, started at lambda_max as elle-bench-methods times it),
               then the rule on lin_err.item() against the history (population std),
               before the SGD step; timed with --device cuda or --only ellea;
        gradalign  the ELLE repo's GradAlign step: the FGSM point, CE(x_adv) +
               0.2 * mean(1 - cos(g1, g2)) with g1 = grad_x CE_mean at x (detached),
               g2 at x + U[-eps, eps] with create_graph=True (double backpropagation),
               F.cosine_similarity(eps=1e-8), then the SGD step;
      and, to split those, the input-gradient pass, forward+backward and the SGD step
      alone. Every figure is the median of --iters timed iterations (time.perf_counter)
      after --warmup untimed ones. Keys are prefixed torch_ (torch_fgsm_step_ms, ...).
      --only NAME times that workload alone (for a meaningful peak RSS: the key
      torch_<NAME>_peak_rss_mib, from getrusage ru_maxrss). --profile prints
      torch.profiler's per-operator table of one FGSM-AT step. Exit status 77 when
      this interpreter cannot import torch (Debian: apt-get install python3-torch,
      for /usr/bin/python3).

      --device cuda runs everything on GPU 0 (exit status 77 when torch.cuda is not
      available): torch.cuda.synchronize() before every clock read, so a row is the
      GPU's time and not the time to queue it; NCHW (no channels-last); fp32;
      torch.backends.cudnn.benchmark from --cudnn-benchmark (default 1, PyTorch's
      usual setting for fixed shapes; its algorithm search happens in the warm-up).
      Extra keys: torch_device_cuda, torch_cudnn_benchmark, torch_cuda_version,
      torch_cuda_device_name (a string), and with --only torch_<NAME>_peak_gpu_mib
      (torch.cuda.max_memory_allocated).
  torch_bench.py merge --out PATH --elle E.json [--elle-rss R.json]
                 [--torch T.json] [--torch-rss TR.json] [--cuda C.json]
      Merges elle-bench's and this script's JSON objects into one, adds the ratios
      libelle/PyTorch (prn18_fwd_vs_torch, train_step_vs_torch, fgsm_vs_torch, ...),
      torch_available (0 without --torch) and cuda_available (0 without --cuda:
      scripts/bench_cuda.sh's GPU rows), and prints the comparison table.
      Needs only the standard library.

  torch_bench.py cuda-rows --out PATH --methods M.json [--torch T.json] [--device-name NAME]
      scripts/bench_cuda.sh's flat GPU keys from elle-bench-methods --backend cuda and
      torch_bench.py --device cuda: cuda_{fgsm,elle,ellea,gradalign}_step_ms (libelle's
      trainer step), torch_cuda_*_step_ms, the ratios cuda_*_vs_torch, cuda_device_name,
      torch_cuda_available and the settings of both runs. Standard library only.

Every JSON value is a number except the keys ending in _name (device names).

Run it under /usr/bin/python3 with GLIBC_TUNABLES=glibc.malloc.mmap_max=0 (or
tcmalloc preloaded): with glibc's default every large tensor is a fresh mmap and
every free an munmap, so each step pays page faults that libelle, which plans
its buffers once, does not. scripts/bench.sh does this.

The model is the ELLE PreActResNet-18 (the class is copied from
tests/crosscheck/torch_models.py): stem conv3x3 (no BN/ReLU), four stages of two
PreActBlocks whose projection shortcut reads relu(bn1(x)), then relu(bn),
avg_pool 4, linear; PyTorch's default initialisation. The images and labels are
the ones elle-bench uses (the same xorshift generator, uniform [0, 1) images).
"""
import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

EPS = 8.0 / 255.0
ELLE_LAMBDA = 1000.0
ELLEA_LAMBDA_MAX, ELLEA_DECAY, ELLEA_SENSITIVITY = 4000.0, 0.99, 2.0
GRADALIGN_LAMBDA = 0.2  # 0.02 * 10^(8/8), the reference rule at eps = 8/255
LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 5e-4
KiB_PER_MiB = 1024.0


# ---- shared helpers (no torch) ------------------------------------------------------

def loadavg():
    try:
        return os.getloadavg()
    except OSError:  # pragma: no cover
        return None


def peak_rss_mib():
    # Linux: ru_maxrss in KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KiB_PER_MiB


def cpu_snap():
    """(all CPUs' busy seconds from /proc/stat or None, own user+sys seconds, wall seconds)."""
    busy = None
    try:
        with open("/proc/stat") as f:
            v = [int(t) for t in f.readline().split()[1:9]]
        # user nice system [idle iowait] irq softirq steal
        busy = (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return busy, ru.ru_utime + ru.ru_stime, time.perf_counter()


def other_cpu_pct(a, b):
    """Other processes' share of the machine's CPU time between two cpu_snap()s, in %
    (None: unknown). What makes a timing on a shared machine meaningless."""
    cpus = os.cpu_count() or 0
    wall = b[2] - a[2]
    if a[0] is None or b[0] is None or wall <= 0 or cpus < 1:
        return None
    other = (b[0] - a[0]) - (b[1] - a[1])
    return max(0.0, 100.0 * other / (wall * cpus))


def check_flat_numbers(doc, where):
    """A flat object of finite numbers; only the *_name keys (device names) hold strings."""
    if not isinstance(doc, dict) or not doc:
        raise ValueError(f"{where}: not a non-empty JSON object")
    for k, v in doc.items():
        if k.endswith("_name") and isinstance(v, str):
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{where}: '{k}' is not a finite number")


def write_json(doc, path):
    """Write atomically (temporary + rename), then read back and check: flat numbers."""
    check_flat_numbers(doc, "result")
    text = json.dumps(doc, indent=2) + "\n"
    if path in (None, "-"):
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    with open(path) as f:
        check_flat_numbers(json.load(f), path)


def fill_batch(count, n, k):
    """elle-bench's fill_batch: xorshift64 (13, 7, 17), images then labels."""
    s = 0x9E3779B97F4A7C15
    mask = (1 << 64) - 1
    x = [0.0] * count
    scale = 1.0 / 16777216.0
    for i in range(count):
        s ^= (s << 13) & mask
        s ^= s >> 7
        s ^= (s << 17) & mask
        x[i] = (s >> 40) * scale
    labels = [0] * n
    for i in range(n):
        s ^= (s << 13) & mask
        s ^= s >> 7
        s ^= (s << 17) & mask
        labels[i] = s % k
    return x, labels


# ---- run: the PyTorch measurements ---------------------------------------------------

def build_model_classes(nn, F):
    class PreActBlock(nn.Module):
        def __init__(self, in_planes, planes, stride=1):
            super().__init__()
            self.bn1 = nn.BatchNorm2d(in_planes)
            self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            if stride != 1 or in_planes != planes:
                self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False))

        def forward(self, x):
            out = F.relu(self.bn1(x))
            shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
            out = self.conv1(out)
            out = self.conv2(F.relu(self.bn2(out)))
            return out + shortcut

    class PreActResNet18(nn.Module):
        def __init__(self, width=64, classes=10):
            super().__init__()
            self.in_planes = width
            self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
            self.layer1 = self._make(width, 1)
            self.layer2 = self._make(width * 2, 2)
            self.layer3 = self._make(width * 4, 2)
            self.layer4 = self._make(width * 8, 2)
            self.bn = nn.BatchNorm2d(width * 8)
            self.linear = nn.Linear(width * 8, classes)

        def _make(self, planes, stride):
            layers = []
            for s in [stride, 1]:
                layers.append(PreActBlock(self.in_planes, planes, s))
                self.in_planes = planes
            return nn.Sequential(*layers)

        def forward(self, x):
            out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
            out = F.relu(self.bn(out))
            out = F.avg_pool2d(out, 4)
            return self.linear(out.view(out.size(0), -1))

    return PreActResNet18


def version_number(v):
    """'1.13.1+cpu' -> 1.1301 (major + minor/100 + patch/10000)."""
    parts = []
    for p in v.split("+")[0].split(".")[:3]:
        digits = ""
        for ch in p:
            if not ch.isdigit():
                break
            digits += ch
        parts.append(int(digits or 0))
    while len(parts) < 3:
        parts.append(0)
    return parts[0] + parts[1] / 100.0 + parts[2] / 10000.0


def run_main(argv):
    ap = argparse.ArgumentParser(prog="torch_bench.py", description=__doc__.split("\n")[0])
    ap.add_argument("--json", metavar="PATH", help="write the JSON object here (default stdout)")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--only", choices=["fwd", "train", "fgsm", "elle", "ellea", "gradalign"])
    ap.add_argument("--quick", action="store_true",
                    help="smoke-test sizes: batch 4, width 8, 1 iteration, 1 warm-up")
    ap.add_argument("--profile", action="store_true",
                    help="print torch.profiler's operator table of one FGSM-AT step")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="where to run (cuda: GPU 0, synchronised before every clock read)")
    ap.add_argument("--cudnn-benchmark", type=int, choices=[0, 1], default=1,
                    help="torch.backends.cudnn.benchmark with --device cuda (default 1)")
    a = ap.parse_args(argv)
    batch, width, iters, warmup = (4, 8, 1, 1) if a.quick else (128, 64, 5, 2)
    batch = a.batch if a.batch else batch
    width = a.width if a.width else width
    iters = a.iters if a.iters else iters
    warmup = a.warmup if a.warmup is not None else warmup
    if min(batch, width, iters, a.threads) < 1 or warmup < 0:
        ap.error("--batch, --width, --iters, --threads must be >= 1, --warmup >= 0")

    rss_start = peak_rss_mib()
    try:
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
    except ImportError as e:
        print(f"torch_bench.py: skip: {e} (install python3-torch for /usr/bin/python3: "
              "scripts/setup-bench.sh)", file=sys.stderr)
        return 77
    cuda = a.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print(f"torch_bench.py: skip: torch {torch.__version__} ({sys.executable}) has no usable "
              "CUDA device (torch.cuda.is_available() is False)", file=sys.stderr)
        return 77
    dev = torch.device("cuda:0" if cuda else "cpu")
    # A GPU queues work and returns: the clock is read only once the queue is empty.
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    out = sys.stderr if a.json in (None, "-") else sys.stdout
    res = {}
    load = loadavg()
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    tun = os.environ.get("GLIBC_TUNABLES", "")
    mmap_off = "glibc.malloc.mmap_max=0" in tun
    tcmalloc = "tcmalloc" in os.environ.get("LD_PRELOAD", "")
    print(f"torch_bench.py, PyTorch {torch.__version__} ({sys.executable}), "
          f"{torch.get_num_threads()} threads, mkldnn {torch.backends.mkldnn.is_available()}",
          file=out)
    if cuda:
        torch.backends.cudnn.benchmark = bool(a.cudnn_benchmark)
        name = torch.cuda.get_device_name(dev)
        print(f"device    {name}, CUDA {torch.version.cuda}, cuDNN "
              f"{torch.backends.cudnn.version()}, cudnn.benchmark "
              f"{torch.backends.cudnn.benchmark}, NCHW fp32", file=out)
        res["torch_device_cuda"] = 1
        res["torch_cudnn_benchmark"] = int(torch.backends.cudnn.benchmark)
        res["torch_cuda_version"] = version_number(torch.version.cuda or "0")
        res["torch_cudnn_version"] = torch.backends.cudnn.version() or 0
        res["torch_cuda_device_name"] = name
    else:
        res["torch_device_cuda"] = 0
    if not (mmap_off or tcmalloc) and not cuda:
        print("torch_bench.py: warning: neither GLIBC_TUNABLES=glibc.malloc.mmap_max=0 nor "
              "tcmalloc: PyTorch pays an mmap/munmap per large tensor", file=out)
    if load:
        print(f"load      {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min) at start",
              file=out)
        res["torch_loadavg_1min_start"] = load[0]
    res["torch_version"] = version_number(torch.__version__)
    res["torch_threads"] = torch.get_num_threads()
    res["torch_batch"] = batch
    res["torch_width"] = width
    res["torch_iters"] = iters
    res["torch_warmup"] = warmup
    res["torch_quick"] = int(a.quick)
    res["torch_glibc_mmap_max0"] = int(mmap_off)
    res["torch_tcmalloc"] = int(tcmalloc)
    res["torch_mkldnn"] = int(torch.backends.mkldnn.is_available())

    classes = 10
    xs, ys = fill_batch(batch * 3 * 32 * 32, batch, classes)
    x = torch.tensor(xs, dtype=torch.float32).view(batch, 3, 32, 32).to(dev)
    y = torch.tensor(ys, dtype=torch.int64).to(dev)
    del xs, ys
    model = build_model_classes(nn, F)(width=width, classes=classes).to(dev)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM,
                          weight_decay=WEIGHT_DECAY)
    res["torch_prn18_params"] = sum(p.numel() for p in model.parameters())
    rss_model = peak_rss_mib()

    def fwd():
        with torch.no_grad():
            model(x)

    def train_step(inp):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(inp), y).backward()
        opt.step()

    def input_grad():
        xg = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(xg), y)
        # only d loss / d x: autograd skips the weights' gradients
        return torch.autograd.grad(loss, xg)[0]

    def fgsm_step():
        g = input_grad()
        with torch.no_grad():
            x_adv = x + EPS * g.sign()
        train_step(x_adv)

    def elle_losses():
        # the reference ELLE step (spec/reference-implementations.md §2.1):
        # FGSM point, then CE(x_adv) and E_lin with x_a, x_b = x + U[-eps, eps]
        # drawn over x tiled twice, one alpha per sample, one forward of [x_a; x_b; x_c]
        g = input_grad()
        with torch.no_grad():
            x_adv = x + EPS * g.sign()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x_adv), y)
        bs = x.shape[0]
        x_ab = x.repeat(2, 1, 1, 1)
        x_ab = x_ab + EPS * (2.0 * torch.rand_like(x_ab) - 1.0)
        alpha = torch.rand(bs, 1, 1, 1, device=x.device)
        x_c = (1.0 - alpha) * x_ab[:bs] + alpha * x_ab[bs:]
        alpha = alpha.squeeze()
        losses = F.cross_entropy(model(torch.cat((x_ab, x_c), dim=0)), y.repeat(3),
                                 reduction="none")
        e_lin = F.mse_loss(losses[2 * bs:],
                           (1.0 - alpha) * losses[:bs] + alpha * losses[bs:2 * bs])
        return loss, e_lin

    def elle_step():
        loss, e_lin = elle_losses()
        (loss + ELLE_LAMBDA * e_lin).backward()
        opt.step()

    ellea = {"lambda": ELLEA_LAMBDA_MAX, "history": []}

    def ellea_step():
        # the reference ELLE-A step (spec/reference-implementations.md §1.5): the ELLE
        # loss with the current lambda, backward, then the rule on lin_err.item() (a
        # device-to-host read, as the reference) before the SGD step
        loss, e_lin = elle_losses()
        (loss + ellea["lambda"] * e_lin).backward()
        e_t, hist = e_lin.item(), ellea["history"]
        detected = False
        if len(hist) > 2:
            mean = math.fsum(hist) / len(hist)
            std = math.sqrt(math.fsum((v - mean) ** 2 for v in hist) / len(hist))
            detected = e_t > mean + ELLEA_SENSITIVITY * std
        ellea["lambda"] = ELLEA_LAMBDA_MAX if detected else ellea["lambda"] * ELLEA_DECAY
        hist.append(e_t)
        opt.step()

    def gradalign_step():
        # the ELLE repo's GradAlign (spec/reference-implementations.md §2.5): the
        # FGSM point, then CE(x_adv) + lambda * mean(1 - cos(g1, g2)), g1 at x
        # recomputed and detached, g2 at x + U[-eps, eps] differentiated
        g = input_grad()
        with torch.no_grad():
            x_adv = x + EPS * g.sign()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x_adv), y)
        g1 = input_grad().detach()
        x2 = (x + EPS * (2.0 * torch.rand_like(x) - 1.0)).requires_grad_(True)
        g2 = torch.autograd.grad(F.cross_entropy(model(x2), y), x2, create_graph=True)[0]
        cos = F.cosine_similarity(g1.flatten(1), g2.flatten(1), dim=1, eps=1e-8)
        (loss + GRADALIGN_LAMBDA * (1.0 - cos).mean()).backward()
        opt.step()

    def fwd_bwd():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    def sgd_only():
        opt.step()

    rows = [  # key, label, function, part of --only
        ("prn18_fwd", "forward", fwd, "fwd"),
        ("train_step", "training step (fwd + CE + bwd + SGD)", lambda: train_step(x), "train"),
        ("fgsm_step", "FGSM-AT step (input grad, x+eps*sign, train step)", fgsm_step, "fgsm"),
        ("elle_step", "ELLE step (FGSM + lambda 1000 * E_lin, 3B forward)", elle_step, "elle"),
        ("ellea_step", "ELLE-A step (ELLE with adaptive lambda, lambda_max 4000)",
         ellea_step, "ellea"),
        ("gradalign_step", "GradAlign step (FGSM + 0.2 * (1 - cos), double backprop)",
         gradalign_step, "gradalign"),
        ("prn18_input_grad", "  part: input gradient (fwd + bwd, no weight grads)",
         input_grad, None),
        ("prn18_fwd_bwd", "  part: fwd + bwd with weight grads", fwd_bwd, None),
        ("sgd_step", "  part: SGD step alone", sgd_only, None),
    ]
    if a.only:
        rows = [r for r in rows if r[3] == a.only]
    elif not cuda:
        # the CPU comparison has no libelle ELLE-A row of its own: keep its run short
        rows = [r for r in rows if r[3] != "ellea"]
    print(f"PreActResNet-18 (width {width}, 3x32x32, {classes} classes, "
          f"{res['torch_prn18_params']} parameters), batch {batch}, training mode, "
          f"{a.device}, {iters} timed iterations after {warmup} warm-up", file=out)
    print(f"  {'':52s} {'median ms':>10s} {'min ms':>10s} {'other CPU':>10s}", file=out)
    for key, label, fn, _ in rows:
        times = []
        sync()
        c0 = cpu_snap()
        for it in range(warmup + iters):
            t0 = time.perf_counter()
            fn()
            sync()
            dt = (time.perf_counter() - t0) * 1e3
            if it >= warmup:
                times.append(dt)
        other = other_cpu_pct(c0, cpu_snap())
        med = statistics.median(times)
        res[f"torch_{key}_ms"] = med
        res[f"torch_{key}_min_ms"] = min(times)
        if other is not None:
            res[f"torch_{key}_other_cpu_pct"] = other
        ocpu = f"{other:9.1f}%" if other is not None else f"{'-':>10s}"
        print(f"  {label:52s} {med:10.2f} {min(times):10.2f} {ocpu}", file=out, flush=True)

    if a.only:
        name = {"fwd": "prn18_fwd", "train": "train_step", "fgsm": "fgsm",
                "elle": "elle", "ellea": "ellea", "gradalign": "gradalign"}[a.only]
        rss = peak_rss_mib()
        res[f"torch_{name}_peak_rss_mib"] = rss
        res["torch_rss_after_import_mib"] = rss_model if rss_model > 0 else rss_start
        print(f"  peak RSS of this process: {rss:.1f} MiB (after import torch and building "
              f"the model: {rss_model:.1f} MiB)", file=out)
        if cuda:
            gpu = torch.cuda.max_memory_allocated(dev) / (KiB_PER_MiB * KiB_PER_MiB)
            res[f"torch_{name}_peak_gpu_mib"] = gpu
            print(f"  peak GPU memory allocated by PyTorch: {gpu:.1f} MiB", file=out)

    if a.profile:
        from torch.profiler import profile, ProfilerActivity
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=acts) as prof:
            fgsm_step()
            sync()
        table = None
        # the GPU column's name changed across PyTorch versions (cuda -> device)
        for sort in (["self_device_time_total", "self_cuda_time_total"] if cuda else []) + [
                "self_cpu_time_total"]:
            try:
                table = prof.key_averages().table(sort_by=sort, row_limit=30)
                break
            except (AttributeError, KeyError, ValueError):
                continue
        print(table, file=out)

    load = loadavg()
    if load:
        print(f"load      {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end", file=out)
        res["torch_loadavg_1min_end"] = load[0]
    write_json(res, a.json)
    return 0


# ---- merge: one JSON object and the comparison table ---------------------------------

COMPARE = [  # libelle key, PyTorch key, ratio key, label
    ("prn18_fwd_ms", "torch_prn18_fwd_ms", "prn18_fwd_vs_torch", "forward"),
    ("train_step_ms", "torch_train_step_ms", "train_step_vs_torch",
     "training step (fwd + CE + bwd + SGD)"),
    ("fgsm_step_ms", "torch_fgsm_step_ms", "fgsm_vs_torch",
     "FGSM-AT step (input grad, x+eps*sign, train step)"),
    ("elle_step_ms", "torch_elle_step_ms", "elle_vs_torch",
     "ELLE step (FGSM + lambda 1000 * E_lin, 3B forward)"),
    # libelle's figure comes from elle-bench-methods (--methods: the trainer's step)
    ("gradalign_step_ms", "torch_gradalign_step_ms", "gradalign_vs_torch",
     "GradAlign step (FGSM + 0.2 * (1 - cos), double backprop)"),
    ("prn18_input_grad_ms", "torch_prn18_input_grad_ms", "prn18_input_grad_vs_torch",
     "  part: input gradient (fwd + bwd, no weight grads)"),
    ("prn18_fwd_bwd_ms", "torch_prn18_fwd_bwd_ms", "prn18_fwd_bwd_vs_torch",
     "  part: fwd + bwd with weight grads"),
    ("sgd_step_ms", "torch_sgd_step_ms", "sgd_step_vs_torch", "  part: SGD step alone"),
]


def load_json(path, what):
    with open(path) as f:
        doc = json.load(f)
    check_flat_numbers(doc, f"{what} ({path})")
    return doc


def merge_main(argv):
    ap = argparse.ArgumentParser(prog="torch_bench.py merge")
    ap.add_argument("--out", required=True)
    ap.add_argument("--elle", required=True, help="elle-bench's JSON (full run)")
    ap.add_argument("--elle-rss", help="elle-bench --only fgsm JSON (peak RSS)")
    ap.add_argument("--torch", help="torch_bench.py's JSON (absent: torch_available 0)")
    ap.add_argument("--torch-rss", help="torch_bench.py --only fgsm JSON (peak RSS)",
                    action="append", default=[])
    ap.add_argument("--methods", help="elle-bench-methods' JSON (step time per method)")
    ap.add_argument("--methods-rss", help="elle-bench-methods --only elle JSON (peak RSS)")
    ap.add_argument("--extra", action="append", default=[],
                    help="any other flat JSON object of figures to include as it is")
    ap.add_argument("--cuda", help="scripts/bench_cuda.sh's JSON (absent: cuda_available 0)")
    a = ap.parse_args(argv)

    doc = dict(load_json(a.elle, "elle-bench"))
    if a.elle_rss:
        for k, v in load_json(a.elle_rss, "elle-bench --only").items():
            # the timings of the short RSS run are not the benchmark's
            if "rss" in k or k == "model_memory_mib":
                doc[k] = v
    for path in a.extra:
        doc.update(load_json(path, "extra figures"))
    if a.methods:
        doc.update(load_json(a.methods, "elle-bench-methods"))
    if a.methods_rss:
        for k, v in load_json(a.methods_rss, "elle-bench-methods --only").items():
            if "rss" in k:
                doc[k] = v
    if a.cuda:
        doc.update(load_json(a.cuda, "bench_cuda.sh"))
    doc["cuda_available"] = int(bool(a.cuda))
    have_torch = bool(a.torch)
    doc["torch_available"] = int(have_torch)
    if have_torch:
        doc.update(load_json(a.torch, "torch_bench.py"))
        for path in a.torch_rss:
            for k, v in load_json(path, "torch_bench.py --only").items():
                if "rss" in k:
                    doc[k] = v
        for mine, theirs, ratio, _ in COMPARE:
            if doc.get(mine) and doc.get(theirs):
                doc[ratio] = doc[mine] / doc[theirs]
        if doc.get("fgsm_peak_rss_mib") and doc.get("torch_fgsm_peak_rss_mib"):
            doc["fgsm_peak_rss_vs_torch"] = (doc["fgsm_peak_rss_mib"] /
                                             doc["torch_fgsm_peak_rss_mib"])
        if doc.get("elle_peak_rss_mib") and doc.get("torch_elle_peak_rss_mib"):
            doc["elle_peak_rss_vs_torch"] = (doc["elle_peak_rss_mib"] /
                                             doc["torch_elle_peak_rss_mib"])

    def fmt(v, spec="10.2f"):
        return format(v, spec) if isinstance(v, (int, float)) else f"{'-':>10s}"

    print()
    print(f"libelle vs PyTorch: PreActResNet-18, batch {doc.get('batch', '?')}, 32x32x3, "
          f"{doc.get('threads', '?')} threads (PyTorch: {doc.get('torch_threads', '-')}), "
          "training mode, median ms")
    print(f"  {'':52s} {'libelle':>10s} {'PyTorch':>10s} {'ratio':>10s}   "
          "other CPU % (libelle / PyTorch)")
    for mine, theirs, ratio, label in COMPARE:
        if mine not in doc and theirs not in doc:
            continue
        oc = [doc.get(k[:-3] + "_other_cpu_pct") for k in (mine, theirs)]
        octxt = " / ".join(f"{v:.1f}" if v is not None else "-" for v in oc)
        print(f"  {label:52s} {fmt(doc.get(mine))} {fmt(doc.get(theirs))} "
              f"{fmt(doc.get(ratio), '10.3f')}   {octxt if any(v is not None for v in oc) else ''}")
    if "fgsm_peak_rss_mib" in doc or "torch_fgsm_peak_rss_mib" in doc:
        print(f"  {'peak RSS, FGSM-AT loop in its own process (MiB)':52s} "
              f"{fmt(doc.get('fgsm_peak_rss_mib'), '10.1f')} "
              f"{fmt(doc.get('torch_fgsm_peak_rss_mib'), '10.1f')} "
              f"{fmt(doc.get('fgsm_peak_rss_vs_torch'), '10.3f')}")
    if "elle_peak_rss_mib" in doc or "torch_elle_peak_rss_mib" in doc:
        print(f"  {'peak RSS, ELLE loop in its own process (MiB)':52s} "
              f"{fmt(doc.get('elle_peak_rss_mib'), '10.1f')} "
              f"{fmt(doc.get('torch_elle_peak_rss_mib'), '10.1f')} "
              f"{fmt(doc.get('elle_peak_rss_vs_torch'), '10.3f')}")
    for key, goal_v in (("fgsm_vs_torch", 0.80), ("elle_vs_torch", 0.80),
                        ("elle_peak_rss_vs_torch", 0.60)):
        if have_torch and key in doc:
            goal = "met" if doc[key] <= goal_v else "NOT met"
            print(f"  goal {key} <= {goal_v:.2f}: {goal} ({doc[key]:.3f})")
    aa = sorted(k for k in doc if k.startswith("aa_fmnist_"))
    if aa:
        print("\nAutoAttack (standard, eps 0.2, bs 250) on Fashion-MNIST test images, the demo's "
              "ELLE-A model:")
        for k in aa:
            print(f"  {k:40s} {doc[k]:10.4f}")
    methods = [k[:-len("_vs_fgsm")] for k in doc if k.endswith("_vs_fgsm")]
    if methods:
        print("\nlibelle adversarial training step per method (elle-bench-methods), ms and "
              "ratio to FGSM (and to ELLE):")
        for m in methods:
            ve = doc.get(m + "_vs_elle")
            print(f"  {m:16s} {doc[m + '_step_ms']:10.1f} {doc[m + '_vs_fgsm']:8.3f}"
                  + (f" {ve:8.3f}" if ve is not None else ""))
    if a.cuda:
        print_cuda_table(doc)
    if not have_torch:
        print("  PyTorch figures not measured (torch_available: 0)")
    loads = [doc.get(k) for k in ("loadavg_1min_start", "loadavg_1min_end",
                                  "torch_loadavg_1min_start", "torch_loadavg_1min_end")]
    print("  1-min load: libelle " + " -> ".join(f"{v:.2f}" for v in loads[:2] if v is not None)
          + ("; PyTorch " + " -> ".join(f"{v:.2f}" for v in loads[2:] if v is not None)
             if have_torch else ""))
    print("  (the load average counts the benchmark's own threads once it has run a while; "
          "'other CPU' is\n  other processes' share of the machine during the row: above a "
          "few % the timing is disturbed)")
    write_json(doc, a.out)
    return 0


# ---- cuda-rows: the GPU figures of scripts/bench_cuda.sh --------------------------------

CUDA_ROWS = [  # row, elle-bench-methods key, torch_bench.py key, label
    ("fgsm", "fgsm_trainer_step_ms", "torch_fgsm_step_ms", "FGSM-AT step"),
    ("elle", "elle_step_ms", "torch_elle_step_ms", "ELLE step (lambda 1000)"),
    ("ellea", "elle_a_step_ms", "torch_ellea_step_ms", "ELLE-A step (lambda_max 4000)"),
    ("gradalign", "gradalign_step_ms", "torch_gradalign_step_ms",
     "GradAlign step (double backprop)"),
]


def print_cuda_table(doc):
    print(f"\nlibelle (CUDA backend, trainer step) vs PyTorch (CUDA) on "
          f"{doc.get('cuda_device_name', 'an unknown GPU')}: PreActResNet-18, batch "
          f"{doc.get('cuda_methods_batch', '?')}, median ms (cudnn.benchmark "
          f"{doc.get('torch_cuda_cudnn_benchmark', '-')})")
    print(f"  {'':40s} {'libelle':>10s} {'PyTorch':>10s} {'ratio':>10s}")
    for row, _, _, label in CUDA_ROWS:
        vals = [doc.get(k) for k in (f"cuda_{row}_step_ms", f"torch_cuda_{row}_step_ms",
                                     f"cuda_{row}_vs_torch")]
        print(f"  {label:40s} " + " ".join(
            format(v, "10.3f" if i == 2 else "10.2f") if isinstance(v, (int, float))
            else f"{'-':>10s}" for i, v in enumerate(vals)))


def cuda_rows_main(argv):
    ap = argparse.ArgumentParser(prog="torch_bench.py cuda-rows",
                                 description="the flat cuda_* keys of scripts/bench_cuda.sh")
    ap.add_argument("--out", required=True)
    ap.add_argument("--methods", required=True,
                    help="elle-bench-methods --backend cuda JSON")
    ap.add_argument("--torch", help="torch_bench.py --device cuda JSON (absent: no ratios)")
    ap.add_argument("--device-name", default="", help="the GPU's name (e.g. from nvidia-smi)")
    a = ap.parse_args(argv)

    mine = load_json(a.methods, "elle-bench-methods --backend cuda")
    theirs = load_json(a.torch, "torch_bench.py --device cuda") if a.torch else {}
    doc = {}
    for row, mk, tk, _ in CUDA_ROWS:
        if mk in mine:
            doc[f"cuda_{row}_step_ms"] = mine[mk]
        if tk in theirs:
            doc[f"torch_cuda_{row}_step_ms"] = theirs[tk]
        if mine.get(mk) and theirs.get(tk):
            doc[f"cuda_{row}_vs_torch"] = mine[mk] / theirs[tk]
    for k in ("methods_batch", "methods_width", "methods_iters"):
        if k in mine:
            doc["cuda_" + k] = mine[k]
    for k in ("batch", "width", "iters", "warmup", "version", "cudnn_benchmark",
              "cudnn_version"):
        if "torch_" + k in theirs:
            doc["torch_cuda_" + k] = theirs["torch_" + k]
    if "torch_cuda_version" in theirs:
        doc["torch_cuda_version"] = theirs["torch_cuda_version"]
    doc["torch_cuda_available"] = int(bool(theirs))
    name = a.device_name.strip() or theirs.get("torch_cuda_device_name", "")
    doc["cuda_device_name"] = name or "unknown"
    print_cuda_table(doc)
    write_json(doc, a.out)
    return 0


def main(argv):
    if argv and argv[0] == "merge":
        return merge_main(argv[1:])
    if argv and argv[0] == "cuda-rows":
        return cuda_rows_main(argv[1:])
    if argv and argv[0] == "run":
        argv = argv[1:]
    return run_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
