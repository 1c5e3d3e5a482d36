"""Typed training options loaded from BasicSR-style YAML (sections: datasets, network_g,
network_d, path, train, val, logger). Unknown keys and wrong types are errors that name the key."""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..data import DatasetOpts


class OptionsError(ValueError):
    pass


@dataclass
class NetworkGOpts:
    arch: str = "codec_prior"  # codec_prior | sfmnet
    size: int = 512
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: float = 2
    narrow: float = 1.0
    enc_blocks: int = 1
    min_channels: int = 0  # codec_prior: at least this many channels at every resolution (grows a narrow net's finest scales)
    channels_at: dict[int, int] = field(default_factory=dict)  # codec_prior: {resolution: channels}, overriding the table
    input_skip: bool = False  # codec_prior: add the input face to the output (the net learns a correction)
    noise_init: float = 0.0  # codec_prior: initial noise-injection weights (StyleGAN2/GPEN: 0); see the CPU recipe
    channels: int = 64  # sfmnet only
    n_modules: int = 8  # sfmnet only
    scale: int = 8  # sfmnet only: the SR factor of its data

    def arch_config(self) -> dict:
        """{"arch": name, **constructor kwargs}: what gets stored with the weights."""
        if self.arch == "sfmnet":
            return {"arch": "sfmnet", "size": self.size, "channels": self.channels, "n_modules": self.n_modules, "scale": self.scale}
        return {
            "arch": "codec_prior",
            "size": self.size,
            "style_dim": self.style_dim,
            "n_mlp": self.n_mlp,
            "channel_multiplier": self.channel_multiplier,
            "narrow": self.narrow,
            "enc_blocks": self.enc_blocks,
            **({"input_skip": True} if self.input_skip else {}),
            **({"min_channels": self.min_channels} if self.min_channels else {}),
            **({"channels_at": {str(r): c for r, c in sorted(self.channels_at.items())}} if self.channels_at else {}),
        }


@dataclass
class NetworkDOpts:
    channel_multiplier: float = 2
    narrow: float = 1.0
    freeze_layers: int = 5  # FreezeD: first N trunk entries of the global D (fromRGB + ResBlocks)
    luma: bool = False  # the global and local Ds see luma only, so the adversarial terms cannot reward invented colour
    detail: bool = False  # ... and also the luma's finest band: a fresh D then tells restored from real in ~100 steps
    detail_levels: int = 1  # with `detail`: that many wavelet bands, finest first (2 and 3 reach down to 1/8 cycle per pixel)
    condition: bool = False  # the global D also sees the degraded input's luma: it judges the restoration of this input
    component_channels: tuple[int, int, int] = (64, 128, 256)

    @property
    def detail_inputs(self) -> int:
        """The number of wavelet bands the Ds see beside the image."""
        return self.detail_levels if self.detail else 0


@dataclass
class PathOpts:
    experiments_root: str = "experiments"
    prior_g: str | None = None  # StyleGAN2 prior -> generator.*: a `mode: prior` export or a GPEN-BFR .pth
    prior_d: str | None = None  # global D init: a `mode: prior` export or a GPEN-BFR-D .pth
    resume: str | None = None  # checkpoint path or "auto" (latest in experiments_root/name)
    # cumulative training across machines: with no checkpoint to resume, G and its EMA start from this
    # released model (safetensors with `iter` metadata, e.g. weights/faceres_v1.safetensors) at its
    # iteration; optimisers and discriminators start fresh
    init_state: str | None = None


@dataclass
class FeatureLossOpts:
    weight: float = 0.02
    type: str = "vgg19"  # vgg19 | discriminator_features | none
    weights: str = "vgg19"  # registry name or path (vgg19 only)


@dataclass
class IdentityLossOpts:
    weight: float = 10.0
    type: str = "arcface"  # arcface | dlib (dlib's face ResNet, weights: registry dlib-resnet) | none
    weights: str = "arcface-irse50"  # ArcFace weights (type arcface)


@dataclass
class FFLOpts:
    """Focal frequency loss (seed 004)."""

    weight: float = 0.0  # 0 = off
    alpha: float = 1.0
    patch_factor: int = 1
    log_matrix: bool = False
    batch_matrix: bool = False


