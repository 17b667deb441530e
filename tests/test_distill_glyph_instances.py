"""The glyph generator gives as many distinct instances per class as a classification benchmark asks
(fonts dealt in shuffled cycles x random distortions), deterministically, as a prefix of any larger
request (so a train / test cut by instance index is the same images whatever the count), as used by
benchmarks/distill_proxy.py."""
import numpy as np

from metakd.data.glyphs import load_glyphs

KW = dict(image_size=16, num_classes=8)  # -> the first 5 classes of the train split


def test_many_distinct_instances_per_class_deterministic_and_prefix_stable():
    n = 400
    a = load_glyphs(None, "train", instances_per_class=n, **KW)
    assert a.num_classes == 5 and a.images.shape == (5 * n, 16, 16, 1)
    rows = a.images.reshape(5, n, -1)
    fonts = np.asarray(a.meta["instance_font_index"]).reshape(5, n)
    for c in range(5):
        assert len(np.unique(rows[c], axis=0)) == n, f"duplicate instances in class {a.class_names[c]}"
        used = np.unique(fonts[c])
        assert len(used) >= 8  # every class is drawn by at least 8 fonts ...
        counts = np.bincount(fonts[c])[used]
        assert counts.max() - counts.min() <= 1  # ... dealt evenly (in shuffled cycles over its fonts)
    # the first 250 instances of a 250-instance request are the first 250 of this one (prefix-stable)
    b = load_glyphs(None, "train", instances_per_class=250, **KW)
    assert np.array_equal(b.images.reshape(5, 250, -1), rows[:, :250])
    # another seed gives other images of the same classes
    c = load_glyphs(None, "train", instances_per_class=250, seed=1, **KW)
    assert c.class_names == a.class_names and not np.array_equal(c.images, b.images)
