"""Where the ``glyphs`` dataset's shapes come from: matplotlib's bundled fonts and the class catalog.

This file decides *which* characters become classes and *which* fonts draw them; ``glyphs.py``
turns a catalog into distorted images. The catalog depends only on the font files (and the
Unicode tables of this Python), never on image size or seed, so every configuration of the
dataset shares one class list and one train / val / test split.

Steps (deterministic: after FreeType's rasterizer, every decision is exact integer arithmetic):

1. Fonts: every ``*.ttf`` in ``matplotlib/mpl-data/fonts/ttf``. A font whose renders of many
   neighbouring codepoints are identical (a fallback font that draws one placeholder box per
   Unicode block, e.g. LastResort) is left out, with the reason recorded; so are STIX's
   size-variant fonts (STIXSiz*: wide accents and tall delimiters for math layout).
2. Which characters a font really has: a cmap entry counts only when the glyph's PostScript
   name (via the Adobe Glyph List in fontTools) agrees with the codepoint, unless the font's
   cmap is trustworthy overall (>= 90 % of names agree). Fonts with a TeX-encoded cmap
   (matplotlib's Computer Modern ``cm*.ttf``, where 0x21 may be "omega" or "parenrightBigg")
   contribute each glyph under the character its *name* denotes, when the name denotes one.
3. Characters: general category letter, number, punctuation or symbol (no whitespace,
   control, format, private-use or combining marks), with a non-near-empty render in at
   least ``MIN_FONTS`` fonts.
4. Homoglyphs: each (character, font) is rendered once as for a 28x28 image (em-relative size,
   ink box centred). Two characters whose renders are near-identical (relative squared
   distance <= 1.5 %) in at least half of the fonts they share (Latin A / Greek Alpha /
   Cyrillic A, Ohm / Omega, Braille patterns that differ only by position, ...) are joined; of
   each joined group only the character drawn by the most fonts (then the lowest codepoint) is
   kept. Letters that differ by an accent (e with circumflex / diaeresis) score 2.5-6 % and stay.
5. Splits: classes are ranked by a hash of their codepoint; the first 64 % are ``train``, the
   next 16 % ``val``, the rest ``test`` (the miniImageNet proportions 64/16/20).
"""
from __future__ import annotations

import hashlib
import math
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

CATALOG_VERSION = 1
ALLOWED_CATEGORIES = ("L", "N", "P", "S")  # letters, numbers, punctuation, symbols
MIN_FONTS = 8
TRUSTED_CMAP_FRACTION = 0.9
SPLIT_FRACTIONS: Dict[str, float] = {"train": 0.64, "val": 0.16, "test": 0.20}

# Placement, shared with the image generator: the em square is EM_FRACTION of the canvas side and
# a glyph larger than FIT_FRACTION of the side (either way) is scaled down to fit.
EM_FRACTION = 0.75
FIT_FRACTION = 0.8

# The catalog renders every (character, font) once as for a CATALOG_SIZE image (these renders are
# also the sources of CATALOG_SIZE images); comparisons use them placed in that square.
CATALOG_SIZE = 28
# A render is near-empty when its ink (sum / 255) is below this fraction of the em square or its
# ink box is under MIN_EXTENT_FRACTION of the em in both directions.
MIN_INK_FRACTION = 0.006
MIN_EXTENT_FRACTION = 0.08
# Two renders are near-identical when |a - b|^2 <= HOMOGLYPH_PERCENT/100 * (|a|^2 + |b|^2) on the
# CATALOG_SIZE renders (true cross-script homoglyphs score ~0; letters differing only by an accent
# score 2.5-6), after a first pass at half resolution with the looser PREFILTER_PERCENT.
HOMOGLYPH_PERCENT = 1.5
PREFILTER_PERCENT = 4.0
BOX_SLACK = 2  # renders whose ink boxes differ by more pixels than this (either way) are never compared
HOMOGLYPH_FONT_SHARE = 0.5  # ... in at least this fraction of the fonts both characters have.

