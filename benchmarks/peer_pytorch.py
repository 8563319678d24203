"""The BN tutorial's PyTorch training loop, BN wired in, as the speed peer of train.py.

The tutorial trains a LeNet-style CIFAR-10 CNN (conv 6@5x5, maxpool 2, conv 16@5x5,
maxpool 2, dense 120, 84, 10) with Adam at lr 1e-4 and batch 10. Its "with BN" net
creates BatchNorm layers and never calls them; here BN is wired in where ours sits
(`bn_keras.models`): after each conv and each hidden dense layer, before the ReLU,
and the layer before a BN has no bias. `--model=resnet20` is He et al. (2016)'s
CIFAR ResNet-20 (option-A zero-padded shortcuts, he_normal convolutions), the same
network as `bn_keras.models.resnet20`; it trains with SGD, momentum 0.9.

The loop is the tutorial's: zero_grad, forward, CrossEntropyLoss, backward, step,
and `running_loss += loss.item()` every step, which waits for the step to finish
(on a CPU it costs nothing more; on a GPU it is a device-to-host sync per step).
The model stays in train mode. The data are synthetic CIFAR-shaped images,
normalized with CIFAR-10's channel statistics like ours, and int64 labels, all
held in memory as tensors; each epoch visits them in a new random order, in full
batches (a last partial batch is dropped, as DataLoader(drop_last=True) would).
BN keeps PyTorch's defaults (eps 1e-5, momentum 0.1): they do not change the speed.

Prints one JSON line: the training images/s of every epoch (the first one
includes warm-up), the torch version and its thread count.

    python benchmarks/peer_pytorch.py --model=lenet --batch_size=10 --epochs=3
    python benchmarks/peer_pytorch.py --model=resnet20 --batch_size=128 --examples=2560
"""

from __future__ import annotations

import json
import math
import time

from absl import flags

from bn_keras import cli
from bn_keras.data.cifar import IMAGE_SHAPE, MEAN, NUM_CLASSES, STD
from bn_keras.errors import InvalidSetting

if __name__ == "__main__":
    cli.answer_stops()  # Ctrl-C, SIGTERM, SIGHUP: one line, from here on

try:
    import torch
    from torch import nn
    from torch.nn import functional as F
except ModuleNotFoundError as e:  # the peer is an optional extra
    raise SystemExit("error: PyTorch is not installed; pip install -e '.[peer]'") from e

FLAGS = flags.FLAGS
MODELS = ("lenet", "resnet20")
OPTIMIZERS = ("adam", "sgd")
# The tutorial's optimizer for LeNet; the paper's for ResNet-20.
DEFAULT_OPTIMIZER = {"lenet": "adam", "resnet20": "sgd"}
LEARNING_RATES = {"adam": 1e-4, "sgd": 0.1}
SGD_MOMENTUM = 0.9


def _norm(cls: type[nn.Module], features: int, bn: bool) -> nn.Module:
    """A BN layer over `features`, or an identity without BN."""
    return cls(features) if bn else nn.Identity()


class LeNet(nn.Module):
    """The tutorial's LeNet; with `bn`, BN before each hidden ReLU and no bias before it."""

    def __init__(self, bn: bool = True):
        super().__init__()
        bias = not bn
        self.conv1 = nn.Conv2d(3, 6, 5, bias=bias)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5, bias=bias)
        self.fc1 = nn.Linear(16 * 5 * 5, 120, bias=bias)
        self.fc2 = nn.Linear(120, 84, bias=bias)
        self.fc3 = nn.Linear(84, NUM_CLASSES)
        self.bn1 = _norm(nn.BatchNorm2d, 6, bn)
        self.bn2 = _norm(nn.BatchNorm2d, 16, bn)
        self.bn3 = _norm(nn.BatchNorm1d, 120, bn)
        self.bn4 = _norm(nn.BatchNorm1d, 84, bn)

    def forward(self, x):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = self.pool(F.relu(self.bn2(self.conv2(x))))
        x = torch.flatten(x, 1)
        x = F.relu(self.bn3(self.fc1(x)))
        x = F.relu(self.bn4(self.fc2(x)))
        return self.fc3(x)


def _he_normal_(weight: torch.Tensor) -> None:
    """Keras' he_normal: a normal truncated at 2 std whose spread after truncation is
    sqrt(2 / fan_in) (0.8796 is the std of a unit normal truncated at 2)."""
    std = math.sqrt(2.0 / weight[0].numel()) / 0.87962566103423978
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


