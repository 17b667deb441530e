"""The built-in ``glyphs`` dataset: class counts, splits, determinism, cache, placeholder fonts, homoglyphs."""
from __future__ import annotations

import json
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from metakd.data import glyph_fonts, glyphs, load_split
from metakd.data.glyphs import load_glyphs
from metakd.errors import ConfigError
from metakd.registry import DATASETS

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="session")
def glyph_cache(tmp_path_factory) -> Path:
    """A cache folder holding the class catalog (built once per session, a few seconds)."""
    folder = tmp_path_factory.mktemp("glyph_cache")
    glyphs.glyph_catalog(folder)
    return folder


@pytest.fixture(scope="session")
def full28(glyph_cache):
    """All three splits at 28x28 with the default class count and 20 instances per class."""
    return {split: load_glyphs(None, split, image_size=28, cache_dir=glyph_cache) for split in SPLITS}


@pytest.fixture
def fresh_cache(glyph_cache, tmp_path) -> Path:
    """An empty cache folder seeded with the catalog only, so images are generated, not loaded."""
    folder = tmp_path / "cache"
    folder.mkdir()
    for f in glyph_cache.glob("catalog-*"):
        shutil.copy(f, folder / f.name)
    return folder


def test_default_class_count_splits_and_instances(full28):
    total = sum(s.num_classes for s in full28.values())
    assert total >= 1000
    names = {split: set(s.class_names) for split, s in full28.items()}
    assert not names["train"] & names["val"] and not names["train"] & names["test"] and not names["val"] & names["test"]
    for split, fraction in glyph_fonts.SPLIT_FRACTIONS.items():
        assert abs(full28[split].num_classes / total - fraction) < 0.01
    for s in full28.values():
        assert s.images.shape[1:] == (28, 28, 1) and s.images.dtype == np.uint8
        counts = np.bincount(s.labels, minlength=s.num_classes)
        assert counts.min() >= 20
        for c in range(0, s.num_classes, max(1, s.num_classes // 100)):
            rows = s.images[s.labels == c].reshape(counts[c], -1)
            assert len(np.unique(rows, axis=0)) == counts[c], f"duplicate instances in {s.class_names[c]}"
            assert rows.max(axis=1).min() > 100, "every instance shows ink"
        # each class is drawn by several fonts, each instance names its font
        fonts = np.asarray(s.meta["instance_font_index"]).reshape(s.num_classes, -1)
        assert min(len(set(row.tolist())) for row in fonts) >= 8


def test_registered_and_reachable_through_load_split(glyph_cache):
    assert DATASETS.get("glyphs") is load_glyphs
    s = load_split("glyphs", str(glyph_cache), "val", image_size=28, num_classes=20, instances_per_class=3)
    assert s.name == "glyphs/val" and len(s) == 3 * s.num_classes


def test_class_names_are_characters_with_many_fonts(glyph_cache):
    catalog = glyphs.glyph_catalog(glyph_cache)
    assert len(catalog.classes) >= 1000
    for cls in catalog.classes:
        assert len(cls.fonts) >= glyph_fonts.MIN_FONTS
        category = unicodedata.category(chr(cls.codepoint))
        assert category[0] in "LNPS", f"{cls.name} has category {category}"
    assert len({c.codepoint for c in catalog.classes}) == len(catalog.classes)


def test_placeholder_font_detected_and_never_used(glyph_cache, full28):
    folder = glyph_fonts.font_dir()
    last_resort = folder / "LastResortHE-Regular.ttf"
    if last_resort.exists():
        assert glyph_fonts.placeholder_reason(glyph_fonts.open_font(last_resort))
        assert "placeholder" in glyphs.glyph_catalog(glyph_cache).excluded_fonts[last_resort.name]
    assert glyph_fonts.placeholder_reason(glyph_fonts.open_font(folder / "DejaVuSans.ttf")) is None
    for s in full28.values():
        used = {s.meta["fonts"][i] for i in np.unique(s.meta["instance_font_index"])}
        assert not any("LastResort" in name for name in used)


def test_tex_encoded_fonts_are_read_by_glyph_name():
    cmmi = glyph_fonts.open_font(glyph_fonts.font_dir() / "cmmi10.ttf")
    mapping = glyph_fonts.unicode_mapping(cmmi)
    # cmmi10's cmap puts "omega" at 0x21 ('!'): it must count as omega, not as '!'.
    assert cmmi.get_glyph_name(mapping[ord("ω")]) == "omega"
    assert ord("!") not in mapping or cmmi.get_glyph_name(mapping[ord("!")]) == "exclam"


def test_known_homoglyphs_merged(glyph_cache):
    kept = {c.codepoint for c in glyphs.glyph_catalog(glyph_cache).classes}
    groups = [  # Latin / Greek / Cyrillic capitals, Latin / Greek / Cyrillic o, letter-like symbols
        "A\u0391\u0410",
        "B\u0392\u0412",
        "E\u0395\u0415",
        "o\u03bf\u043e",
        "K\u039a\u212a",
        "X\u03a7\u0425",
        "\u03a9\u2126",
        "\u00c5\u212b",
        "\u00b5\u03bc",
    ]
    for group in groups:
        assert sum(ord(ch) in kept for ch in group) <= 1, group


def test_near_pair_search_matches_brute_force(monkeypatch):
    """The banded, blocked homoglyph search finds exactly the pairs an all-pairs loop finds."""
    rng = np.random.default_rng(1)
    bitmaps = []
    for _ in range(150):
        h, w = rng.integers(4, 20, size=2)
        yy, xx = np.mgrid[:h, :w]
        inside = ((yy - (h - 1) / 2) / (h / 2)) ** 2 + ((xx - (w - 1) / 2) / (w / 2)) ** 2 <= rng.uniform(0.5, 1.2)
        base = inside.astype(np.uint8) * 255
        bitmaps.append(base)
        if rng.random() < 0.6:  # a near copy whose ink box is 0-2 pixels taller and/or wider (faint margin)
            extra = rng.integers(0, 3, size=2)
            copy = np.pad(base, ((0, extra[0]), (0, extra[1])), constant_values=30)
            bitmaps.append(copy)
    bitmaps = [glyph_fonts._crop(b) for b in bitmaps if b.any()]
    canvases = np.stack([glyph_fonts.feature_canvas(b) for b in bitmaps])
    boxes = np.array([b.shape for b in bitmaps])
    monkeypatch.setattr(glyph_fonts, "_BLOCK", 17)
    ii, jj = glyph_fonts._near_pairs_in_font(canvases, boxes)
    found = set(zip(ii.tolist(), jj.tolist()))

    flat = canvases.reshape(len(canvases), -1)
    expected = set()
    for i in range(len(canvases)):
        for j in range(i + 1, len(canvases)):
            if np.abs(boxes[i] - boxes[j]).max() <= glyph_fonts.BOX_SLACK and glyph_fonts.near_identical(
                flat[i : i + 1], flat[j : j + 1], glyph_fonts.HOMOGLYPH_PERCENT
            )[0]:
                expected.add((i, j))
    assert len(expected) >= 20
    assert found == expected


def _pil_renders(chars, path: Path, size: int = 21) -> dict:
    """Independent renders (Pillow, not the dataset's FreeType calls), ink box centred in a 40x40 square."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(path), size)
    out = {}
    for ch in chars:
        img = Image.new("L", (64, 64))
        ImageDraw.Draw(img).text((16, 8), ch, font=font, fill=255)
        box = img.getbbox()
        if box is None:
            continue
        ink = np.asarray(img.crop(box), np.int64)[:40, :40]
        canvas = np.zeros((40, 40), np.int64)
        top, left = (40 - ink.shape[0]) // 2, (40 - ink.shape[1]) // 2
        canvas[top : top + ink.shape[0], left : left + ink.shape[1]] = ink
        out[ch] = canvas.ravel()
    return out


def test_no_homoglyph_pairs_among_a_sample_of_kept_classes(glyph_cache):
    """Independent check with Pillow renders: no two sampled classes look alike in half of their shared fonts."""
    catalog = glyphs.glyph_catalog(glyph_cache)
    rng = np.random.default_rng(0)
    sample = [chr(catalog.classes[i].codepoint) for i in rng.choice(len(catalog.classes), 300, replace=False)]
    position = {ch: i for i, ch in enumerate(sample)}
    near = np.zeros((len(sample), len(sample)), np.int64)
    shared = np.zeros_like(near)
    for path in glyph_fonts.font_files():
        if not path.name.startswith(("DejaVu", "STIXGeneral")):
            continue  # Unicode cmaps only, so that Pillow draws the same character
        cmap = glyph_fonts.open_font(path).get_charmap()
        renders = _pil_renders([ch for ch in sample if ord(ch) in cmap], path)
        if len(renders) < 2:
            continue
        idx = np.array([position[ch] for ch in renders])
        x = np.stack(list(renders.values())).astype(np.float64)
        sq = (x * x).sum(axis=1)
        total = sq[:, None] + sq[None, :]
        dist = (total - 2 * x @ x.T) / total
        shared[np.ix_(idx, idx)] += 1
        near[np.ix_(idx, idx)] += dist <= 0.01
    np.fill_diagonal(near, 0)
    a, b = np.nonzero((near > 0) & (2 * near >= shared))
    alike = [(sample[i], sample[j]) for i, j in zip(a, b) if i < j]
    assert not alike, f"near-identical kept classes: {alike[:10]}"


def test_deterministic_for_a_seed_and_different_across_seeds(fresh_cache, tmp_path, glyph_cache):
    other = tmp_path / "other"
    other.mkdir()
    for f in glyph_cache.glob("catalog-*"):
        shutil.copy(f, other / f.name)
    kw = dict(image_size=28, num_classes=40, seed=3)
    a = load_glyphs(None, "train", **kw, cache_dir=fresh_cache)
    b = load_glyphs(None, "train", **kw, cache_dir=other)
    assert Path(a.source).parent != Path(b.source).parent
    assert Path(a.source).read_bytes() == Path(b.source).read_bytes()
    c = load_glyphs(None, "train", **dict(kw, seed=4), cache_dir=fresh_cache)
    assert c.class_names == a.class_names
    assert not np.array_equal(a.images, c.images)
    assert np.mean(np.all(a.images.reshape(len(a), -1) == c.images.reshape(len(c), -1), axis=1)) < 0.01


def test_bytes_do_not_depend_on_chunking(fresh_cache, full28, monkeypatch):
    monkeypatch.setattr(glyphs, "_CHUNK_PIXELS", 5 * 28 * 28 + 17)
    again = load_glyphs(None, "test", image_size=28, cache_dir=fresh_cache)
    assert Path(again.source).read_bytes() == Path(full28["test"].source).read_bytes()


def test_render_atlas_is_only_a_shortcut(fresh_cache, full28):
    """28 px images come from the catalog's renders; without them (or with a broken file) they are re-rendered alike."""
    atlas = next(fresh_cache.glob("catalog-*.atlas.npz"))
    atlas.unlink()
    again = load_glyphs(None, "val", image_size=28, cache_dir=fresh_cache)
    assert Path(again.source).read_bytes() == Path(full28["val"].source).read_bytes()
    atlas.write_bytes(b"PK\x03\x04 not a zip")
    Path(again.source).unlink()
    Path(again.source).with_suffix(".json").unlink()
    with pytest.warns(UserWarning, match="rendering instead"):
        again = load_glyphs(None, "val", image_size=28, cache_dir=fresh_cache)
    assert Path(again.source).read_bytes() == Path(full28["val"].source).read_bytes()


def test_subset_is_a_prefix_of_the_full_split(fresh_cache, full28):
    small = load_glyphs(None, "train", image_size=28, num_classes=25, instances_per_class=7, cache_dir=fresh_cache)
    full = full28["train"]
    k = small.num_classes
    assert k == round(0.64 * 25)
    assert small.class_names == full.class_names[:k]
    expected = full.images.reshape(full.num_classes, -1, 28, 28, 1)[:k, :7].reshape(-1, 28, 28, 1)
    assert np.array_equal(small.images, expected)


def test_channels_and_sizes(fresh_cache):
    gray = load_glyphs(None, "test", image_size=84, num_classes=12, instances_per_class=4, cache_dir=fresh_cache)
    rgb = load_glyphs(None, "test", image_size=84, num_classes=12, instances_per_class=4, channels=3, cache_dir=fresh_cache)
    small = load_glyphs(None, "test", image_size=28, num_classes=12, instances_per_class=4, cache_dir=fresh_cache)
    assert gray.images.shape == (len(gray), 84, 84, 1)
    assert rgb.images.shape == (len(gray), 84, 84, 3)
    assert small.images.shape == (len(gray), 28, 28, 1)
    assert np.array_equal(rgb.images[..., 0], gray.images[..., 0])
    assert np.array_equal(rgb.images[..., 2], gray.images[..., 0])
    assert gray.class_names == small.class_names
    # same distortion draws at both sizes: the 84 px image shrunk 3x resembles the 28 px one
    shrunk = gray.images[..., 0].reshape(len(gray), 28, 3, 28, 3).mean(axis=(2, 4))
    a = shrunk.reshape(len(gray), -1) - shrunk.reshape(len(gray), -1).mean(1, keepdims=True)
    b = small.images.reshape(len(gray), -1).astype(float)
    b -= b.mean(1, keepdims=True)
    corr = (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))
    assert corr.min() > 0.7


def test_second_load_reads_the_cache(fresh_cache, monkeypatch):
    first = load_glyphs(None, "val", image_size=28, num_classes=30, cache_dir=fresh_cache)

    def boom(*args, **kwargs):
        raise AssertionError("regenerated although the cache was valid")

    monkeypatch.setattr(glyphs, "_generate", boom)
    monkeypatch.setattr(glyph_fonts, "build_catalog", boom)
    second = load_glyphs(None, "val", image_size=28, num_classes=30, cache_dir=fresh_cache)
    assert isinstance(second.images, np.memmap)
    assert np.array_equal(first.images, second.images)
    assert not list(fresh_cache.glob("*.tmp"))


def test_corrupt_cache_is_rebuilt_with_a_warning(fresh_cache):
    good = load_glyphs(None, "val", image_size=28, num_classes=30, cache_dir=fresh_cache)
    expected = np.array(good.images)
    npy = Path(good.source)
    npy.write_bytes(npy.read_bytes()[:1000])  # truncated
    with pytest.warns(UserWarning, match="regenerating"):
        again = load_glyphs(None, "val", image_size=28, num_classes=30, cache_dir=fresh_cache)
    assert np.array_equal(again.images, expected)
    sidecar = npy.with_suffix(".json")
    sidecar.write_text("{not json")
    with pytest.warns(UserWarning, match="regenerating"):
        again = load_glyphs(None, "val", image_size=28, num_classes=30, cache_dir=fresh_cache)
    assert np.array_equal(again.images, expected)
    assert json.loads(sidecar.read_text())["seed"] == 0


def test_corrupt_catalog_is_rebuilt_with_a_warning(fresh_cache, monkeypatch):
    catalog_file = next(fresh_cache.glob("catalog-*.json"))
    good = glyphs.GlyphCatalog.from_json(json.loads(catalog_file.read_text()))
    calls = []

    def rebuild():
        calls.append(1)
        return good, {}

    monkeypatch.setattr(glyph_fonts, "build_catalog", rebuild)
    catalog_file.write_text('{"version": 1, "fonts": [')
    with pytest.warns(UserWarning, match="rebuilding"):
        catalog = glyphs.glyph_catalog(fresh_cache)
    assert calls and len(catalog.classes) == len(good.classes)
    assert glyphs.GlyphCatalog.from_json(json.loads(catalog_file.read_text())).classes == good.classes


def test_env_cache_location(glyph_cache, tmp_path, monkeypatch):
    (tmp_path / "glyphs").mkdir()
    for f in glyph_cache.glob("catalog-*"):
        shutil.copy(f, tmp_path / "glyphs" / f.name)
    monkeypatch.setenv("METAKD_CACHE", str(tmp_path))
    s = load_glyphs(None, "test", image_size=28, num_classes=10, instances_per_class=2)
    assert Path(s.source).parent == tmp_path / "glyphs"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"colour": "red"}, "'colour'.*valid options.*image_size"),
        ({"split": "training"}, "unknown split"),
        ({"channels": 2}, "channels must be 1 or 3"),
        ({"image_size": 8}, "image_size"),
        ({"image_size": 28.0}, "image_size"),
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": 10**6}, "num_classes"),
        ({"instances_per_class": True}, "instances_per_class"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_options_raise_config_error(glyph_cache, kwargs, message):
    kwargs = dict(kwargs)
    split = kwargs.pop("split", "train")
    with pytest.raises(ConfigError, match=message):
        load_glyphs(None, split, **kwargs, cache_dir=glyph_cache)


def test_too_few_classes_for_a_split(glyph_cache):
    with pytest.raises(ConfigError, match="no 'val' class"):
        load_glyphs(None, "val", image_size=28, num_classes=2, cache_dir=glyph_cache)


def test_nearest_neighbour_beats_chance(full28):
    """20-way 5-shot episodes on test classes, 1-NN on standardised pixels: the task is well posed."""
    s = full28["test"]
    rng = np.random.default_rng(0)
    per_class = s.images.reshape(s.num_classes, -1, 28 * 28).astype(np.float32)
    accs = []
    for _ in range(10):
        classes = rng.choice(s.num_classes, 20, replace=False)
        order = rng.permutation(per_class.shape[1])
        x = per_class[classes][:, order]
        support, query = x[:, :5].reshape(-1, 784), x[:, 5:].reshape(-1, 784)
        support_y, query_y = np.repeat(np.arange(20), 5), np.repeat(np.arange(20), x.shape[1] - 5)
        for m in (support, query):
            m -= m.mean(axis=1, keepdims=True)
            m /= np.linalg.norm(m, axis=1, keepdims=True) + 1e-6
        pred = support_y[np.argmax(query @ support.T, axis=1)]
        accs.append(np.mean(pred == query_y))
    assert np.mean(accs) > 4 * (1 / 20), f"1-NN accuracy {np.mean(accs):.3f}"
