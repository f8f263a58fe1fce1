"""Inception-I3D (Carreira & Zisserman 2017, "Quo Vadis, Action Recognition?"): the video network behind FVD.

InceptionV1 with every 2-D kernel inflated to 3-D, trained on Kinetics-400. FVD (Unterthiner et al. 2018)
feeds 224 x 224 RGB clips in [-1, 1] and uses the 400 logits (before the softmax), averaged over time, as
the feature of a clip. The weights are not shipped: ``load_i3d`` reads them from the TorchScript file the
common FVD code uses (``i3d_torchscript.pt``) without running any of its code.

Layers follow the original TensorFlow model: convolutions without bias, each followed by batch norm
(eps 1e-3) and ReLU; "SAME" padding, which for a stride of 2 puts the extra row after, not before, and pads
max pooling with -inf (pooling ignores the border).
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from flashi2v.errors import FlashI2VError

NUM_CLASSES = 400
INPUT_SIZE = 224
MIN_FRAMES = 9  # the temporal strides (2, 2, 2) must leave >= 2 steps for the final 2 x 7 x 7 average pool

# Inception blocks: (name, output channels of branch 0, branch 1 (1x1, 3x3), branch 2 (1x1, 3x3), branch 3)
_MIXED = {
    "Mixed_3b": (64, (96, 128), (16, 32), 32),
    "Mixed_3c": (128, (128, 192), (32, 96), 64),
    "Mixed_4b": (192, (96, 208), (16, 48), 64),
    "Mixed_4c": (160, (112, 224), (24, 64), 64),
    "Mixed_4d": (128, (128, 256), (24, 64), 64),
    "Mixed_4e": (112, (144, 288), (32, 64), 64),
    "Mixed_4f": (256, (160, 320), (32, 128), 128),
    "Mixed_5b": (256, (160, 320), (32, 128), 128),
    "Mixed_5c": (384, (192, 384), (48, 128), 128),
}


def _same_padding(size: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]) -> list[int]:
    """F.pad amounts (last axis first) of TensorFlow "SAME": output = ceil(in / stride), odd padding after."""
    pads = []
    for n, k, s in zip(size, kernel, stride):
        total = max(k - s, 0) if n % s == 0 else max(k - n % s, 0)
        pads.append((total // 2, total - total // 2))
    return [p for pair in reversed(pads) for p in pair]


def _triple(v) -> tuple[int, int, int]:
    return (v, v, v) if isinstance(v, int) else tuple(v)


class MaxPoolSame(nn.Module):
    """3-D max pooling with TensorFlow "SAME" padding (padded cells never win)."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = _triple(kernel), _triple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, _same_padding(x.shape[2:], self.kernel, self.stride), value=float("-inf"))
        return F.max_pool3d(x, self.kernel, self.stride)