@dataclass
class GFLOpts:
    """Guided frequency loss (seed 000): high-pass band from omega0 to omega_final in `stages`."""

    weight: float = 0.0  # 0 = off
    omega0: float = 0.8  # normalised radius, 1 = Nyquist
    omega_final: float = 0.2
    stages: int = 5
    mode: str = "static"  # static (every total_iter/stages iterations) | dynamic (GFL < threshold)
    thresholds: tuple[float, ...] = ()  # L_t per stage (dynamic mode); the last one repeats


@dataclass
class LossOpts:
    l1: float = 8.0
    multiscale_l1: float = 1.0  # codec_prior: decoder RGB heads
    mse: float = 0.0  # squared error: PSNR's own loss (L1 favours the median where the input is ambiguous, PSNR the mean)
    chroma_l1: float = 0.0  # extra L1 on colour (RGB minus luma): holds colour while a luma D pushes texture
    ssim: float = 0.0  # 1 - SSIM on luma, the metric the model card reports
    artifacts: float = 0.0  # LDL's artifact-map L1 against the EMA generator: curbs the noise an adversarial stage invents
    excess_detail: float = 0.0  # local band energy above the truth's: outlines and grids on smooth skin, not texture
    amplitude_phase: float = 1.0  # sfmnet: L1 on amplitude and phase of the frequency-branch output
    gan_global: float = 0.5
    gan_local: float = 3.0
    feature_matching: FeatureLossOpts = field(default_factory=FeatureLossOpts)
    identity: IdentityLossOpts = field(default_factory=IdentityLossOpts)
    ffl: FFLOpts = field(default_factory=FFLOpts)
    gfl: GFLOpts = field(default_factory=GFLOpts)


@dataclass
class LearningRates:
    codec: float = 2e-3
    generator: float = 2e-4
    noise: float = 2e-3
    local_d: float = 2e-3
    global_d: float = 2e-5


@dataclass
class TrainOpts:
    mode: str = "restoration"  # restoration | prior (unconditional StyleGAN2 pretraining)
    total_iter: int = 700_000
    batch_size: int = 4  # per process
    lr: LearningRates = field(default_factory=LearningRates)
    betas: tuple[float, float] = (0.9, 0.99)
    milestones: tuple[int, ...] = (500_000, 600_000)
    gamma: float = 0.5
    ema_decay: float = 0.999
    r1_weight: float = 10.0
    d_reg_every: int = 16
    # after path.init_state (a trained G meets a fresh D): the Ds learn alone for this many iterations,
    # so that G's first adversarial gradients come from a D that can already tell restored from real
    d_warmup: int = 0
    # weight of a second fake term for the global D: the visibly degraded inputs (PSNR below 30 dB against
    # their ground truth), to teach the D that blur, noise and block seams are fake (negative data
    # augmentation, Sinha et al. 2021). On faceres-v1 it only sped up the stage's lines (weights/README.md)
    d_input_as_fake: float = 0.0
    # path.init_state into a grown network (more MMRBs or channels): the learning rate of the added
    # elements as a multiple of their group's. They start silent, and at a late line's low rate Adam
    # moves them too little to matter for thousands of iterations
    grown_lr_mult: float = 1.0
    # auto: bf16 autocast where the CPU/GPU computes bf16 natively; weights, losses, R1, EMA and
    # optimiser state stay fp32 either way
    precision: str = "auto"
    channels_last: bool = True  # NHWC activations: what oneDNN's bf16 convolutions want on CPU
    losses: LossOpts = field(default_factory=LossOpts)


@dataclass
class ValOpts:
    every: int = 5000
    max_images: int = 50


@dataclass
class LoggerOpts:
    print_every: int = 100
    save_every: int = 5000
    tensorboard: bool = True


@dataclass
class DatasetsOpts:
    train: DatasetOpts
    val: DatasetOpts | None = None


@dataclass
class Options:
    name: str
    datasets: DatasetsOpts
    seed: int = 0
    network_g: NetworkGOpts = field(default_factory=NetworkGOpts)
    network_d: NetworkDOpts = field(default_factory=NetworkDOpts)
    path: PathOpts = field(default_factory=PathOpts)
    train: TrainOpts = field(default_factory=TrainOpts)
    val: ValOpts = field(default_factory=ValOpts)
    logger: LoggerOpts = field(default_factory=LoggerOpts)

    @property
    def experiment_dir(self) -> Path:
        return Path(self.path.experiments_root) / self.name


