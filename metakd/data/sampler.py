"""N-way K-shot Q-query episodes from an ImageSplit, built as float tensors on the target device.

Randomness (the same on every machine):
  each episode is drawn from one 64-bit key. Training keys come from the sampler's own PCG64
  generator (``state_dict`` captures it for resume); evaluation keys come from a PCG64 seeded with
  ``SeedSequence([seed, N, K, Q])``. Only SeedSequence and the raw PCG64 bit stream are used (numpy
  documents that Generator methods may change their streams between versions; the bit generator
  algorithms are fixed). A key is expanded into draws by SplitMix64 on uint64 integers, and
  classes/images are picked by a partial Fisher-Yates shuffle on those draws (bias of ``draw % n``
  is below n / 2**64); no floating point is involved. An episode therefore depends only
  on its key, N, K, Q and the split's labels: grouping episodes into meta-batches does not change them,
  and ``fixed_episodes(600)`` is the first 600 of ``fixed_episodes(2000)``.

Layout: within an episode, support rows are class-major (K images of label 0, then K of label 1, ...);
query rows likewise (Q per label). Label order is random per episode: label i is dataset class
``classes[i]``, a uniformly random ordered choice of N classes.
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..validate import int_at_least
from ..errors import ConfigError, DataError
from .augment import DEFAULT_PRESET, get_preset
from .base import ImageSplit
from .episode import EpisodeBatch

STATE_VERSION = 1

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)

Normalize = Union[None, str, Tuple[Sequence[float], Sequence[float]]]


@dataclass(frozen=True, eq=False)
class Episode:
    """Image rows of one episode: label i is dataset class ``classes[i]``.

    classes: int64 (N,); support: int64 (N, K); query: int64 (N, Q); row i holds images of classes[i].
    """

    classes: np.ndarray
    support: np.ndarray
    query: np.ndarray

    @property
    def n_way(self) -> int:
        return int(self.support.shape[0])

    @property
    def k_shot(self) -> int:
        return int(self.support.shape[1])

    @property
    def q_query(self) -> int:
        return int(self.query.shape[1])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Episode):
            return NotImplemented
        return (np.array_equal(self.classes, other.classes) and np.array_equal(self.support, other.support)
                and np.array_equal(self.query, other.query))


class RawEpisodes(NamedTuple):
    """A meta-batch as uint8 pixels (what travels between processes and devices; 4x lighter than float).

    support: uint8 (T, N*K, H, W, C); query: uint8 (T, N*Q, H, W, C); classes: int64 (T, N).
    """

    support: torch.Tensor
    query: torch.Tensor
    classes: torch.Tensor


# ---------------------------------------------------------------------------------------------- randomness


def _mix(keys: np.ndarray, counters: np.ndarray) -> np.ndarray:
    """SplitMix64 output number ``counter`` of the stream ``key`` (uint64, elementwise)."""
    with np.errstate(over="ignore"):
        z = keys + (counters.astype(np.uint64) + np.uint64(1)) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def _shuffle_prefix(keys: np.ndarray, counter0: np.ndarray, n: np.ndarray, m: int) -> np.ndarray:
    """First m entries of a Fisher-Yates shuffle of range(n[r]), for every row r at once.

    keys: uint64 (R,); counter0: int64 (R,), draw j of row r is _mix(keys[r], counter0[r] + j);
    n: int64 (R,) with n >= m. Returns int64 (R, m) distinct positions per row. The shuffled array is
    never built: a row holds at most m displaced positions, kept in a small (R, m) table.
    """
    rows = np.arange(len(n))
    out = np.empty((len(n), m), dtype=np.int64)
    moved_pos = np.full((len(n), m), -1, dtype=np.int64)
    moved_val = np.zeros((len(n), m), dtype=np.int64)
    for j in range(m):
        span = (n - j).astype(np.uint64)
        r = j + (_mix(keys, counter0 + j) % span).astype(np.int64)
        hit_r = moved_pos == r[:, None]
        has_r = hit_r.any(axis=1)
        slot_r = hit_r.argmax(axis=1)
        hit_j = moved_pos == j
        val_j = np.where(hit_j.any(axis=1), moved_val[rows, hit_j.argmax(axis=1)], j)
        out[:, j] = np.where(has_r, moved_val[rows, slot_r], r)
        slot = np.where(has_r, slot_r, j)  # slot j is still free at step j
        moved_pos[rows, slot] = r
        moved_val[rows, slot] = val_j
    return out


def fixed_keys(num: int, seed: int, n_way: int, k_shot: int, q_query: int) -> np.ndarray:
    """The episode keys of the evaluation list: uint64 (num,), a prefix-stable function of the arguments."""
    bits = np.random.PCG64(np.random.SeedSequence([seed, n_way, k_shot, q_query]))
    return np.asarray(bits.random_raw(num), dtype=np.uint64)


def episodes_fingerprint(episodes: Sequence[Episode]) -> str:
    """sha256 (hex) of the episodes' class and image-row arrays: equal iff two runs used identical tasks."""
    if len(episodes) == 0:
        raise DataError("episodes_fingerprint: expected at least one episode, got an empty list")
    classes, support, query = stack_episodes(episodes)
    h = hashlib.sha256(b"metakd-episodes-v1")
    h.update(np.asarray(classes.shape + support.shape[2:] + query.shape[2:], dtype="<i8").tobytes())
    for a in (classes, support, query):
        h.update(np.ascontiguousarray(a, dtype="<i8").tobytes())
    return h.hexdigest()


