"""By hand, with PyTorch: a checkpoint written by ``torch.save`` converts to the original network's outputs.

Run ``python -m tests.references.newell_torch`` in a checkout with PyTorch installed (``pip install -e
.[convert]``; ``make test`` does not need it). It builds Newell's ``PoseNet`` in PyTorch as princeton-vl's
``models/layers.py`` and ``models/posenet.py`` define it (transcribed, not imported), wrapped as that code's
``Trainer(DataParallel(net))``, randomises its BatchNorm statistics, saves ``{'state_dict', 'optimizer',
'epoch'}`` as ``train.py`` does, converts it with the real ``zoo convert hourglass`` and compares every
stack's output with PyTorch's forward (eval mode); then feeds ``zoo convert`` a truncated copy and a text file.
Prints one JSON line per check; exits 1 if a check fails.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

TOLERANCE = 1e-5


def _network(torch, nstack: int, inp_dim: int, oup_dim: int):
    nn = torch.nn

    class Conv(nn.Module):
        def __init__(self, inp, out, k=3, stride=1, bn=False, relu=True):
            super().__init__()
            self.conv = nn.Conv2d(inp, out, k, stride, padding=(k - 1) // 2, bias=True)
            self.relu = nn.ReLU() if relu else None
            self.bn = nn.BatchNorm2d(out) if bn else None

        def forward(self, x):
            x = self.conv(x)
            x = self.bn(x) if self.bn is not None else x
            return self.relu(x) if self.relu is not None else x

    class Residual(nn.Module):
        def __init__(self, inp, out):
            super().__init__()
            self.relu = nn.ReLU()
            self.bn1, self.conv1 = nn.BatchNorm2d(inp), Conv(inp, out // 2, 1, relu=False)
            self.bn2, self.conv2 = nn.BatchNorm2d(out // 2), Conv(out // 2, out // 2, 3, relu=False)
            self.bn3, self.conv3 = nn.BatchNorm2d(out // 2), Conv(out // 2, out, 1, relu=False)
            self.skip_layer = Conv(inp, out, 1, relu=False)  # kept (and saved) even where unused, as there
            self.need_skip = inp != out

        def forward(self, x):
            residual = self.skip_layer(x) if self.need_skip else x
            out = self.conv1(self.relu(self.bn1(x)))
            out = self.conv2(self.relu(self.bn2(out)))
            return self.conv3(self.relu(self.bn3(out))) + residual

    class Hourglass(nn.Module):
        def __init__(self, n, f):
            super().__init__()
            self.up1, self.pool1, self.low1 = Residual(f, f), nn.MaxPool2d(2, 2), Residual(f, f)
            self.low2 = Hourglass(n - 1, f) if n > 1 else Residual(f, f)
            self.low3 = Residual(f, f)

        def forward(self, x):
            up1 = self.up1(x)
            low3 = self.low3(self.low2(self.low1(self.pool1(x))))
            return up1 + nn.functional.interpolate(low3, size=up1.shape[2:], mode="nearest")

    class PoseNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.pre = nn.Sequential(Conv(3, 64, 7, 2, bn=True, relu=True), Residual(64, 128), nn.MaxPool2d(2, 2),
                                     Residual(128, 128), Residual(128, inp_dim))
            self.hgs = nn.ModuleList([nn.Sequential(Hourglass(4, inp_dim)) for _ in range(nstack)])
            self.features = nn.ModuleList([nn.Sequential(Residual(inp_dim, inp_dim),
                                                         Conv(inp_dim, inp_dim, 1, bn=True, relu=True))
                                           for _ in range(nstack)])
            self.outs = nn.ModuleList([Conv(inp_dim, oup_dim, 1, relu=False) for _ in range(nstack)])
            self.merge_features = nn.ModuleList([nn.Sequential() for _ in range(nstack - 1)])
            self.merge_preds = nn.ModuleList([nn.Sequential() for _ in range(nstack - 1)])
            for i in range(nstack - 1):  # the original's Merge module holds its Conv as .conv
                self.merge_features[i].add_module("conv", Conv(inp_dim, inp_dim, 1, relu=False))
                self.merge_preds[i].add_module("conv", Conv(oup_dim, inp_dim, 1, relu=False))

        def forward(self, imgs):
            x = self.pre(imgs.permute(0, 3, 1, 2))  # NHWC images, as the original takes them
            preds = []
            for i in range(nstack):
                feature = self.features[i](self.hgs[i](x))
                preds.append(self.outs[i](feature))
                if i < nstack - 1:
                    x = x + self.merge_preds[i](preds[-1]) + self.merge_features[i](feature)
            return torch.stack(preds, 1)

    class Trainer(nn.Module):  # task/pose.py: the network inside a DataParallel inside the Trainer
        def __init__(self, model):
            super().__init__()
            self.model = model

    return PoseNet, Trainer


def _zoo(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "common.cli", *map(str, args)], capture_output=True, text=True)


def main(nstack: int = 2, inp_dim: int = 256, size: int = 256) -> int:
    import keras
    import torch

    import acnn_pose  # noqa: F401  (registers the layers the converted file holds, as a user's script does)

    torch.manual_seed(0)
    PoseNet, Trainer = _network(torch, nstack, inp_dim, 16)
    net = PoseNet()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5), module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.5, 0.5), module.running_var.uniform_(0.5, 2.0)
    trainer = Trainer(torch.nn.DataParallel(net))
    optimizer = torch.optim.Adam(trainer.parameters(), 1e-3)
    images = np.random.default_rng(0).uniform(0, 1, (2, size, size, 3)).astype(np.float32)
    with torch.no_grad():
        want = net.eval()(torch.from_numpy(images)).numpy()  # (B, stacks, K, H/4, W/4)
    ok = True
    with tempfile.TemporaryDirectory() as folder:
        folder = pathlib.Path(folder)
        torch.save({"state_dict": trainer.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3},
                   folder / "checkpoint.pt")
        done = _zoo("convert", "hourglass", folder / "checkpoint.pt", folder / "newell.keras", "--input-size", size)
        print(json.dumps({"check": "convert", "returncode": done.returncode, "stdout": done.stdout.strip(),
                          "stderr": done.stderr.strip()[-500:]}))
        if done.returncode:
            return 1
        got = keras.models.load_model(folder / "newell.keras")(images, training=False)
        for stack, output in enumerate(got):
            reference = want[:, stack].transpose(0, 2, 3, 1)
            error = float(np.abs(np.asarray(output, np.float64) - reference).max() / np.abs(reference).max())
            ok &= error < TOLERANCE
            print(json.dumps({"check": f"stack {stack + 1} equals PyTorch", "relative_error": error,
                              "tolerance": TOLERANCE, "nstack": nstack, "inp_dim": inp_dim, "size": size}))
        data = (folder / "checkpoint.pt").read_bytes()
        (folder / "truncated.pt").write_bytes(data[:len(data) // 2])
        (folder / "notes.pt").write_text("not a checkpoint")
        for name in ("truncated.pt", "notes.pt"):
            done = _zoo("convert", "hourglass", folder / name, folder / f"{name}.keras")
            one_line = done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
            ok &= one_line and not (folder / f"{name}.keras").exists()
            print(json.dumps({"check": f"{name} refused", "returncode": done.returncode,
                              "stderr": done.stderr.strip(), "wrote": (folder / f"{name}.keras").exists()}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