def _convert(tp, value, key: str):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise OptionsError(f"{key}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, key)
            except OptionsError as err:
                errors.append(str(err))
        raise OptionsError(errors[0])
    if origin is dict:
        if not isinstance(value, dict):
            raise OptionsError(f"{key}: expected a mapping, got {value!r}")
        key_type, value_type = typing.get_args(tp)
        return {_convert(key_type, k, key): _convert(value_type, v, key) for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise OptionsError(f"{key}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, key) for v in value)
        if len(args) != len(value):
            raise OptionsError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(a, v, key) for a, v in zip(args, value))
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp is type(None) and value is None:
        return None
    if isinstance(tp, type) and not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise OptionsError(f"{key}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls, data: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise OptionsError(
            f"unknown option(s) {', '.join(f'{prefix}.{k}'.lstrip('.') for k in sorted(unknown))}; "
            f"valid under {prefix or 'top level'}: {', '.join(sorted(names))}"
        )
    kwargs = {k: _convert(hints[k], v, f"{prefix}.{k}".lstrip(".")) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise OptionsError(f"{prefix or 'options'}: {err}") from None


def _expand(obj):
    if isinstance(obj, str):
        return os.path.expandvars(obj)
    if isinstance(obj, dict):
        return {k: _expand(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_expand(v) for v in obj]
    return obj


def _set_dotted(data: dict, dotted: str, value):
    keys = dotted.split(".")
    for i, k in enumerate(keys[:-1]):
        data = data.setdefault(k, {})
        if not isinstance(data, dict):
            raise OptionsError(f"--set {dotted}: {'.'.join(keys[: i + 1])} is a value, not a section")
    data[keys[-1]] = value


def _yaml(text: str, what: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise OptionsError(f"{what}: YAML syntax error{where}: {getattr(err, 'problem', None) or err}") from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise OptionsError("is a directory, not an options file") from None
    except FileNotFoundError:
        raise OptionsError("no such options file") from None
    except UnicodeDecodeError as err:
        raise OptionsError(f"not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start})") from None
    except OSError as err:
        raise OptionsError(f"cannot read ({err.strerror or err})") from None


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_options_file(path: Path, depth: int = 0):
    """The file's YAML; with `base: other.yml` (relative to this file) it is merged over that file:
    mappings key by key, any other value replaced. A training stage names only what it changes."""
    data = _yaml(_read_text(path), "options file")
    if not isinstance(data, dict) or "base" not in data:
        return data
    if depth == 8:
        raise OptionsError(f"{path}: more than 8 nested base files (a cycle?)")
    base_path = path.parent / str(data.pop("base"))
    try:
        base = _read_options_file(base_path, depth + 1)
    except OptionsError as err:
        raise OptionsError(f"base {base_path}: {err}") from None
    if not isinstance(base, dict):
        raise OptionsError(f"base {base_path}: not a mapping of sections")
    return _merge(base, data)


def read_options(path: str | Path, overrides: list[str] = ()) -> dict:
    """An options file (with its `base:` files) and `dotted.key=yaml_value` overrides -> one dict with
    `${VAR}` expanded from the environment (FACERES_SHARED defaults to ../shared)."""
    os.environ.setdefault("FACERES_SHARED", str(Path.cwd().parent / "shared"))
    data = _read_options_file(Path(path))
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise OptionsError(f"the options file must be a mapping of sections (name, datasets, train...), got a {type(data).__name__}")
    for item in overrides:
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise OptionsError(f"--set {item!r}: expected KEY=VALUE")
        _set_dotted(data, key.strip(), _yaml(raw, f"--set {item!r}"))
    return _expand(data)


def load_options(path: str | Path, overrides: list[str] = ()) -> Options:
    """YAML -> Options (`read_options`). Every problem is an OptionsError of one line."""
    opts = from_dict(Options, read_options(path, overrides))
    validate(opts)
    return opts


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def dump_options(opts: Options, resume: str | None = None) -> str:
    """Options -> YAML that load_options reads back to equal Options (`resume` replaces path.resume)."""
    data = _plain(dataclasses.asdict(opts))
    if resume is not None:
        data["path"]["resume"] = resume
    return yaml.safe_dump(data, sort_keys=False, width=140)


def _check_ranges(opts: Options):
    """Numbers that would crash or silently do nothing later, rejected with the key's name."""
    tr, size = opts.train, opts.network_g.size
    at_least_one = {
        "train.batch_size": tr.batch_size,
        "train.total_iter": tr.total_iter,
        "train.d_reg_every": tr.d_reg_every,
        "val.every": opts.val.every,
        "logger.print_every": opts.logger.print_every,
        "logger.save_every": opts.logger.save_every,
    }
    for key, value in at_least_one.items():
        if value < 1:
            raise OptionsError(f"{key} must be at least 1, got {value}")
    for name, value in dataclasses.asdict(tr.lr).items():
        if not 0 <= value < float("inf"):
            raise OptionsError(f"train.lr.{name} must be >= 0 and finite, got {value}")
    for key, value in {"train.ema_decay": tr.ema_decay, "train.betas[0]": tr.betas[0], "train.betas[1]": tr.betas[1]}.items():
        if not 0 <= value < 1:
            raise OptionsError(f"{key} must be in [0, 1), got {value}")
    if tr.d_warmup < 0:
        raise OptionsError(f"train.d_warmup must be >= 0, got {tr.d_warmup}")
    if opts.network_d.detail_levels < 1:
        raise OptionsError(f"network_d.detail_levels must be >= 1, got {opts.network_d.detail_levels}")
    if tr.d_input_as_fake < 0:
        raise OptionsError(f"train.d_input_as_fake must be >= 0, got {tr.d_input_as_fake}")
    if not tr.gamma > 0:
        raise OptionsError(f"train.gamma must be > 0, got {tr.gamma}")
    if not (16 <= size <= 2048 and size & (size - 1) == 0):
        raise OptionsError(f"network_g.size must be a power of two from 16 to 2048, got {size}")


def validate(opts: Options):
    _check_ranges(opts)
    if opts.network_g.arch not in ("codec_prior", "sfmnet"):
        raise OptionsError(f"network_g.arch must be codec_prior or sfmnet, got {opts.network_g.arch!r}")
    if opts.network_g.arch == "sfmnet" and opts.train.losses.gan_local > 0:
        raise OptionsError("network_g.arch sfmnet: set train.losses.gan_local: 0 (no local discriminators for SR)")
    if opts.train.precision not in ("auto", "fp32", "bf16"):
        raise OptionsError(f"train.precision: auto | fp32 | bf16, got {opts.train.precision!r}")
    if opts.train.mode not in ("restoration", "prior"):
        raise OptionsError(f"train.mode must be restoration or prior, got {opts.train.mode!r}")
    if opts.train.mode == "prior" and opts.network_d.condition:
        raise OptionsError("network_d.condition needs train.mode restoration: a prior's D has no degraded input to see")
    if opts.train.d_input_as_fake > 0 and opts.network_d.condition:
        raise OptionsError("train.d_input_as_fake and network_d.condition exclude each other (a degraded input has no input of its own)")
    if opts.datasets.train.size != opts.network_g.size:
        raise OptionsError(f"datasets.train.size ({opts.datasets.train.size}) must equal network_g.size ({opts.network_g.size})")
    losses = opts.train.losses
    if losses.feature_matching.type not in ("vgg19", "discriminator_features", "none"):
        raise OptionsError(
            f"train.losses.feature_matching.type: vgg19 | discriminator_features | none, got {losses.feature_matching.type!r}"
        )
    if losses.identity.type not in ("arcface", "dlib", "none"):
        raise OptionsError(f"train.losses.identity.type: arcface | dlib | none, got {losses.identity.type!r}")
    if losses.gfl.mode not in ("static", "dynamic"):
        raise OptionsError(f"train.losses.gfl.mode: static | dynamic, got {losses.gfl.mode!r}")
    if losses.gfl.weight > 0 and losses.gfl.mode == "dynamic" and not losses.gfl.thresholds:
        raise OptionsError("train.losses.gfl.mode dynamic needs train.losses.gfl.thresholds")
    if opts.train.mode == "restoration" and losses.gan_local > 0 and not opts.datasets.train.landmarks:
        raise OptionsError(
            "train.losses.gan_local > 0 needs datasets.train.landmarks (run `faceres prepare-landmarks`), or set gan_local: 0"
        )
    opts.datasets.train.degradation.validate()