class BasicBlock(nn.Module):
    """Two 3x3 convs, BN before each ReLU; an option-A shortcut where the shape changes."""

    def __init__(self, in_channels: int, channels: int, stride: int, bn: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=not bn)
        self.bn1 = _norm(nn.BatchNorm2d, channels, bn)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=not bn)
        self.bn2 = _norm(nn.BatchNorm2d, channels, bn)
        self.stride = stride
        self.extra_channels = channels - in_channels

    def shortcut(self, x):
        if self.stride == 1 and self.extra_channels == 0:
            return x
        x = x[:, :, ::self.stride, ::self.stride]
        pad = self.extra_channels // 2
        return F.pad(x, (0, 0, 0, 0, pad, self.extra_channels - pad))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class ResNet20(nn.Module):
    """He et al. (2016)'s CIFAR ResNet-20: 16-32-64 filters, 3 blocks per stage."""

    def __init__(self, bn: bool = True, blocks_per_stage: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=not bn)
        self.bn = _norm(nn.BatchNorm2d, 16, bn)
        blocks, channels = [], 16
        for stage, filters in enumerate((16, 32, 64)):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                blocks.append(BasicBlock(channels, filters, stride, bn))
                channels = filters
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(channels, NUM_CLASSES)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                _he_normal_(module.weight)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        x = self.blocks(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


def build_model(name: str, bn: bool) -> nn.Module:
    """The peer network by name (`lenet`, `resnet20`)."""
    if name not in MODELS:
        raise InvalidSetting(f"Unknown model={name!r}; expected one of {', '.join(MODELS)}.")
    return LeNet(bn) if name == "lenet" else ResNet20(bn)


def synthetic_data(examples: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 CIFAR-shaped images, normalized like ours (NCHW float32), int64 labels."""
    generator = torch.Generator().manual_seed(seed)
    height, width, channels = IMAGE_SHAPE
    pixels = torch.randint(0, 256, (examples, channels, height, width), generator=generator)
    mean = torch.tensor(MEAN).view(1, channels, 1, 1)
    std = torch.tensor(STD).view(1, channels, 1, 1)
    images = ((pixels.float() / 255.0 - mean) / std).contiguous()
    labels = torch.randint(0, NUM_CLASSES, (examples,), generator=generator, dtype=torch.int64)
    return images, labels


def make_optimizer(name: str, params, learning_rate: float | None = None):
    if name not in OPTIMIZERS:
        raise InvalidSetting(f"Unknown optimizer={name!r}; expected one of "
                             f"{', '.join(OPTIMIZERS)}.")
    lr = learning_rate or LEARNING_RATES[name]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=SGD_MOMENTUM)


def train(model: str, bn: bool, batch_size: int, examples: int, epochs: int,
          optimizer: str | None = None, threads: int | None = None,
          seed: int = 0) -> dict:
    """Trains the peer with the tutorial's loop; returns images/s per epoch and the setup."""
    if examples < batch_size:
        raise InvalidSetting(f"examples={examples} is fewer than one batch of {batch_size}.")
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    net = build_model(model, bn)
    optimizer = optimizer or DEFAULT_OPTIMIZER[model]
    net.train()
    criterion = nn.CrossEntropyLoss()
    opt = make_optimizer(optimizer, net.parameters())
    images, labels = synthetic_data(examples, seed)
    steps = examples // batch_size
    order = torch.Generator().manual_seed(seed + 1)
    images_per_second, losses = [], []
    for _ in range(epochs):
        permutation = torch.randperm(examples, generator=order)
        running_loss = 0.0
        start = time.perf_counter()
        for step in range(steps):
            index = permutation[step * batch_size:(step + 1) * batch_size]
            inputs, targets = images[index], labels[index]
            opt.zero_grad()
            outputs = net(inputs)
            loss = criterion(outputs, targets)
            loss.backward()
            opt.step()
            running_loss += loss.item()
        images_per_second.append(steps * batch_size / (time.perf_counter() - start))
        losses.append(running_loss / steps)
    return {
        "model": model, "bn": bn, "batch_size": batch_size, "examples": examples,
        "epochs": epochs, "optimizer": optimizer, "steps_per_epoch": steps,
        "params": sum(p.numel() for p in net.parameters()),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "images_per_second": images_per_second, "mean_loss": losses,
    }


def define_flags() -> None:
    flags.DEFINE_enum("model", "lenet", list(MODELS), "Network to train.")
    flags.DEFINE_bool("bn", True, "BN after each conv and hidden dense layer (--nobn: none).")
    flags.DEFINE_integer("batch_size", 10, "Batch size (the tutorial's is 10).", lower_bound=2)
    flags.DEFINE_integer("examples", 10_000, "Synthetic training images per epoch.",
                         lower_bound=2)
    flags.DEFINE_integer("epochs", 3, "Epochs; the first includes warm-up.", lower_bound=1)
    flags.DEFINE_enum("optimizer", None, list(OPTIMIZERS),
                      "Default: adam (lr 1e-4) for lenet, sgd (lr 0.1, momentum 0.9) for resnet20.")
    flags.DEFINE_integer("threads", None, "torch.set_num_threads (default: torch's own).",
                         lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Random seed (data, order, init).")


def main(argv: list[str]) -> None:
    del argv
    result = train(FLAGS.model, FLAGS.bn, FLAGS.batch_size, FLAGS.examples, FLAGS.epochs,
                   FLAGS.optimizer, FLAGS.threads, FLAGS.seed)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