# STIX's size-variant fonts redraw a few codepoints as wide accents and tall delimiters for math
# layout: not another design of the character, so they are left out.
SIZE_VARIANT_PREFIXES = ("STIXSiz",)

# Placeholder test: runs of consecutive codepoints; a font where most renders repeat the previous
# codepoint's render draws placeholders, not characters.
PLACEHOLDER_RUNS = 8
PLACEHOLDER_RUN_LENGTH = 16
PLACEHOLDER_REPEAT_FRACTION = 0.5


def font_dir() -> Path:
    """matplotlib's bundled TrueType folder (``mpl-data/fonts/ttf``)."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def font_files() -> List[Path]:
    """All bundled ``.ttf`` files, sorted by name."""
    return sorted(font_dir().glob("*.ttf"))


def open_font(path: Path):
    from matplotlib.ft2font import FT2Font

    return FT2Font(str(path))


def _named_char(name: str) -> Optional[int]:
    """The single codepoint a PostScript glyph name denotes (Adobe Glyph List), or None."""
    from fontTools.agl import toUnicode

    if name.startswith("uni") and len(name) == 7:
        try:
            return int(name[3:], 16)
        except ValueError:
            pass
    text = toUnicode(name)
    return ord(text) if len(text) == 1 else None


def allowed_codepoint(cp: int) -> bool:
    """Letters, numbers, punctuation and symbols only (no spaces, controls, marks, private use)."""
    return unicodedata.category(chr(cp))[0] in ALLOWED_CATEGORIES


def unicode_mapping(font) -> Dict[int, int]:
    """codepoint -> glyph index for the characters the font really draws (see module docstring, step 2)."""
    cmap: Dict[int, int] = font.get_charmap()
    if not cmap:
        return {}
    named = {gid: _named_char(font.get_glyph_name(gid)) for gid in set(cmap.values())}
    agree = sum(1 for cp, gid in cmap.items() if named.get(gid) == cp)
    trusted = agree >= TRUSTED_CMAP_FRACTION * len(cmap)
    mapping: Dict[int, int] = {}
    for cp, gid in sorted(cmap.items()):
        if gid == 0:
            continue
        if trusted or named.get(gid) == cp:
            mapping.setdefault(cp, gid)
    if not trusted:
        for cp, gid in sorted(cmap.items()):
            target = named.get(gid)
            if gid != 0 and target is not None:
                mapping.setdefault(target, gid)
    return {cp: gid for cp, gid in sorted(mapping.items()) if allowed_codepoint(cp)}


def _no_hinting_flag():
    from matplotlib import ft2font

    loadflags = getattr(ft2font, "LoadFlags", None)  # matplotlib >= 3.10
    return loadflags.NO_HINTING if loadflags is not None else ft2font.LOAD_NO_HINTING


def _draw(font, glyph, height: int, width: int, x: int, y: int) -> np.ndarray:
    """The glyph drawn with its bitmap's top-left corner at (x, y) of a zero (height, width) canvas: uint8."""
    canvas = np.zeros((height, width), np.uint8)
    try:
        font.draw_glyph_to_bitmap(canvas, x, y, glyph)  # matplotlib >= 3.10 draws into a NumPy array
        return canvas
    except TypeError:
        from matplotlib.ft2font import FT2Image  # older matplotlib draws into its own image type

        image = FT2Image(width, height)
        font.draw_glyph_to_bitmap(image, x, y, glyph)
        return np.array(image, dtype=np.uint8)