class Unit3D(nn.Module):
    """Conv3d (no bias, "SAME" padding) -> BatchNorm3d (eps 1e-3) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel=1, stride=1):
        super().__init__()
        self.kernel, self.stride = _triple(kernel), _triple(stride)
        self.conv = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, bias=False)
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, _same_padding(x.shape[2:], self.kernel, self.stride))
        return F.relu(self.bn(self.conv(x)))


class Mixed(nn.Module):
    """Inflated Inception block: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 | 3x3 max pool -> 1x1, concatenated."""

    def __init__(self, in_channels: int, b0: int, b1: tuple[int, int], b2: tuple[int, int], b3: int):
        super().__init__()
        self.branch_0 = Unit3D(in_channels, b0)
        self.branch_1a, self.branch_1b = Unit3D(in_channels, b1[0]), Unit3D(b1[0], b1[1], kernel=3)
        self.branch_2a, self.branch_2b = Unit3D(in_channels, b2[0]), Unit3D(b2[0], b2[1], kernel=3)
        self.branch_3_pool, self.branch_3b = MaxPoolSame(3, 1), Unit3D(in_channels, b3)
        self.out_channels = b0 + b1[1] + b2[1] + b3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch_0(x),
            self.branch_1b(self.branch_1a(x)),
            self.branch_2b(self.branch_2a(x)),
            self.branch_3b(self.branch_3_pool(x)),
        ], dim=1)


class InceptionI3d(nn.Module):
    """Inception-I3D. ``forward``: B x 3 x T x 224 x 224 in [-1, 1], T >= ``MIN_FRAMES`` -> B x ``num_classes``
    logits averaged over time (the FVD feature). ``width`` scales every channel count (1.0: the real
    network; tests use a narrow copy)."""

    def __init__(self, num_classes: int = NUM_CLASSES, width: float = 1.0):
        super().__init__()

        def c(n: int) -> int:
            return max(1, round(n * width))

        layers: list[tuple[str, nn.Module]] = [
            ("Conv3d_1a_7x7", Unit3D(3, c(64), kernel=7, stride=2)),
            ("MaxPool3d_2a_3x3", MaxPoolSame((1, 3, 3), (1, 2, 2))),
            ("Conv3d_2b_1x1", Unit3D(c(64), c(64))),
            ("Conv3d_2c_3x3", Unit3D(c(64), c(192), kernel=3)),
            ("MaxPool3d_3a_3x3", MaxPoolSame((1, 3, 3), (1, 2, 2))),
        ]
        channels = c(192)
        for name, (b0, b1, b2, b3) in _MIXED.items():
            if name == "Mixed_4b":
                layers.append(("MaxPool3d_4a_3x3", MaxPoolSame(3, 2)))
            if name == "Mixed_5b":
                layers.append(("MaxPool3d_5a_2x2", MaxPoolSame(2, 2)))
            block = Mixed(channels, c(b0), (c(b1[0]), c(b1[1])), (c(b2[0]), c(b2[1])), c(b3))
            layers.append((name, block))
            channels = block.out_channels
        self.features = nn.Sequential(OrderedDict(layers))
        self.logits = nn.Conv3d(channels, num_classes, kernel_size=1, bias=True)  # Logits/Conv3d_0c_1x1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != 3 or x.shape[2] < MIN_FRAMES or x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            raise FlashI2VError(
                f"I3D takes B x 3 x T x {INPUT_SIZE} x {INPUT_SIZE} clips with T >= {MIN_FRAMES}, got {tuple(x.shape)}; "
                "use i3d_clip() to prepare frames (and --chunk >= 9 for chunk-wise FVD)"
            )
        x = self.features(x)  # B x 1024 x T/8 x 7 x 7
        x = F.avg_pool3d(x, kernel_size=(2, 7, 7), stride=1)  # "VALID": B x 1024 x T/8 - 1 x 1 x 1
        return self.logits(x).mean(dim=(2, 3, 4))  # B x 400 (dropout is off at evaluation)


def i3d_clip(frames_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 T x H x W x 3 -> float32 1 x 3 x T x 224 x 224 in [-1, 1]: every frame resized (bilinear, no crop)
    to 224 x 224 as the common FVD code does."""
    x = frames_uint8.permute(0, 3, 1, 2).float()  # T x 3 x H x W
    if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    return (x / 127.5 - 1.0).permute(1, 0, 2, 3)[None]


@torch.no_grad()
def i3d_features(model: InceptionI3d, frames_uint8: torch.Tensor) -> torch.Tensor:
    """400-d FVD feature (float64) of one clip of uint8 T x H x W x 3 frames."""
    device = next(model.parameters()).device
    return model(i3d_clip(frames_uint8).to(device))[0].double().cpu()


# ---- loading the weights from a TorchScript archive, without running it ------------------------------------
#
# A TorchScript file is a zip: code/ (TorchScript source, never executed here), data.pkl (the module tree:
# objects of classes named __torch__.*, whose attributes are submodules and tensors) and data/<key> (raw
# storage bytes). data.pkl is read with an unpickler that builds only plain records and tensors, so nothing
# in the file can run. The tensors are then matched to our layers in file order, with every shape checked:
# no particular naming of the converted model is assumed, only the I3D structure.

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