def stack_episodes(episodes: Sequence[Episode]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(classes (T, N), support (T, N, K), query (T, N, Q)) int64; DataError if the episodes differ in N/K/Q."""
    if len(episodes) == 0:
        raise DataError("expected at least one episode, got an empty list")
    first = episodes[0]
    for i, e in enumerate(episodes):
        if not isinstance(e, Episode):
            raise DataError(f"episode {i}: expected an Episode, got {type(e).__name__}")
        if e.support.shape != first.support.shape or e.query.shape != first.query.shape:
            raise DataError(
                f"episode {i} is {e.n_way}-way {e.k_shot}-shot {e.q_query}-query, but episode 0 is "
                f"{first.n_way}-way {first.k_shot}-shot {first.q_query}-query: a meta-batch needs one shape"
            )
    return (np.stack([e.classes for e in episodes]), np.stack([e.support for e in episodes]),
            np.stack([e.query for e in episodes]))


# ---------------------------------------------------------------------------------------------- pixels


def channel_stats(split: ImageSplit, max_images: int = 10_000) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Per-channel (mean, std) of a split on the [0, 1] scale, from at most ``max_images`` evenly spaced images.

    Computed exactly from integer pixel histograms, so the result is identical on every machine.
    """
    n = len(split)
    if n == 0:
        raise DataError(f"{split.source or split.name or 'split'}: cannot compute normalisation statistics of an empty split")
    m = min(n, int(max_images))
    idx = (np.arange(m, dtype=np.int64) * n) // m
    c = split.images.shape[-1]
    hist = np.zeros((c, 256), dtype=np.int64)
    for lo in range(0, m, 256):
        chunk = np.take(split.images, idx[lo:lo + 256], axis=0)
        for ch in range(c):
            hist[ch] += np.bincount(chunk[..., ch].ravel(), minlength=256)
    values = np.arange(256, dtype=np.int64)
    means, stds = [], []
    for ch in range(c):
        total = int(hist[ch].sum())
        s1 = int(hist[ch] @ values)
        s2 = int(hist[ch] @ (values * values))
        means.append(s1 / (255.0 * total))
        var = (s2 * total - s1 * s1) / float(total * total)  # exact integers until this division
        stds.append(max(var, 0.0) ** 0.5 / 255.0)
    return tuple(means), tuple(stds)


class ImageConverter:
    """uint8 (..., H, W, C) -> float (..., C, H, W) in [0, 1], optionally normalised per channel.

    It also names what ``make_batch`` records on the batches it converts: ``mean``/``std`` and the
    data's ``augment_preset`` (so batches built in DataLoader workers carry them too).

    The permute and the cast happen in one pass on whatever device the input lives on, so uint8 is
    what crosses to the GPU. CPU tensors go through numpy, whose strided uint8 -> float loop measured
    about 4x faster per core than torch's (and DataLoader workers run torch single-threaded anyway).
    Picklable (DataLoader workers use it).
    """

    def __init__(self, dtype: torch.dtype = torch.float32,
                 mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                 augment_preset: Optional[str] = None) -> None:
        self.dtype = dtype
        self.mean = None if mean is None else tuple(float(v) for v in mean)
        self.std = None if std is None else tuple(float(v) for v in std)
        self.augment_preset = augment_preset
        self._np_dtype = _NUMPY_FLOATS.get(dtype)
        self._affine: Dict[torch.device, Tuple[torch.Tensor, torch.Tensor]] = {}

    def from_numpy(self, images: np.ndarray) -> torch.Tensor:
        """float (N, C, H, W) of a uint8 (N, H, W, C) NumPy array (a read-only one is copied first)."""
        arr = np.ascontiguousarray(images)
        return self(torch.from_numpy(arr if arr.flags.writeable else arr.copy()))

    def __getstate__(self) -> dict:
        return {"dtype": self.dtype, "mean": self.mean, "std": self.std, "augment_preset": self.augment_preset}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["dtype"], state["mean"], state["std"], state.get("augment_preset"))

    def _scale_shift(self, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
        """x_float = x_uint8 * scale - shift, both (C, 1, 1) in the target dtype."""
        if device not in self._affine:
            std = torch.tensor(self.std, dtype=torch.float64)
            mean = torch.tensor(self.mean, dtype=torch.float64)
            scale = (1.0 / (255.0 * std)).view(-1, 1, 1)
            shift = (mean / std).view(-1, 1, 1)
            self._affine[device] = (scale.to(device, self.dtype), shift.to(device, self.dtype))
        return self._affine[device]

    def __call__(self, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        """shared: put a CPU result in shared memory (DataLoader workers: saves a copy on the way out)."""
        nd = x.dim()
        axes = (*range(nd - 3), nd - 1, nd - 3, nd - 2)
        if x.device.type == "cpu" and self._np_dtype is not None:
            src = x.numpy().transpose(axes)
            result = torch.empty(src.shape, dtype=self.dtype)
            if shared:
                result.share_memory_()
            out = result.numpy()
            if self.mean is None:
                np.divide(src, self._np_dtype(255.0), out=out)
            else:
                scale, shift = (t.numpy() for t in self._scale_shift(x.device))
                np.multiply(src, scale, out=out)
                np.subtract(out, shift, out=out)
            return result
        out = x.permute(*axes).to(dtype=self.dtype, memory_format=torch.contiguous_format)
        if self.mean is None:
            return out.div_(255.0)
        scale, shift = self._scale_shift(out.device)
        return out.mul_(scale).sub_(shift)


_NUMPY_FLOATS = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}


def _readonly_tensor(a: np.ndarray) -> torch.Tensor:
    """torch view of a possibly read-only array (memory maps); metakd only ever reads it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not writable.*")
        return torch.from_numpy(a)


def gather_host(images: np.ndarray, episodes: Sequence[Episode], shared: bool = False) -> RawEpisodes:
    """Gather a meta-batch's uint8 pixels from host memory (array or memory map) into CPU tensors.

    shared: write them straight into shared memory (DataLoader workers).
    """
    classes, support, query = stack_episodes(episodes)
    t = len(episodes)
    hi = max(int(support.max()), int(query.max()))
    lo = min(int(support.min()), int(query.min()))
    if lo < 0 or hi >= images.shape[0]:
        raise DataError(f"episode image rows must lie in 0..{images.shape[0] - 1}, got {lo}..{hi}: "
                        "were these episodes drawn from another split?")
    if not shared:
        sx = torch.from_numpy(np.asarray(images[support.reshape(t, -1)]))
        qx = torch.from_numpy(np.asarray(images[query.reshape(t, -1)]))
        return RawEpisodes(sx, qx, torch.from_numpy(classes))
    out = []
    for rows in (support.reshape(t, -1), query.reshape(t, -1)):
        x = torch.empty(rows.shape + tuple(images.shape[1:]), dtype=torch.uint8).share_memory_()
        np.take(images, rows, axis=0, out=x.numpy())
        out.append(x)
    return RawEpisodes(out[0], out[1], torch.from_numpy(classes))


def make_batch(raw: RawEpisodes, convert: ImageConverter, device: Optional[torch.device] = None,
               shared: bool = False) -> EpisodeBatch:
    """EpisodeBatch on ``device`` (default: where ``raw`` lives): uint8 moves first, then becomes float.

    shared: CPU image tensors are allocated in shared memory (DataLoader workers). The batch carries
    the converter's normalisation (``mean``/``std``) and ``augment_preset``.
    """
    device = raw.support.device if device is None else torch.device(device)
    pinned = device.type == "cuda" and raw.support.device.type == "cpu" and raw.support.is_pinned()
    t, n = raw.classes.shape
    k = raw.support.shape[1] // n
    q = raw.query.shape[1] // n
    labels = torch.arange(n, device=device)
    return EpisodeBatch(
        support_x=convert(raw.support.to(device, non_blocking=pinned), shared),
        support_y=labels.repeat_interleave(k).expand(t, -1).contiguous(),
        query_x=convert(raw.query.to(device, non_blocking=pinned), shared),
        query_y=labels.repeat_interleave(q).expand(t, -1).contiguous(),
        n_way=n, k_shot=k, q_query=q,
        classes=raw.classes.to(device, non_blocking=pinned),
        augment_preset=getattr(convert, "augment_preset", None),
        mean=getattr(convert, "mean", None), std=getattr(convert, "std", None),
    )


# ---------------------------------------------------------------------------------------------- sampler


def require_int(value: object, key: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; ConfigError naming ``key`` otherwise (bools refused)."""
    return int_at_least(value, key, minimum)


class EpisodeSampler:
    """Draws N-way K-shot Q-query episodes from one split and builds them as EpisodeBatch tensors.

    split: the ImageSplit (images uint8 (M, H, W, C), may be a memory map).
    n_way, k_shot, q_query: integers >= 1 (a query set is required: it is what the outer loop and
        evaluation score, so Q = 0 is refused).
    seed: seeds the training stream (``sample``); evaluation episodes use their own seed.
    skip_small_classes: classes with fewer than K+Q images are an error by default; True leaves them out.
        None (the default): the split's ``meta["skip_small_classes"]``, which ``load_split`` sets from the
        dataset option of that name (``data.options.skip_small_classes`` in a config), else False.
    device: where batches are built. storage: "host" gathers with numpy from the split (memory maps
        stay on disk) and sends uint8 to the device; "device" first copies the whole split to the
        device as a uint8 tensor and gathers there (fastest on a GPU when the split fits).
    normalize: None (pixels in [0, 1]), "dataset" (per-channel mean/std of this split, see
        channel_stats), or (mean, std) per channel on the [0, 1] scale, e.g. a training split's stats.
    dtype: floating dtype of the image tensors.
    augment_preset: the augmentation preset ("natural" or "glyph", ``metakd.data.augment.PRESETS``) put on
        every batch, with the normalisation (``EpisodeBatch.augment_preset``, ``.mean``, ``.std``), for MSD's
        views and the augmented test scenario. None (the default): the split's ``meta["augment_preset"]``,
        which ``load_split`` sets (a default per dataset, or ``data.options.augment_preset``), else "natural".
    """

    def __init__(self, split: ImageSplit, n_way: int, k_shot: int, q_query: int = 15, *, seed: int = 0,
                 skip_small_classes: Optional[bool] = None, device: Union[str, torch.device] = "cpu",
                 storage: str = "host", normalize: Normalize = None, dtype: torch.dtype = torch.float32,
                 augment_preset: Optional[str] = None) -> None:
        if not isinstance(split, ImageSplit):
            raise ConfigError(f"split must be a metakd.data.base.ImageSplit, got {type(split).__name__}")
        self.split = split
        self.n_way = require_int(n_way, "n_way")
        self.k_shot = require_int(k_shot, "k_shot")
        self.q_query = require_int(q_query, "q_query")
        self.seed = require_int(seed, "seed", minimum=0)
        if storage not in ("host", "device"):
            raise ConfigError(f"storage must be 'host' or 'device', got {storage!r}")
        self.storage = storage
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ConfigError(f"dtype must be a floating torch dtype such as torch.float32, got {dtype!r}")
        self.dtype = dtype
        self.device = self._check_device(device)
        if skip_small_classes is None:
            skip_small_classes = split.meta.get("skip_small_classes", False)
        self._select_classes(bool(skip_small_classes))
        self.mean, self.std = self._resolve_normalize(normalize)
        if augment_preset is None:
            augment_preset = split.meta.get("augment_preset", DEFAULT_PRESET)
        self.augment_preset = get_preset(augment_preset, f"{self._where}: augment_preset").name
        self.converter = ImageConverter(dtype, self.mean, self.std, self.augment_preset)
        self._rng = np.random.Generator(np.random.PCG64(self.seed))
        self._stored: Optional[torch.Tensor] = None
        if storage == "device":
            self._stored = self._copy_to_device()

    # -- construction helpers

    @property
    def _where(self) -> str:
        s = self.split
        return f"split {s.name!r} ({s.source})" if s.name and s.source else f"split {s.name or s.source or '<unnamed>'!r}"

    @property
    def _request(self) -> str:
        return f"{self.n_way}-way {self.k_shot}-shot {self.q_query}-query"

    @staticmethod
    def _check_device(device: Union[str, torch.device]) -> torch.device:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise ConfigError(f"device must be a torch device such as 'cpu' or 'cuda:0', got {device!r}") from err
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available")
        return dev

    def _select_classes(self, skip_small: bool) -> None:
        need = self.k_shot + self.q_query
        counts = np.bincount(self.split.labels, minlength=self.split.num_classes)
        small = np.flatnonzero(counts < need)
        self.skipped: Dict[str, int] = {}
        if len(small) and not skip_small:
            shown = ", ".join(f"{self.split.class_names[c]!r} has {counts[c]}" for c in small[:5])
            more = f" and {len(small) - 5} more" if len(small) > 5 else ""
            raise DataError(
                f"{self._where}: {self._request} episodes need {need} images per class "
                f"(k_shot {self.k_shot} + q_query {self.q_query}), but class {shown}{more} "
                f"({len(small)} of {len(counts)} classes too small). To leave them out, set "
                "data.options.skip_small_classes=true in the config (or pass skip_small_classes=True to "
                "EpisodeSampler or load_split)."
            )
        if skip_small:
            self.skipped = {self.split.class_names[c]: int(counts[c]) for c in small}
        self.classes = np.flatnonzero(counts >= need).astype(np.int64)
        if len(self.classes) < self.n_way:
            why = (f"only {len(self.classes)} of its {len(counts)} classes have >= {need} images"
                   if len(small) else f"it has {len(counts)} classes")
            raise DataError(f"{self._where}: {self._request} episodes need {self.n_way} classes, but {why}")
        self._order = np.argsort(self.split.labels, kind="stable")
        self._start = (np.cumsum(counts) - counts)[self.classes]
        self._count = counts[self.classes]

    def _resolve_normalize(self, normalize: Normalize):
        c = self.split.image_shape[-1]
        if normalize is None:
            return None, None
        if isinstance(normalize, str):
            if normalize != "dataset":
                raise ConfigError(f"normalize must be None, 'dataset' or (mean, std), got {normalize!r}")
            return channel_stats(self.split)
        try:
            mean, std = normalize
            mean = [float(v) for v in np.broadcast_to(np.asarray(mean, dtype=np.float64), (c,))]
            std = [float(v) for v in np.broadcast_to(np.asarray(std, dtype=np.float64), (c,))]
        except (TypeError, ValueError) as err:
            raise ConfigError(
                f"normalize must be None, 'dataset' or (mean, std) with 1 or {c} values each, got {normalize!r}"
            ) from err
        if not all(s > 0 for s in std) or not all(np.isfinite(mean + std)):
            raise ConfigError(f"normalize std must be > 0 and values finite, got mean {mean}, std {std}")
        if max(abs(v) for v in mean + std) > 1.0:
            raise ConfigError(
                f"normalize (mean, std) are on the [0, 1] pixel scale, got mean {mean}, std {std} "
                "(divide 0..255 statistics by 255)"
            )
        return tuple(mean), tuple(std)

    def _copy_to_device(self) -> torch.Tensor:
        images = self.split.images
        out = torch.empty(images.shape, dtype=torch.uint8, device=self.device)
        step = max(1, (256 << 20) // max(1, int(np.prod(images.shape[1:]))))  # ~256 MiB at a time
        for lo in range(0, images.shape[0], step):
            out[lo:lo + step].copy_(_readonly_tensor(np.ascontiguousarray(images[lo:lo + step])))
        return out

    # -- episodes

    def _draw(self, keys: np.ndarray) -> List[Episode]:
        """Episodes for the given uint64 keys (T,): classes (T, N), rows (T, N, K+Q), vectorised over T and N."""
        t, n, m = len(keys), self.n_way, self.k_shot + self.q_query
        cpos = _shuffle_prefix(keys, np.zeros(t, np.int64), np.full(t, len(self.classes), np.int64), n)
        slot = np.tile(np.arange(n, dtype=np.int64), t)
        flat = cpos.ravel()
        ipos = _shuffle_prefix(np.repeat(keys, n), n + slot * m, self._count[flat], m)
        rows = self._order[self._start[flat][:, None] + ipos].reshape(t, n, m)
        classes = self.classes[cpos]
        out = []
        for i in range(t):
            arrays = (classes[i], rows[i, :, :self.k_shot], rows[i, :, self.k_shot:])
            for a in arrays:
                a.flags.writeable = False
            out.append(Episode(*arrays))
        return out

    def sample_episodes(self, num_tasks: int) -> List[Episode]:
        """The next ``num_tasks`` training episodes from the seeded stream (advances it)."""
        num_tasks = require_int(num_tasks, "num_tasks")
        return self._draw(np.asarray(self._rng.bit_generator.random_raw(num_tasks), dtype=np.uint64))

    def fixed_episodes(self, num: int = 600, seed: int = 0) -> List[Episode]:
        """A fixed evaluation list, a function of (seed, N, K, Q, split labels) only: the same for every
        run, machine and sampler instance, and a prefix of any longer list with the same seed."""
        num = require_int(num, "num")
        seed = require_int(seed, "seed", minimum=0)
        return self._draw(fixed_keys(num, seed, self.n_way, self.k_shot, self.q_query))

    # -- tensors

    def gather(self, episodes: Sequence[Episode]) -> RawEpisodes:
        """uint8 pixels of a meta-batch, on the storage device (host memory or ``device``)."""
        if self._stored is None:
            return gather_host(self.split.images, episodes)
        classes, support, query = stack_episodes(episodes)
        t = len(episodes)
        hi = max(int(support.max()), int(query.max()))
        if min(int(support.min()), int(query.min())) < 0 or hi >= self._stored.shape[0]:
            raise DataError(f"episode image rows must lie in 0..{self._stored.shape[0] - 1}, got up to {hi}: "
                            "were these episodes drawn from another split?")
        idx = np.concatenate([support.reshape(t, -1), query.reshape(t, -1)], axis=1)
        if self._stored.device.type == "cpu":  # numpy fancy indexing copies rows faster than index_select here
            x = torch.from_numpy(self._stored.numpy()[idx])
        else:
            x = self._stored.index_select(0, torch.from_numpy(idx).to(self.device).view(-1))
            x = x.view(t, idx.shape[1], *self._stored.shape[1:])
        nk = support.shape[1] * support.shape[2]
        return RawEpisodes(x[:, :nk], x[:, nk:], torch.from_numpy(classes).to(self.device))

    def to_batch(self, raw: RawEpisodes, device: Optional[Union[str, torch.device]] = None) -> EpisodeBatch:
        """Move uint8 ``raw`` to ``device`` (default: the sampler's) and convert it to a float EpisodeBatch."""
        return make_batch(raw, self.converter, self.device if device is None else device)

    def batch(self, episodes: Sequence[Episode]) -> EpisodeBatch:
        """EpisodeBatch of the given episodes (e.g. a slice of ``fixed_episodes``), on the sampler's device."""
        return self.to_batch(self.gather(episodes))

    def sample(self, num_tasks: int) -> EpisodeBatch:
        """A training meta-batch of ``num_tasks`` fresh episodes: support_x (T, N*K, C, H, W) etc."""
        return self.batch(self.sample_episodes(num_tasks))

    def iter_fixed(self, num: int = 600, seed: int = 0, batch_size: int = 1) -> Iterator[EpisodeBatch]:
        """The fixed evaluation episodes as consecutive EpisodeBatch of ``batch_size`` tasks."""
        batch_size = require_int(batch_size, "batch_size")
        episodes = self.fixed_episodes(num, seed)
        for lo in range(0, len(episodes), batch_size):
            yield self.batch(episodes[lo:lo + batch_size])

    # -- resume

    def state_dict(self) -> dict:
        """Exact position of the training stream (plain Python types; safe for torch.save or JSON)."""
        return {"version": STATE_VERSION, "n_way": self.n_way, "k_shot": self.k_shot, "q_query": self.q_query,
                "num_classes": int(len(self.classes)), "bit_generator": self._rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        """Restore a position saved by ``state_dict``: the next ``sample`` calls repeat the saved run's."""
        keys = ("version", "n_way", "k_shot", "q_query", "num_classes", "bit_generator")
        if not isinstance(state, dict) or any(k not in state for k in keys):
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ConfigError(f"sampler state must be a dict with keys {list(keys)}, got {got}")
        if state["version"] != STATE_VERSION:
            raise ConfigError(f"sampler state version {state['version']!r} is not supported (expected {STATE_VERSION})")
        mine = self.state_dict()
        for k in ("n_way", "k_shot", "q_query", "num_classes"):
            if state[k] != mine[k]:
                raise ConfigError(f"sampler state was saved with {k}={state[k]!r}, this sampler has {k}={mine[k]!r}")
        try:
            self._rng.bit_generator.state = state["bit_generator"]
        except (TypeError, ValueError, KeyError) as err:
            raise ConfigError(f"sampler state 'bit_generator' is not a PCG64 state: {err}") from err

    def summary(self) -> dict:
        """What the sampler serves, for logs and run records."""
        return {"split": self.split.name, "source": self.split.source, "n_way": self.n_way, "k_shot": self.k_shot,
                "q_query": self.q_query, "classes_used": int(len(self.classes)), "classes_skipped": dict(self.skipped),
                "normalize": None if self.mean is None else {"mean": list(self.mean), "std": list(self.std)},
                "augment_preset": self.augment_preset,
                "device": str(self.device), "storage": self.storage, "dtype": str(self.dtype).replace("torch.", "")}

    def __repr__(self) -> str:
        return (f"EpisodeSampler({self._where}, {self._request}, classes={len(self.classes)}, "
                f"device={self.device}, storage={self.storage!r})")