def rasterize(font, gids: Sequence[int], em_px: float, max_extent_px: float) -> List[np.ndarray]:
    """Render glyphs (by index) unhinted at ``em_px`` pixels per em, each cropped to its ink box.

    A glyph whose outline exceeds ``max_extent_px`` in width or height is rendered at a smaller
    size so that it fits. Returns uint8 arrays (h, w), 0 = background; (0, 0) for an empty glyph.
    """
    flags = _no_hinting_flag()
    out: List[np.ndarray] = []
    font.set_size(em_px, 72)
    current = em_px
    for gid in gids:
        if current != em_px:
            font.set_size(em_px, 72)
            current = em_px
        glyph = font.load_glyph(gid, flags=flags)
        x0, y0, x1, y1 = glyph.bbox
        extent = max(x1 - x0, y1 - y0) / 64.0
        if extent > max_extent_px:
            current = em_px * max_extent_px / extent
            font.set_size(current, 72)
            glyph = font.load_glyph(gid, flags=flags)
            x0, y0, x1, y1 = glyph.bbox
        left = math.floor(x0 / 64)
        height, width = math.ceil((y1 - y0) / 64) + 4, math.ceil(x1 / 64) - left + 4
        out.append(_crop(_draw(font, glyph, height, width, 2 - left, 2)))
        font.clear()
    return out


