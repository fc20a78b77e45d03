#!/usr/bin/python3
"""PyTorch cross-check of libelle's models and safetensors names.

For each architecture, in both directions:
  libelle -> PyTorch: xcheck_tool creates a model, saves safetensors and
      logits; the PyTorch definition below (written from the spec, as the
      reference repos define it) loads the file with strict=True and must
      produce the same logits in eval and train mode.
  PyTorch -> libelle: a PyTorch model with its own default initialisation
      (running statistics made non-trivial) is saved; xcheck_tool loads it
      and must reproduce PyTorch's logits.

Needs Debian's python3-torch for /usr/bin/python3; exits 77 (skip) without.
safetensors is read and written here with json + numpy only.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:  # pragma: no cover
    print(f"skip: {e} (install python3-torch for /usr/bin/python3)")
    sys.exit(77)


# ---- model definitions (reference repos) --------------------------------------------

class SmallCNN(nn.Module):
    def __init__(self, width=16, depth=2, hidden=128, classes=10, c=1, hw=28):
        super().__init__()
        ch, s = c, hw
        for i in range(1, depth + 1):
            setattr(self, f"conv{i}", nn.Conv2d(ch, width << (i - 1), 3, padding=1, bias=False))
            setattr(self, f"bn{i}", nn.BatchNorm2d(width << (i - 1)))
            ch, s = width << (i - 1), s // 2
        self.depth = depth
        self.fc1 = nn.Linear(ch * s * s, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x):
        for i in range(1, self.depth + 1):
            x = F.max_pool2d(F.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x))), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1, raw_x=False):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.raw_x = raw_x
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        if hasattr(self, "shortcut"):
            shortcut = self.shortcut(x if self.raw_x else out)
        else:
            shortcut = x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    def __init__(self, width=64, classes=10, raw_x=False):
        super().__init__()
        self.in_planes = width
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.layer1 = self._make(width, 1, raw_x)
        self.layer2 = self._make(width * 2, 2, raw_x)
        self.layer3 = self._make(width * 4, 2, raw_x)
        self.layer4 = self._make(width * 8, 2, raw_x)
        self.bn = nn.BatchNorm2d(width * 8)
        self.linear = nn.Linear(width * 8, classes)

    def _make(self, planes, stride, raw_x):
        layers = []
        for s in [stride, 1]:
            layers.append(PreActBlock(self.in_planes, planes, s, raw_x))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        out = F.relu(self.bn(out))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.view(out.size(0), -1))


class BasicBlock(nn.Module):
    def __init__(self, in_planes, out_planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.equalInOut = in_planes == out_planes
        self.convShortcut = (not self.equalInOut) and nn.Conv2d(
            in_planes, out_planes, 1, stride, 0, bias=False) or None

    def forward(self, x):
        if not self.equalInOut:
            x = self.relu1(self.bn1(x))
            out = x
        else:
            out = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(out)))
        out = self.conv2(out)
        return torch.add(x if self.equalInOut else self.convShortcut(x), out)


class NetworkBlock(nn.Module):
    def __init__(self, n, in_planes, out_planes, stride):
        super().__init__()
        self.layer = nn.Sequential(*[BasicBlock(in_planes if i == 0 else out_planes, out_planes,
                                                stride if i == 0 else 1) for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(self, depth=28, widen=10, classes=10):
        super().__init__()
        ch = [16, 16 * widen, 32 * widen, 64 * widen]
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, ch[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(ch[3], classes)
        self.nChannels = ch[3]

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        out = F.avg_pool2d(out, 8)
        return self.fc(out.view(-1, self.nChannels))


# ---- safetensors with json + numpy ---------------------------------------------------

DTYPES = {"F32": np.float32, "I64": np.int64, "F64": np.float64}


def st_read(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        arr = np.frombuffer(data[8 + n + b:8 + n + end], dtype=DTYPES[e["dtype"]])
        out[name] = torch.from_numpy(arr.reshape(e["shape"]).copy())
    return out


def st_write(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        a = t.detach().cpu().contiguous().numpy()
        dt = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}[a.dtype]
        raw = a.tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


# ---- the checks ------------------------------------------------------------------------

CASES = [
    # name, libelle arch, libelle params, torch constructor, input shape
    ("small_cnn", "small_cnn", "-", lambda: SmallCNN(), (1, 28, 28)),
    ("preact_resnet18", "preact_resnet18", "-", lambda: PreActResNet18(), (3, 32, 32)),
    ("preact_resnet18_raw_x", "preact_resnet18", "shortcut_raw_x=1,width=16,num_classes=7",
     lambda: PreActResNet18(16, 7, raw_x=True), (3, 32, 32)),
    ("wide_resnet_16_2", "wide_resnet", "depth=16,width=2", lambda: WideResNet(16, 2), (3, 32, 32)),
]


def run(tool, *args):
    r = subprocess.run([tool, *map(str, args)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"xcheck_tool {' '.join(map(str, args))} failed: {r.stderr}")


def close(a, b, what, tol=2e-4):
    err = (a - b).abs().max().item()
    scale = b.abs().max().item()
    ok = err <= tol * max(1.0, scale)
    print(f"  {what}: max |diff| {err:.3g} (scale {scale:.3g}) {'ok' if ok else 'FAIL'}")
    return ok


def main():
    tool = sys.argv[1]
    torch.manual_seed(0)
    torch.set_num_threads(2)
    ok = True
    n = 4
    with tempfile.TemporaryDirectory() as d:
        for name, arch, params, ctor, shape in CASES:
            print(f"{name}:")
            x = torch.rand(n, *shape)
            xin = os.path.join(d, "x.bin")
            x.numpy().astype(np.float32).tofile(xin)
            st, ze, zt = (os.path.join(d, f) for f in ("m.safetensors", "ze.bin", "zt.bin"))

            # libelle -> PyTorch
            run(tool, "export", arch, params, 3, st, xin, n, ze, zt)
            model = ctor()
            model.load_state_dict(st_read(st), strict=True)
            model.eval()
            with torch.no_grad():
                want = model(x)
            got = torch.from_numpy(np.fromfile(ze, dtype=np.float32).reshape(want.shape))
            ok &= close(got, want, "libelle->torch eval logits")
            model.train()
            with torch.no_grad():
                want = model(x)
            got = torch.from_numpy(np.fromfile(zt, dtype=np.float32).reshape(want.shape))
            ok &= close(got, want, "libelle->torch train logits")

            # gradients in training mode: input gradient and every parameter's
            model.zero_grad()
            xg = x.clone().requires_grad_(True)
            labels = torch.arange(n) % want.shape[1]
            F.cross_entropy(model(xg), labels).backward()
            # Gradients are compared by relative L2 error: a ReLU whose input
            # lies within float rounding of 0 (|y| ~ 1e-7 happens in a 4-image
            # batch) may be switched differently by two correct summation
            # orders, which perturbs every gradient upstream of it by up to
            # ~1% elementwise; a wrong or missing term gives O(1) errors.
            got = torch.from_numpy(np.fromfile(zt + ".dx", dtype=np.float32).reshape(x.shape))
            rel = ((got - xg.grad).norm() / xg.grad.norm()).item()
            print(f"  libelle->torch input gradient: relative L2 error {rel:.3g} "
                  f"{'ok' if rel < 2e-2 else 'FAIL'}")
            ok &= rel < 2e-2
            flat = np.fromfile(zt + ".grads", dtype=np.float32)
            off, worst, worst_name = 0, 0.0, ""
            for pname, p in model.named_parameters():
                g = torch.from_numpy(flat[off:off + p.numel()].reshape(p.shape))
                off += p.numel()
                err = ((g - p.grad).norm() / p.grad.norm().clamp_min(1e-12)).item()
                if err > worst:
                    worst, worst_name = err, pname
            good = off == flat.size and worst < 2e-2
            print(f"  libelle->torch parameter gradients: worst relative L2 error {worst:.3g} "
                  f"({worst_name}) {'ok' if good else 'FAIL'}")
            ok &= good

            # PyTorch -> libelle (running statistics moved by a few train forwards)
            model = ctor()
            model.train()
            with torch.no_grad():
                for _ in range(3):
                    model(torch.rand(8, *shape))
            st_write(st, model.state_dict())
            run(tool, "import", arch, params, st, xin, n, ze, zt)
            model.eval()
            with torch.no_grad():
                want = model(x)
            got = torch.from_numpy(np.fromfile(ze, dtype=np.float32).reshape(want.shape))
            ok &= close(got, want, "torch->libelle eval logits")
            model.train()
            with torch.no_grad():
                want = model(x)
            got = torch.from_numpy(np.fromfile(zt, dtype=np.float32).reshape(want.shape))
            ok &= close(got, want, "torch->libelle train logits")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