class _Record:
    """Stand-in for a scripted module or object: keeps the attribute dict it is unpickled with."""

    def __init__(self, *args):
        self.state = {}

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {"state": state}


def _rebuild_tensor(storage, offset, size, stride, *rest):
    return torch.as_strided(storage, tuple(size), tuple(stride), offset).clone()


def _first(value, *rest):
    return value


class _ArchiveUnpickler(pickle.Unpickler):
    """Builds tensors, dicts, lists and ``_Record``s only; any other global is refused."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str):
        if module.startswith("__torch__"):
            return type(name, (_Record,), {})
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if (module, name) in (("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")):
            return _rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _first
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch.jit._pickle" and name.startswith(("build_", "restore_type_tag")):
            return _first
        raise pickle.UnpicklingError(f"refusing global {module}.{name}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        dtype, key = pid[1], pid[2]
        if not isinstance(dtype, torch.dtype):
            raise pickle.UnpicklingError(f"unexpected storage type {dtype!r}")
        data = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
        return torch.frombuffer(data, dtype=dtype) if data else torch.empty(0, dtype=dtype)


def read_torchscript_tensors(path: str | Path) -> list[tuple[str, torch.Tensor]]:
    """(dotted name, tensor) of every tensor in a TorchScript archive's module tree, in file order, without
    executing anything from the file."""
    path = Path(path)
    hint = "pass the i3d_torchscript.pt of the common FVD code (StyleGAN-V's)"
    if not path.is_file():
        raise FlashI2VError(f"cannot read I3D weights '{path}': no such file; {hint}")
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if not names:
                raise FlashI2VError(f"'{path}' is not a TorchScript archive (no data.pkl); {hint}")
            prefix = names[0][: -len("data.pkl")]
            root = _ArchiveUnpickler(io.BytesIO(archive.read(names[0])), archive, prefix).load()
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, RuntimeError,
            OSError) as err:
        if isinstance(err, FlashI2VError):
            raise
        raise FlashI2VError(f"cannot read I3D weights '{path}': not a valid TorchScript archive ({err}); {hint}") from None
    found: list[tuple[str, torch.Tensor]] = []

    def walk(obj, name: str) -> None:
        if isinstance(obj, torch.Tensor):
            found.append((name, obj))
        elif isinstance(obj, _Record):
            walk(obj.state, name)
        elif isinstance(obj, dict):
            for key, value in obj.items():
                walk(value, f"{name}.{key}" if name else str(key))
        elif isinstance(obj, (list, tuple)):
            for i, value in enumerate(obj):
                walk(value, f"{name}.{i}" if name else str(i))

    walk(root, "")
    return found


def _layers_in_file(tensors: list[tuple[str, torch.Tensor]]) -> list[dict]:
    """Convolution layers of the file in order, from its tensors grouped by parent module: a group with a
    5-D weight is a convolution (with its bias, if any); a later group with a running mean and variance is the
    batch norm of the latest convolution (scale and offset optional: TensorFlow's I3D has no scale)."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors:
        parent, _, leaf = name.rpartition(".")
        groups.setdefault(parent, {})[leaf.lower()] = tensor

    def pick(group: dict, *words: str) -> torch.Tensor | None:
        return next((t for leaf, t in group.items() if t.ndim == 1 and any(w in leaf for w in words)), None)

    layers: list[dict] = []
    for group in groups.values():
        weight = next((t for t in group.values() if t.ndim == 5), None)
        mean, var = pick(group, "mean"), pick(group, "var")
        if weight is not None:
            layers.append({"weight": weight, "bias": pick(group, "bias")})
        elif mean is not None and var is not None and layers and "bn" not in layers[-1]:
            layers[-1]["bn"] = {"mean": mean, "var": var, "scale": pick(group, "weight", "gamma", "scale"),
                                "offset": pick(group, "bias", "beta", "offset")}
    return layers


def _our_layers(model: InceptionI3d) -> list[tuple[nn.Conv3d, nn.BatchNorm3d]]:
    """(conv, its batch norm) of every Unit3D in forward order (the logits are apart)."""
    return [(u.conv, u.bn) for u in model.features.modules() if isinstance(u, Unit3D)]


def load_i3d(path: str | Path, device: str | torch.device = "cpu", model: InceptionI3d | None = None) -> InceptionI3d:
    """Inception-I3D with the weights of a TorchScript ``i3d_torchscript.pt`` (read safely, see above); a
    one-line error when the file is not a Kinetics-400 I3D (wrong layer count or shapes). ``model``: load
    into this network instead of a new full-size one (e.g. a narrow test copy)."""
    model = InceptionI3d() if model is None else model
    assign_i3d_weights(model, read_torchscript_tensors(path), f"'{path}'")
    return model.eval().to(device)


def assign_i3d_weights(model: InceptionI3d, tensors: list[tuple[str, torch.Tensor]], source: str = "the weights") -> None:
    """Copy (name, tensor) pairs in file order onto ``model``. The logits are the one convolution of shape
    num_classes x 1024 x 1 x 1 x 1, wherever the file keeps them (PyTorch ports of I3D often register them
    before the blocks); the other convolutions map in order onto the 57 Unit3D layers, every shape checked."""
    layers = _layers_in_file(tensors)
    hint = "it is not the Kinetics-400 Inception-I3D of the common FVD code (i3d_torchscript.pt)"
    logits = [layer for layer in layers if tuple(layer["weight"].shape) == tuple(model.logits.weight.shape)]
    ours = _our_layers(model)
    if len(layers) != len(ours) + 1:
        frozen = " (a frozen TorchScript keeps its weights as code constants, which are not read)" if not layers else ""
        raise FlashI2VError(f"{source} holds {len(layers)} convolutions{frozen}, Inception-I3D has {len(ours) + 1}: {hint}")
    if len(logits) != 1 or logits[0]["bias"] is None:
        raise FlashI2VError(f"{source} has no single {tuple(model.logits.weight.shape)} logits convolution with bias: {hint}")
    units = [layer for layer in layers if layer is not logits[0]]
    with torch.no_grad():
        model.logits.weight.copy_(logits[0]["weight"].float())
        model.logits.bias.copy_(logits[0]["bias"].float())
        for i, (layer, (conv, bn)) in enumerate(zip(units, ours)):
            weight = layer["weight"]
            if tuple(weight.shape) != tuple(conv.weight.shape):
                raise FlashI2VError(f"{source}: convolution {i} has shape {tuple(weight.shape)}, Inception-I3D's is "
                                    f"{tuple(conv.weight.shape)}: {hint}")
            conv.weight.copy_(weight.float())
            out = weight.shape[0]
            stats = layer.get("bn")
            if stats is None:  # batch norm folded into the conv: y = conv(x) + bias
                bn.running_mean.zero_(), bn.running_var.fill_(1.0 - bn.eps), bn.weight.fill_(1.0)
                bn.bias.copy_(torch.zeros(out) if layer["bias"] is None else layer["bias"].float())
                continue
            for key, target in (("mean", bn.running_mean), ("var", bn.running_var), ("scale", bn.weight), ("offset", bn.bias)):
                value = stats[key]
                if value is None:  # TensorFlow's batch norm in I3D has no scale, and may lack an offset
                    value = torch.ones(out) if key == "scale" else torch.zeros(out)
                if value.shape != (out,):
                    raise FlashI2VError(f"{source}: batch norm {i} {key} has shape {tuple(value.shape)}, expected ({out},): {hint}")
                target.copy_(value.float())
