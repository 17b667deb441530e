"""Image augmentations on the device (kornia), batched over views and tasks, reproducible by seed.

Two uses:

- Meta Self-Distillation views (``augment_views``): n augmented copies of a support set, every image
  of every view with its own random draw of the composition crop -> rotation -> colour jitter ->
  grayscale -> blur -> horizontal flip (the strengths are an ``AugmentStrengths``).
- The augmented test scenario (``perturb_episodes``): test tasks perturbed at a "weak" or
  "strong" level on the "support", "query" or "both" sides. Each episode gets its own seed, derived
  from (scenario seed, episode index, side), so an episode is perturbed the same way whichever
  meta-batch it lands in.

Presets (``PRESETS``): which augmentations fit depends on the data, so each preset defines both the
MSD training views and the weak/strong scenario levels. "natural" (photos: miniImageNet,
tieredImageNet, CIFAR-FS/FC100/CIFAR-100, class folders of photos) uses the paper's five: random
resized crop, colour jitter, grayscale, gaussian blur, horizontal flip. "glyph" (the built-in glyphs,
Omniglot) never flips (a mirrored glyph is often another character: b/d, p/q) and changes no
brightness or colour: small crops and rotations, a contrast change and a 3x3 blur that keep the
strokes. ``load_split`` records the dataset's preset in the split's meta, the sampler puts it on
every ``EpisodeBatch`` (``augment_preset``), and MSD and the scenarios use the batch's preset unless
configured otherwise. ``SCENARIO_LEVELS`` is the natural preset's levels.

Reproducibility: kornia draws its random parameters from torch's *global* generator. Every function
here therefore runs kornia inside ``torch.random.fork_rng`` after ``torch.manual_seed(seed)``: the
result is a function of the seed only, and the caller's global RNG state is left untouched. Without
an explicit seed, one 63-bit seed is drawn from ``generator`` (or from the global torch RNG when
none is given), so a seeded training run stays reproducible and resumable.

Pixels: augmentations work on the [0, 1] scale. Normalised images (``mean``/``std`` given, as the
episode sampler produces with ``data.normalize``; the sampler's batches carry them as
``EpisodeBatch.mean``/``std`` and ``perturb_batch`` reads them from there) are de-normalised first and
normalised again after; only the de-normalised [0, 1] pixels are clamped. Images given without their
normalisation are taken as [0, 1] pixels. One-channel images skip saturation, hue and grayscale
(no-ops on gray pixels).
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..errors import ConfigError, DataError
from ..validate import positive_int

SIDES = ("support", "query", "both")
LEVELS = ("weak", "strong")  # the default scenario grid: the training augmentations' family, two strengths
OOD = "ood"  # a level outside that family (pixel noise and occlusion), in every preset
ALL_LEVELS = (*LEVELS, OOD)
PROBABILITIES = ("crop_p", "rotation_p", "jitter_p", "grayscale_p", "blur_p", "flip_p", "noise_p", "erase_p")
Stats = Optional[Sequence[float]]


@dataclass(frozen=True)
class AugmentStrengths:
    """Parameters of the augmentation composition; a probability of 0 turns a step off.

    Defaults (the natural preset's MSD views, the paper's five): random resized crop to the input
    size with area scale (0.6, 1.0) and aspect ratio (3/4, 4/3) (p 1.0); colour jitter
    brightness/contrast/saturation 0.4, hue 0.1 (p 0.8); grayscale (p 0.2); gaussian blur with a
    3×3 kernel and σ in (0.1, 1.0) (p 0.2); horizontal flip (p 0.5). Rotation (up to ±15°) is off
    (rotation_p 0); set rotation_p to add it. Two steps no preset's MSD views use, for the "ood" scenario
    level (perturbations outside the training augmentation family): additive gaussian pixel noise
    (noise_std on the [0, 1] scale) and random erasing (an occluding black rectangle of erase_scale of the
    area), both off by default.
    """

    crop_p: float = 1.0
    crop_scale: Tuple[float, float] = (0.6, 1.0)
    crop_ratio: Tuple[float, float] = (3 / 4, 4 / 3)
    rotation_p: float = 0.0
    rotation_degrees: float = 15.0
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.2
    blur_kernel: int = 3
    blur_sigma: Tuple[float, float] = (0.1, 1.0)
    flip_p: float = 0.5
    noise_p: float = 0.0
    noise_std: float = 0.1
    erase_p: float = 0.0
    erase_scale: Tuple[float, float] = (0.02, 0.12)

    @classmethod
    def identity(cls) -> "AugmentStrengths":
        """Every step off: views are exact copies of the input (tests, ablations)."""
        return cls(**{k: 0.0 for k in PROBABILITIES})

    @property
    def is_identity(self) -> bool:
        return all(getattr(self, k) == 0 for k in PROBABILITIES)

    @classmethod
    def from_options(cls, spec: Union[None, str, Mapping[str, Any], "AugmentStrengths"],
                     where: str = "augment", preset: Union[None, str, "AugmentPreset"] = None) -> "AugmentStrengths":
        """Strengths from a config value, relative to ``preset`` (default "natural"; usually the data's):

        None or "default" -> the preset's MSD views; "natural" / "glyph" -> that preset's views whatever
        the data; "identity" -> no augmentation; "weak" / "strong" -> the preset's scenario level; a
        mapping -> the preset's views with those fields changed (a ``preset: natural | glyph`` key in the
        mapping picks the base preset instead).
        """
        base = get_preset(preset, f"{where} preset")
        if spec is None:
            return base.views
        if isinstance(spec, AugmentStrengths):
            return spec
        if isinstance(spec, str):
            if spec == "identity":
                return cls.identity()
            if spec in base.levels:
                return base.levels[spec]
            if spec == "default":
                return base.views
            if spec in PRESETS:
                return PRESETS[spec].views
            raise ConfigError(f"{where}: expected 'default', {', '.join(repr(n) for n in PRESETS)}, 'identity', "
                              f"'weak', 'strong' or a mapping of strengths, got {spec!r}")
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{where}: expected a mapping of augmentation strengths, got {type(spec).__name__}")
        spec = dict(spec)
        if "preset" in spec:
            base = get_preset(spec.pop("preset"), f"{where}.preset")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(spec) - set(known))
        if unknown:
            raise ConfigError(f"{where}: unknown augmentation key(s) {', '.join(map(repr, unknown))}; "
                              f"valid keys: preset, {', '.join(known)}")
        values: Dict[str, Any] = {}
        for key, value in spec.items():
            default = getattr(cls(), key)
            if isinstance(default, tuple):
                if not (isinstance(value, (list, tuple)) and len(value) == 2
                        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
                    raise ConfigError(f"{where}.{key}: expected a pair of numbers, got {value!r}")
                values[key] = (float(value[0]), float(value[1]))
            elif isinstance(default, int):
                if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % 2 == 0:
                    raise ConfigError(f"{where}.{key}: expected an odd integer >= 1, got {value!r}")
                values[key] = value
            else:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise ConfigError(f"{where}.{key}: expected a number >= 0, got {value!r}")
                values[key] = float(value)
        out = replace(base.views, **values)
        out.check(where)
        return out

    def check(self, where: str = "augment") -> None:
        for key in PROBABILITIES:
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"{where}.{key}: a probability must lie in [0, 1], got {getattr(self, key)}")
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"{where}.crop_scale: expected 0 < low <= high <= 1, got {self.crop_scale}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ConfigError(f"{where}.crop_ratio: expected 0 < low <= high, got {self.crop_ratio}")
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ConfigError(f"{where}.blur_sigma: expected 0 < low <= high, got {self.blur_sigma}")
        if not 0 < self.erase_scale[0] <= self.erase_scale[1] < 1:
            raise ConfigError(f"{where}.erase_scale: expected 0 < low <= high < 1, got {self.erase_scale}")
        if self.hue > 0.5:
            raise ConfigError(f"{where}.hue: must lie in [0, 0.5], got {self.hue}")

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AugmentPreset:
    """Augmentations that fit one kind of image: MSD's training ``views`` and the scenario ``levels``
    ("weak", "strong") of ``metakd robustness``."""

    name: str
    description: str
    views: AugmentStrengths
    levels: Mapping[str, AugmentStrengths]

    def as_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "description": self.description, "views": self.views.as_dict(),
                "levels": {k: v.as_dict() for k, v in self.levels.items()}}


_NO_STEPS = {k: 0.0 for k in PROBABILITIES}
# Outside every preset's views: pixel noise on every image, and an occluding rectangle on half of them.
_OOD = AugmentStrengths(**{**_NO_STEPS, "brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0, "noise_p": 1.0,
                            "noise_std": 0.15, "erase_p": 0.5, "erase_scale": (0.04, 0.15)})

# Natural images. Views: the paper's five (AugmentStrengths() defaults). Scenario, weak: mild crops,
# small rotations, light jitter and blur; strong: crops down to 35% of the area, rotations up to ±35°,
# heavy jitter, frequent 5×5 blur. Both flip with p 0.5.
NATURAL = AugmentPreset(
    "natural", "photos: random resized crop, colour jitter, grayscale, gaussian blur, horizontal flip",
    views=AugmentStrengths(),
    levels={
        "weak": AugmentStrengths(crop_p=1.0, crop_scale=(0.8, 1.0), crop_ratio=(0.9, 1.1), rotation_p=0.5,
                                 rotation_degrees=10.0, jitter_p=0.5, brightness=0.2, contrast=0.2, saturation=0.2,
                                 hue=0.05, grayscale_p=0.1, blur_p=0.2, blur_kernel=3, blur_sigma=(0.1, 0.5),
                                 flip_p=0.5),
        "strong": AugmentStrengths(crop_p=1.0, crop_scale=(0.35, 1.0), crop_ratio=(0.75, 1.333), rotation_p=1.0,
                                   rotation_degrees=35.0, jitter_p=0.9, brightness=0.6, contrast=0.6, saturation=0.6,
                                   hue=0.15, grayscale_p=0.3, blur_p=0.5, blur_kernel=5, blur_sigma=(0.5, 1.5),
                                   flip_p=0.5),
        OOD: _OOD,
    })

# Glyphs and Omniglot-like strokes. No flip (a mirrored glyph is often another character), no
# brightness, saturation, hue or grayscale; contrast only (ColorJitter with every other factor 0), small
# crops and rotations (the glyphs are drawn with rotations up to ±15° already), a 3×3 blur that keeps
# the strokes.
GLYPH = AugmentPreset(
    "glyph", "glyphs/strokes: small crop and rotation, contrast, 3x3 blur; no flip, no colour",
    views=replace(AugmentStrengths(**_NO_STEPS), crop_p=1.0, crop_scale=(0.8, 1.0), crop_ratio=(0.9, 1.1),
                  rotation_p=0.5, rotation_degrees=10.0, jitter_p=0.5, brightness=0.0, contrast=0.3,
                  saturation=0.0, hue=0.0, blur_p=0.3, blur_kernel=3, blur_sigma=(0.1, 0.6)),
    levels={
        "weak": replace(AugmentStrengths(**_NO_STEPS), crop_p=1.0, crop_scale=(0.85, 1.0), crop_ratio=(0.9, 1.1),
                        rotation_p=0.5, rotation_degrees=8.0, jitter_p=0.5, brightness=0.0, contrast=0.2,
                        saturation=0.0, hue=0.0, blur_p=0.2, blur_kernel=3, blur_sigma=(0.1, 0.5)),
        "strong": replace(AugmentStrengths(**_NO_STEPS), crop_p=1.0, crop_scale=(0.6, 1.0), crop_ratio=(0.8, 1.25),
                          rotation_p=1.0, rotation_degrees=20.0, jitter_p=0.9, brightness=0.0, contrast=0.5,
                          saturation=0.0, hue=0.0, blur_p=0.5, blur_kernel=3, blur_sigma=(0.5, 1.0)),
        OOD: _OOD,
    })

PRESETS: Dict[str, AugmentPreset] = {p.name: p for p in (NATURAL, GLYPH)}
DEFAULT_PRESET = "natural"

# The natural preset's scenario levels (the name predates the presets).
SCENARIO_LEVELS: Dict[str, AugmentStrengths] = NATURAL.levels  # type: ignore[assignment]


def get_preset(preset: Union[None, str, AugmentPreset], where: str = "augment_preset") -> AugmentPreset:
    """The preset of that name (None: "natural"); ConfigError naming ``where`` for an unknown name."""
    if isinstance(preset, AugmentPreset):
        return preset
    if preset is None:
        return PRESETS[DEFAULT_PRESET]
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ConfigError(f"{where}: expected one of {', '.join(PRESETS)}, got {preset!r}")
    return PRESETS[preset]


def batch_preset(batch, override: Union[None, str, AugmentPreset] = None) -> AugmentPreset:
    """``override`` when given, else the preset the EpisodeBatch carries (its data's), else "natural"."""
    return get_preset(override if override is not None else getattr(batch, "augment_preset", None))


def _pipeline(strengths: AugmentStrengths, size: Tuple[int, int], channels: int):
    import kornia.augmentation as K

    s = strengths
    steps = []
    if s.crop_p > 0:
        steps.append(K.RandomResizedCrop(size, scale=s.crop_scale, ratio=s.crop_ratio, p=s.crop_p))
    if s.rotation_p > 0 and s.rotation_degrees > 0:
        steps.append(K.RandomRotation(s.rotation_degrees, p=s.rotation_p))
    color = channels == 3
    if s.jitter_p > 0:
        sat, hue = (s.saturation, s.hue) if color else (0.0, 0.0)
        if s.brightness or s.contrast or sat or hue:
            steps.append(K.ColorJitter(s.brightness, s.contrast, sat, hue, p=s.jitter_p))
    if color and s.grayscale_p > 0:
        steps.append(K.RandomGrayscale(p=s.grayscale_p))
    if s.blur_p > 0:
        steps.append(K.RandomGaussianBlur((s.blur_kernel, s.blur_kernel), s.blur_sigma, p=s.blur_p))
    if s.flip_p > 0:
        steps.append(K.RandomHorizontalFlip(p=s.flip_p))
    if s.noise_p > 0 and s.noise_std > 0:
        steps.append(K.RandomGaussianNoise(mean=0.0, std=s.noise_std, p=s.noise_p))
    if s.erase_p > 0:
        steps.append(K.RandomErasing(scale=s.erase_scale, value=0.0, p=s.erase_p))
    return steps


def draw_seed(generator: Optional[torch.Generator] = None) -> int:
    """A 63-bit seed from ``generator`` (or the global torch RNG)."""
    return int(torch.randint(0, 2 ** 63 - 1, (1,), generator=generator).item())


def _stats(x: Tensor, values: Stats) -> Optional[Tensor]:
    if values is None:
        return None
    t = torch.as_tensor(values, dtype=x.dtype, device=x.device).flatten()
    if t.numel() not in (1, x.shape[-3]):
        raise DataError(f"augment: mean/std need 1 or {x.shape[-3]} values (channels), got {t.numel()}")
    return t.view(-1, 1, 1)


def augment_images(x: Tensor, strengths: AugmentStrengths, seed: int, mean: Stats = None, std: Stats = None) -> Tensor:
    """Augment images x (..., C, H, W) with an independent random draw per image; same shape and dtype.

    The draws are a function of ``seed`` (global RNG untouched). Identity strengths return x itself.
    """
    if x.dim() < 4:
        raise DataError(f"augment: expected images (..., C, H, W), got shape {tuple(x.shape)}")
    if strengths.is_identity:
        return x
    c, h, w = x.shape[-3:]
    if c not in (1, 3):
        raise DataError(f"augment: images must have 1 or 3 channels, got {c}")
    steps = _pipeline(strengths, (h, w), c)
    if not steps:
        return x
    import kornia.augmentation as K

    flat = x.reshape(-1, c, h, w)
    m, s = _stats(x, mean), _stats(x, std)
    if m is not None and s is not None:
        flat = flat * s + m
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        out = K.AugmentationSequential(*steps)(flat).clamp_(0.0, 1.0)
    if m is not None and s is not None:
        out = (out - m) / s
    return out.reshape(x.shape).to(x.dtype)


def augment_views(x: Tensor, n_views: int, strengths: AugmentStrengths, *, seed: Optional[int] = None,
                  generator: Optional[torch.Generator] = None, mean: Stats = None, std: Stats = None) -> Tensor:
    """n augmented views of x (..., C, H, W) -> (n_views, ..., C, H, W), one kornia call for all of them.

    seed: the draws' seed (default: one drawn from ``generator`` / the global torch RNG).
    """
    positive_int(n_views, "n_views", source="augment_views")
    views = x.unsqueeze(0).expand(n_views, *x.shape)
    if strengths.is_identity:
        return views
    if seed is None:
        seed = draw_seed(generator)
    return augment_images(views.contiguous(), strengths, seed, mean, std)


def episode_seed(seed: int, index: int, tag: str) -> int:
    """A 63-bit seed for episode ``index`` of a scenario: a hash of (seed, index, tag), stable everywhere."""
    digest = hashlib.sha256(f"metakd-augment-v1:{int(seed)}:{int(index)}:{tag}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def perturb_episodes(x: Tensor, indices: Sequence[int], level: Union[str, AugmentStrengths], seed: int, tag: str,
                     mean: Stats = None, std: Stats = None, preset: Union[None, str, AugmentPreset] = None) -> Tensor:
    """Perturb the images x (T, S, C, H, W) of T episodes; episode t uses the seed of ``indices[t]``.

    tag separates streams (e.g. "support" and "query" of one episode draw differently). A level name
    is one of ``preset``'s levels (default "natural").
    """
    strengths = level if isinstance(level, AugmentStrengths) else scenario_strengths(level, preset)
    if x.dim() != 5 or len(indices) != x.shape[0]:
        raise DataError(f"perturb_episodes: expected x (T, S, C, H, W) and T indices, got {tuple(x.shape)} and "
                        f"{len(indices)} indices")
    return torch.stack([augment_images(x[t], strengths, episode_seed(seed, i, tag), mean, std)
                        for t, i in enumerate(indices)])


def scenario_strengths(level: str, preset: Union[None, str, AugmentPreset] = None) -> AugmentStrengths:
    """The strengths of scenario ``level`` ("weak" / "strong") in ``preset`` (default "natural")."""
    p = get_preset(preset, "scenario preset")
    if level not in p.levels:
        raise ConfigError(f"scenario level must be one of {', '.join(p.levels)}, got {level!r}")
    return p.levels[level]


def perturb_batch(batch, indices: Sequence[int], level: str, side: str, seed: int = 0,
                  mean: Stats = None, std: Stats = None, preset: Union[None, str, AugmentPreset] = None):
    """A copy of EpisodeBatch ``batch`` whose support and/or query images are perturbed (side: support,
    query, both); ``indices`` are the episodes' positions in the fixed list (their seeds).

    preset: whose ``level`` to apply; default the batch's ``augment_preset`` (its data's), else "natural".
    mean, std: the images' normalisation; default the batch's ``mean``/``std``.
    """
    if side not in SIDES:
        raise ConfigError(f"scenario side must be one of {', '.join(SIDES)}, got {side!r}")
    p = batch_preset(batch, preset)
    if mean is None and std is None:
        mean, std = batch.mean, batch.std
    sx, qx = batch.support_x, batch.query_x
    tag = f"{level}"
    if side in ("support", "both"):
        sx = perturb_episodes(sx, indices, level, seed, tag + ":support", mean, std, p)
    if side in ("query", "both"):
        qx = perturb_episodes(qx, indices, level, seed, tag + ":query", mean, std, p)
    return replace(batch, support_x=sx, query_x=qx)