def _crop(img: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(img.any(axis=1))
    if rows.size == 0:
        return np.zeros((0, 0), np.uint8)
    cols = np.flatnonzero(img.any(axis=0))
    return np.ascontiguousarray(img[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])


def near_empty(bitmap: np.ndarray, em_px: float) -> bool:
    """True for a render with almost no ink (see MIN_INK_FRACTION, MIN_EXTENT_FRACTION)."""
    if bitmap.size == 0:
        return True
    ink = int(bitmap.sum(dtype=np.int64))
    small = max(bitmap.shape) < MIN_EXTENT_FRACTION * em_px
    return ink < MIN_INK_FRACTION * em_px * em_px * 255 or small


def feature_canvas(bitmap: np.ndarray) -> np.ndarray:
    """A render placed with its ink box centred (integer offset) in a CATALOG_SIZE square: uint8 (S, S)."""
    h, w = bitmap.shape
    canvas = np.zeros((CATALOG_SIZE, CATALOG_SIZE), np.uint8)
    top, left = (CATALOG_SIZE - h) // 2, (CATALOG_SIZE - w) // 2
    canvas[top : top + h, left : left + w] = bitmap
    return canvas


def near_identical(a: np.ndarray, b: np.ndarray, percent: float) -> np.ndarray:
    """Exact test |a - b|^2 <= percent/100 * (|a|^2 + |b|^2) for rows of two integer arrays (n, d)."""
    a = a.astype(np.int64)
    b = b.astype(np.int64)
    diff = ((a - b) ** 2).sum(axis=1)
    total = (a * a).sum(axis=1) + (b * b).sum(axis=1)
    return 100 * diff * 1000 <= round(percent * 1000) * total


def placeholder_reason(font, cmap: Optional[Dict[int, int]] = None) -> Optional[str]:
    """Why ``font`` is a placeholder (fallback) font, or None if it draws real, distinct characters.

    Renders PLACEHOLDER_RUNS runs of up to PLACEHOLDER_RUN_LENGTH consecutive letter/number
    codepoints spread over the cmap; if most renders equal the previous codepoint's render, the
    font draws one box per block rather than one glyph per character.
    """
    cmap = font.get_charmap() if cmap is None else cmap
    codes = sorted(cmap)
    if len(codes) < 2 * PLACEHOLDER_RUN_LENGTH:
        return None
    window = 4 * PLACEHOLDER_RUN_LENGTH
    starts = np.linspace(0, len(codes) - window, PLACEHOLDER_RUNS).astype(np.int64)
    em = 16.0
    repeats = total = 0
    for start in sorted(set(starts.tolist())):
        run = [cp for cp in codes[start : start + window] if unicodedata.category(chr(cp))[0] in ("L", "N")]
        renders = rasterize(font, [cmap[cp] for cp in run[:PLACEHOLDER_RUN_LENGTH]], em, 2 * em)
        for prev, cur in zip(renders, renders[1:]):
            total += 1
            repeats += prev.shape == cur.shape and bool(np.array_equal(prev, cur))
    if total and repeats >= PLACEHOLDER_REPEAT_FRACTION * total:
        return (
            f"placeholder font: {repeats} of {total} renders of consecutive codepoints are identical "
            f"(one box per block, not one glyph per character)"
        )
    return None


@dataclass
class GlyphClass:
    """One class: a character and the (font index, glyph index) pairs that draw it."""

    codepoint: int
    split: str
    fonts: List[int]
    glyphs: List[int]

    @property
    def name(self) -> str:
        return f"U+{self.codepoint:04X}"


@dataclass
class GlyphCatalog:
    """Every class of the dataset with its fonts, plus the fonts used and left out (with reasons)."""

    fonts: List[str]  # file names, indexed by GlyphClass.fonts
    classes: List[GlyphClass]
    excluded_fonts: Dict[str, str] = field(default_factory=dict)
    stats: Dict[str, int] = field(default_factory=dict)

    def split(self, name: str) -> List[GlyphClass]:
        return [c for c in self.classes if c.split == name]

    def to_json(self) -> dict:
        return {
            "version": CATALOG_VERSION,
            "fonts": self.fonts,
            "excluded_fonts": self.excluded_fonts,
            "stats": self.stats,
            "classes": [[c.codepoint, c.split, c.fonts, c.glyphs] for c in self.classes],
        }

    @classmethod
    def from_json(cls, obj: dict) -> "GlyphCatalog":
        """Inverse of to_json; raises ValueError/KeyError/TypeError on a malformed object."""
        if obj["version"] != CATALOG_VERSION:
            raise ValueError(f"catalog version {obj['version']!r}, expected {CATALOG_VERSION}")
        fonts = [str(f) for f in obj["fonts"]]
        classes = []
        for cp, split, fis, gids in obj["classes"]:
            if split not in SPLIT_FRACTIONS or len(fis) != len(gids) or not fis:
                raise ValueError(f"bad catalog entry for codepoint {cp!r}")
            if any(not 0 <= int(i) < len(fonts) for i in fis):
                raise ValueError(f"bad font index in catalog entry for codepoint {cp!r}")
            classes.append(GlyphClass(int(cp), split, [int(i) for i in fis], [int(g) for g in gids]))
        return cls(fonts, classes, {str(k): str(v) for k, v in obj["excluded_fonts"].items()}, dict(obj["stats"]))


def fonts_fingerprint(paths: Sequence[Path]) -> str:
    """sha256 over the names and bytes of the font files (part of every cache key)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _split_rank_key(cp: int) -> bytes:
    return hashlib.blake2b(f"metakd-glyphs-split/{cp}".encode(), digest_size=8).digest()


def assign_splits(codepoints: Sequence[int]) -> Dict[int, str]:
    """codepoint -> split, by rank of a fixed hash: first 64 % train, next 16 % val, rest test."""
    order = sorted(codepoints, key=_split_rank_key)
    n = len(order)
    n_train = round(SPLIT_FRACTIONS["train"] * n)
    n_val = round(SPLIT_FRACTIONS["val"] * n)
    return {cp: ("train" if i < n_train else "val" if i < n_train + n_val else "test") for i, cp in enumerate(order)}


_BLOCK = 512


def _near_pairs_in_font(canvases: np.ndarray, boxes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) of near-identical renders among canvases (n, S, S) of one font.

    Only renders whose ink boxes (boxes (n, 2): height, width) differ by at most BOX_SLACK pixels
    each way are compared. First pass: 2x2-reduced renders, Gram blocks in float32, which are
    exact here (integer entries below 2**24), with the loose PREFILTER_PERCENT. Second pass: the
    exact integer test with HOMOGLYPH_PERCENT on the full renders, for the survivors only.
    """
    n = canvases.shape[0]
    half = CATALOG_SIZE // 2
    small = canvases.reshape(n, half, 2, half, 2).sum(axis=(2, 4), dtype=np.int32)
    small = ((small + 2) // 4).reshape(n, -1).astype(np.float32)
    sq = np.einsum("ij,ij->i", small, small)
    factor = np.float32(1 - PREFILTER_PERCENT / 100)
    order = np.argsort(boxes[:, 0], kind="stable")  # by ink height: comparable renders form a band
    heights, widths, small, sq = boxes[order, 0], boxes[order, 1], small[order], sq[order]
    rows, cols = [], []
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        end = int(np.searchsorted(heights, heights[stop - 1] + BOX_SLACK, side="right"))
        gram = small[start:stop] @ small[start:end].T  # (b, end - start): sorted positions j >= start
        gram *= 2
        rhs = sq[start:stop, None] + sq[None, start:end]
        rhs *= factor
        near = gram >= rhs
        near &= np.abs(heights[start:stop, None] - heights[None, start:end]) <= BOX_SLACK
        near &= np.abs(widths[start:stop, None] - widths[None, start:end]) <= BOX_SLACK
        near &= np.arange(start, end)[None, :] > np.arange(start, stop)[:, None]  # each pair once
        bi, bj = np.nonzero(near)
        rows.append(order[bi + start])
        cols.append(order[bj + start])
    ii = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    jj = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    first, second = np.minimum(ii, jj), np.maximum(ii, jj)
    flat = canvases.reshape(n, -1)
    exact = near_identical(flat[first], flat[second], HOMOGLYPH_PERCENT)
    return first[exact], second[exact]


def _homoglyph_pairs(
    per_font: List[Tuple[np.ndarray, np.ndarray, np.ndarray]], members: np.ndarray
) -> List[Tuple[int, int]]:
    """Pairs (a < b) of characters near-identical in >= HOMOGLYPH_FONT_SHARE of the fonts both have.

    per_font[f] = (character indices (n,), canvases (n, S, S), ink boxes (n, 2)); members is bool
    (characters, fonts).
    """
    hits: Dict[Tuple[int, int], int] = {}
    for idx, canvases, boxes in per_font:
        if len(idx) < 2:
            continue
        ii, jj = _near_pairs_in_font(canvases, boxes)
        for a, b in zip(idx[ii].tolist(), idx[jj].tolist()):
            key = (a, b) if a < b else (b, a)
            hits[key] = hits.get(key, 0) + 1
    pairs = []
    for (a, b), count in sorted(hits.items()):
        shared = int(np.count_nonzero(members[a] & members[b]))
        if count >= HOMOGLYPH_FONT_SHARE * shared:
            pairs.append((a, b))
    return pairs


def _keep_one_per_group(n: int, pairs: List[Tuple[int, int]], priority: Sequence[Tuple]) -> List[bool]:
    """Union the pairs; in each group keep only the member with the smallest priority tuple."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    best: Dict[int, int] = {}
    for i in range(n):
        r = find(i)
        if r not in best or priority[i] < priority[best[r]]:
            best[r] = i
    keep = [False] * n
    for i in best.values():
        keep[i] = True
    return keep


Atlas = Dict[Tuple[int, int], np.ndarray]


def build_catalog(paths: Optional[Sequence[Path]] = None) -> Tuple[GlyphCatalog, Atlas]:
    """Run steps 1-5 of the module docstring over ``paths`` (default: all bundled fonts).

    Also returns the renders made on the way, {(catalog font index, glyph index): bitmap}: the
    glyph sources of CATALOG_SIZE images (em EM_FRACTION * CATALOG_SIZE, fit FIT_FRACTION).
    """
    paths = list(font_files() if paths is None else paths)
    excluded: Dict[str, str] = {}
    fonts, mappings = [], []
    for path in paths:
        if path.name.startswith(SIZE_VARIANT_PREFIXES):
            excluded[path.name] = "size-variant font for math layout (stretched accents, tall delimiters), not a typeface"
            continue
        font = open_font(path)
        reason = placeholder_reason(font)
        if reason:
            excluded[path.name] = reason
            continue
        mapping = unicode_mapping(font)
        if not mapping:
            excluded[path.name] = "no glyph whose name matches a letter, number, punctuation or symbol codepoint"
            continue
        fonts.append((path, font))
        mappings.append(mapping)

    counts: Dict[int, int] = {}
    for mapping in mappings:
        for cp in mapping:
            counts[cp] = counts.get(cp, 0) + 1
    candidates = sorted(cp for cp, c in counts.items() if c >= MIN_FONTS)
    index = {cp: i for i, cp in enumerate(candidates)}

    em = EM_FRACTION * CATALOG_SIZE
    members = np.zeros((len(candidates), len(fonts)), bool)
    per_font: List[Tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    kept: Atlas = {}
    empty_renders = 0
    for fi, ((path, font), mapping) in enumerate(zip(fonts, mappings)):
        cps = [cp for cp in candidates if cp in mapping]
        renders = rasterize(font, [mapping[cp] for cp in cps], em, FIT_FRACTION * CATALOG_SIZE)
        idx, canvases, boxes = [], [], []
        for cp, bitmap in zip(cps, renders):
            if near_empty(bitmap, em):
                empty_renders += 1
                continue
            kept[(fi, mapping[cp])] = bitmap
            idx.append(index[cp])
            canvases.append(feature_canvas(bitmap))
            boxes.append(bitmap.shape)
        members[idx, fi] = True
        shape = (len(canvases), CATALOG_SIZE, CATALOG_SIZE)
        per_font.append(
            (
                np.asarray(idx, np.int64),
                np.stack(canvases) if canvases else np.zeros(shape, np.uint8),
                np.asarray(boxes, np.int64).reshape(-1, 2),
            )
        )

    n_fonts = members.sum(axis=1)
    eligible = n_fonts >= MIN_FONTS
    pairs = [(a, b) for a, b in _homoglyph_pairs(per_font, members) if eligible[a] and eligible[b]]
    priority = [(-int(n_fonts[i]), candidates[i]) for i in range(len(candidates))]
    keep = _keep_one_per_group(len(candidates), pairs, priority)
    chosen = [i for i in range(len(candidates)) if eligible[i] and keep[i]]
    splits = assign_splits([candidates[i] for i in chosen])

    used = sorted({fi for i in chosen for fi in np.flatnonzero(members[i]).tolist()})
    remap = {fi: k for k, fi in enumerate(used)}
    for fi in range(len(fonts)):
        if fi not in remap:
            excluded[fonts[fi][0].name] = "none of its characters became a class"
    classes = []
    for i in sorted(chosen, key=lambda i: _split_rank_key(candidates[i])):
        cp = candidates[i]
        fis = np.flatnonzero(members[i]).tolist()
        classes.append(GlyphClass(cp, splits[cp], [remap[f] for f in fis], [mappings[f][cp] for f in fis]))
    stats = {
        "fonts_scanned": len(paths),
        "characters_in_some_font": len(counts),
        f"characters_in_{MIN_FONTS}_fonts": len(candidates),
        "near_empty_renders_dropped": empty_renders,
        "characters_with_too_few_nonempty_renders": int((~eligible).sum()),
        "homoglyph_pairs": len(pairs),
        "homoglyphs_dropped": int(eligible.sum()) - len(chosen),
        "classes": len(classes),
    }
    stats.update({f"classes_{s}": sum(1 for c in classes if c.split == s) for s in SPLIT_FRACTIONS})
    atlas = {(remap[fi], gid): bitmap for (fi, gid), bitmap in kept.items() if fi in remap}
    atlas = {(c.fonts[k], c.glyphs[k]): atlas[(c.fonts[k], c.glyphs[k])] for c in classes for k in range(len(c.fonts))}
    return GlyphCatalog([fonts[fi][0].name for fi in used], classes, excluded, stats), atlas
