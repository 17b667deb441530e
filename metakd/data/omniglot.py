"""``omniglot``: Omniglot (Lake et al. 2015) read from the official zips or the same trees unzipped.

Where: ROOT (or ROOT/python, ROOT/omniglot-py, ROOT/omniglot) holds any of the official sets, each as
``<set>.zip`` or as an unzipped folder ``<set>/`` (also ``<set>/<set>/``): images_background (30
alphabets), images_evaluation (20), images_background_small1 and images_background_small2 (the
challenge's minimal sets, 5 alphabets each). Inside: ``<alphabet>/<character>/<id>_<drawer>.png``.
When a set is there both zipped and unzipped the folder is read (a note says so). Nothing is unzipped
to disk; decoded images go to a uint8 cache (``cache.py``) keyed by the sources' sizes and mtimes.

Images: every image goes through ``strokes.stroke_image``: white strokes on black (the files are black
on white), resized to ``image_size`` (default 28) with ``channels`` (default 1). Class names are
``alphabet/character`` (``alphabet/character/rot090`` with rotations), classes in sorted order, images
of a class sorted by file name.

Options (``data.options`` in a config):

protocol: ``challenge`` (default) or ``vinyals``.
  challenge (the Omniglot challenge, Lake et al.; one-shot runs within an alphabet):
    train = the ``background`` set less the validation alphabets; val = the validation alphabets;
    test = images_evaluation (never used for training: score it, or the 20 official runs, once).
  vinyals (Vinyals et al. 2016, the split of MAML and ProtoNet; needs images_background and
    images_evaluation): the characters of both sets, split exactly as ProtoNet's released lists
    (data/omniglot/splits/vinyals/{train,val,test}.txt of github.com/jakesnell/prototypical-networks;
    checked equal on the official data, see ``VINYALS_*`` below): test = the 12 alphabets of
    ``VINYALS_TEST`` plus Gurmukhi character42-45 (423 characters); val = the 5 alphabets of
    ``VINYALS_VAL`` (172); train = the other 1,028. MAML trains on train + val (1,200 characters):
    ``trainval: true`` makes "train" hold those 1,200 (and "val" is then refused). MAML's own code draws
    its 1,200 characters with Python's ``random.shuffle`` over a directory listing, which cannot be
    reproduced; this is the published list of the same size, as ProtoNet used it.
background: ``full`` | ``small1`` | ``small2`` (challenge only). Default: full when images_background
  is present, else small1, else small2 (a note names the choice).
val_alphabets: the validation alphabets (challenge only). Default (``DEFAULT_VAL``):
  small1 -> Japanese_(katakana), Sanskrit, Tagalog (the alphabets of small2 not in small1);
  small2 -> Balinese, Early_Aramaic, Korean (the alphabets of small1 not in small2: the mirror rule,
            which keeps all five of small2's alphabets for training);
  full   -> Armenian, Bengali, Early_Aramaic, Hebrew, Mkhedruli_(Georgian) (the Vinyals validation
            alphabets, all background alphabets), held out of the 30 (train: 25 alphabets).
  A list of names picks others: a name of the training background set is held out of "train"; any other
  background alphabet is read from whichever background set has it (images_background_small1/2 or
  images_background). ``[]``: no validation split (train on the whole set). An unknown name is a
  ConfigError listing the valid ones; an evaluation alphabet is refused (it is the test set).
rotations: rotate every character by 90, 180 and 270 degrees (counter-clockwise) as three new classes
  (after preprocessing). Default: true for vinyals (as published), false for challenge.
image_size (28), channels (1), cache_dir: as other loaders.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import ConfigError, DataError
from ..registry import DATASETS
from .base import ImageSplit
from .cache import cache_file, cached_uint8_array, files_fingerprint, fingerprint, note, resolve_cache_dir, root_tag
from .image_io import IMAGE_EXTENSIONS, decode_many_into
from .loader_args import check_choice, check_positive_int, normalize_split, reject_unknown, require_root
from .fixed_episodes import find_runs, scan_runs
from .strokes import BLACK_ON_WHITE, PREPROCESS_VERSION, STROKE_POLARITY, StrokePreprocess, polarity_note

NAME = "omniglot"
OPTIONS = ("image_size", "channels", "protocol", "background", "val_alphabets", "rotations", "trainval", "cache_dir")
PROTOCOLS = ("challenge", "vinyals")
BACKGROUNDS = ("full", "small1", "small2")
BACKGROUND_SETS = {"full": "images_background", "small1": "images_background_small1",
                   "small2": "images_background_small2"}
EVALUATION_SET = "images_evaluation"
SET_NAMES = ("images_background", "images_evaluation", "images_background_small1", "images_background_small2")
SEARCH_DIRS = ("", "python", "omniglot-py", "omniglot")  # sub-folders of ROOT that may hold the sets
SOURCE_POLARITY = BLACK_ON_WHITE
ROTATIONS = (0, 90, 180, 270)

VINYALS_VAL = ("Armenian", "Bengali", "Early_Aramaic", "Hebrew", "Mkhedruli_(Georgian)")
VINYALS_TEST = ("Kannada", "Keble", "Malayalam", "Manipuri", "Mongolian", "Old_Church_Slavonic_(Cyrillic)", "Oriya",
                "Sylheti", "Syriac_(Serto)", "Tengwar", "Tibetan", "ULOG")
VINYALS_TEST_CHARACTERS = tuple(f"Gurmukhi/character{i}" for i in range(42, 46))
# sha256 over "\n".join(sorted "alphabet/character") of each published list (rotations dropped), computed
# from ProtoNet's released train/val/test.txt; tests check that vinyals_role reproduces them.
VINYALS_DIGESTS = {
    "train": "c350ea5778649d32e0ac6ec889c2307081c3925cf690fc8933ebdf3d800b69b2",  # 1,028 characters
    "val": "d3f56052fbd17195c86774f0ac0189eb7e3e9a0656d5ff71b234479d512fecb2",  # 172
    "test": "bbbdc01c73fd2d347b6d10079314fb3df275938be403cbe915c1c09a38b1ba37",  # 423
}
# Characters per alphabet of the official full sets (folders character01 .. characterNN).
BACKGROUND_ALPHABETS = {
    "Alphabet_of_the_Magi": 20, "Anglo-Saxon_Futhorc": 29, "Arcadian": 26, "Armenian": 41, "Asomtavruli_(Georgian)": 40,
    "Balinese": 24, "Bengali": 46, "Blackfoot_(Canadian_Aboriginal_Syllabics)": 14, "Braille": 26,
    "Burmese_(Myanmar)": 34, "Cyrillic": 33, "Early_Aramaic": 22, "Futurama": 26, "Grantha": 43, "Greek": 24,
    "Gujarati": 48, "Hebrew": 22, "Inuktitut_(Canadian_Aboriginal_Syllabics)": 16, "Japanese_(hiragana)": 52,
    "Japanese_(katakana)": 47, "Korean": 40, "Latin": 26, "Malay_(Jawi_-_Arabic)": 40, "Mkhedruli_(Georgian)": 41,
    "N_Ko": 33, "Ojibwe_(Canadian_Aboriginal_Syllabics)": 14, "Sanskrit": 42, "Syriac_(Estrangelo)": 23,
    "Tagalog": 17, "Tifinagh": 55,
}
EVALUATION_ALPHABETS = {
    "Angelic": 20, "Atemayar_Qelisayer": 26, "Atlantean": 26, "Aurek-Besh": 26, "Avesta": 26, "Ge_ez": 26,
    "Glagolitic": 45, "Gurmukhi": 45, "Kannada": 41, "Keble": 26, "Malayalam": 47, "Manipuri": 40, "Mongolian": 30,
    "Old_Church_Slavonic_(Cyrillic)": 45, "Oriya": 46, "Sylheti": 28, "Syriac_(Serto)": 23, "Tengwar": 25,
    "Tibetan": 42, "ULOG": 26,
}
DEFAULT_VAL = {"small1": ("Japanese_(katakana)", "Sanskrit", "Tagalog"),
               "small2": ("Balinese", "Early_Aramaic", "Korean"),
               "full": VINYALS_VAL}

Member = Union[str, Path]  # a zip member name or a file path


@dataclass
class SetSource:
    """One official set found under ROOT: an unzipped folder or a zip, and its characters.

    characters: {"alphabet/character": [members, sorted by file name]} (alphabet and character names
    are the folder names).
    """

    name: str
    kind: str  # "zip" or "tree"
    path: Path
    characters: Dict[str, List[Member]] = field(default_factory=dict, repr=False)

    @property
    def alphabets(self) -> List[str]:
        return sorted({c.split("/")[0] for c in self.characters})

    def images(self) -> int:
        return sum(len(v) for v in self.characters.values())

    def fingerprint(self) -> str:
        """Changes when the zip, or any file of the tree, is added, removed or edited."""
        if self.kind == "zip":
            return files_fingerprint([self.path])
        return files_fingerprint([m for v in self.characters.values() for m in v], self.path)  # type: ignore[misc]

    def read_all(self, members: Sequence[Member]) -> List[Union[bytes, Path]]:
        """Decodable sources of ``members``: the paths of a tree, the bytes of a zip's members."""
        if self.kind == "tree":
            return list(members)
        try:
            with zipfile.ZipFile(self.path) as zf:
                return [zf.read(str(m)) for m in members]
        except (OSError, zipfile.BadZipFile, KeyError) as exc:
            raise DataError(f"{str(self.path)!r}: cannot read ({type(exc).__name__}: {exc})") from exc

    def where(self, member: Member) -> str:
        return f"{self.path}:{member}" if self.kind == "zip" else str(member)

    def describe(self) -> str:
        return (f"{self.name}: {len(self.alphabets)} alphabets, {len(self.characters)} characters, "
                f"{self.images()} images ({'zip' if self.kind == 'zip' else 'folder'} {self.path})")


def _is_image_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return bool(base) and not base.startswith(".") and Path(base).suffix.lower() in IMAGE_EXTENSIONS


def _scan_zip(name: str, path: Path) -> SetSource:
    """The characters of ``<set>.zip``: members ``[<set>/]<alphabet>/<character>/<image>`` (others skipped)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{str(path)!r}: not a readable zip ({type(exc).__name__}: {exc})") from exc
    chars: Dict[str, List[Member]] = {}
    for m in names:
        if m.startswith("__MACOSX/") or not _is_image_name(m):
            continue
        parts = m.split("/")
        if parts[0] == name:
            parts = parts[1:]
        if len(parts) != 3:
            continue
        chars.setdefault(f"{parts[0]}/{parts[1]}", []).append(m)
    if not chars:
        raise DataError(f"{str(path)!r}: no images in the layout [{name}/]<alphabet>/<character>/<image>.png")
    return SetSource(name, "zip", path, {c: sorted(v, key=lambda s: str(s).rsplit("/", 1)[-1])
                                         for c, v in sorted(chars.items())})


def _visible_dirs(folder: Path) -> List[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _scan_tree(name: str, path: Path) -> SetSource:
    """The characters of an unzipped ``<set>/<alphabet>/<character>/<image>`` tree (``<set>/<set>/`` too)."""
    if (path / name).is_dir():
        path = path / name
    chars: Dict[str, List[Member]] = {}
    for alphabet in _visible_dirs(path):
        for character in _visible_dirs(alphabet):
            files = sorted((p for p in character.iterdir() if p.is_file() and _is_image_name(p.name)),
                           key=lambda p: p.name)
            if not files:
                raise DataError(f"character folder {str(character)!r} holds no image files")
            chars[f"{alphabet.name}/{character.name}"] = files  # type: ignore[assignment]
    if not chars:
        raise DataError(f"{str(path)!r}: no images in the layout <alphabet>/<character>/<image>.png")
    return SetSource(name, "tree", path, chars)


@dataclass
class OmniglotRoot:
    """What ROOT holds: ``sets`` {set name: SetSource} and ``runs`` (the folder or zip of the 20 runs, or None)."""

    root: Path
    sets: Dict[str, SetSource]
    runs: Optional[Path]

    @property
    def layout(self) -> str:
        kinds = sorted({s.kind for s in self.sets.values()})
        return "+".join("zips" if k == "zip" else "trees" for k in kinds) or "none"

    def need(self, name: str, why: str) -> SetSource:
        if name not in self.sets:
            found = ", ".join(self.sets) or "none of them"
            raise DataError(f"{NAME}: {why} needs {name}.zip or the folder {name}/ in {str(self.root)!r} "
                            f"(found: {found})")
        return self.sets[name]

    def background_alphabets(self) -> Dict[str, str]:
        """{alphabet: the first background set holding it (small1, small2, then the full set: the files are
        byte-identical, the minimal zips quicker to read)} over the background sets found."""
        out: Dict[str, str] = {}
        for set_name in ("images_background_small1", "images_background_small2", "images_background"):
            if set_name in self.sets:
                for a in self.sets[set_name].alphabets:
                    out.setdefault(a, set_name)
        return out


def find_sets(root: Union[str, Path]) -> OmniglotRoot:
    """Scan ROOT for the official sets (zip or folder each) and the runs; nothing is extracted."""
    root = require_root(root, NAME)
    sets: Dict[str, SetSource] = {}
    for name in SET_NAMES:
        for sub in SEARCH_DIRS:
            base = root / sub if sub else root
            tree, zpath = base / name, base / f"{name}.zip"
            if tree.is_dir():
                if zpath.is_file():
                    note(f"{NAME}: {str(base)!r} holds both {name}/ and {name}.zip; reading the folder "
                         f"(move it away to read the zip)")
                sets[name] = _scan_tree(name, tree)
                break
            if zpath.is_file():
                sets[name] = _scan_zip(name, zpath)
                break
    return OmniglotRoot(root, sets, find_runs(root))


def detect_layouts(root: Union[str, Path]) -> List[str]:
    """["zips"], ["trees"] or ["zips+trees"] when ROOT holds an official Omniglot set, else []."""
    path = Path(root)
    if not path.is_dir():
        return []
    for name in SET_NAMES:
        for sub in SEARCH_DIRS:
            base = path / sub if sub else path
            if (base / name).is_dir() or (base / f"{name}.zip").is_file():
                try:
                    return [find_sets(path).layout]
                except DataError:
                    return []
    return []


# ---------------------------------------------------------------------------------------------- the split rules


def vinyals_role(character: str) -> str:
    """"train", "val" or "test" of "alphabet/character" in the Vinyals split (ProtoNet's released lists)."""
    alphabet = character.split("/")[0]
    if alphabet in VINYALS_TEST or character in VINYALS_TEST_CHARACTERS:
        return "test"
    return "val" if alphabet in VINYALS_VAL else "train"


def _check_names(value: Any, key: str) -> Optional[Tuple[str, ...]]:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{NAME}: {key} must be a list of alphabet names (e.g. [Sanskrit, Tagalog]) or [], "
                          f"got {value!r}")
    return tuple(value)


def _resolve_background(found: OmniglotRoot, background: Optional[str]) -> str:
    if background is not None:
        check_choice(background, "background", BACKGROUNDS, NAME)
        return background
    for choice in BACKGROUNDS:
        if BACKGROUND_SETS[choice] in found.sets:
            if choice != "full":
                note(f"{NAME}: no images_background in {str(found.root)!r}; training on background={choice} "
                     f"({BACKGROUND_SETS[choice]})")
            return choice
    raise DataError(f"{NAME}: no background set in {str(found.root)!r}; looked for "
                    f"{', '.join(n + '.zip' for n in BACKGROUND_SETS.values())} (or the same folders unzipped)")


def _challenge_classes(found: OmniglotRoot, split: str, background: str,
                       val: Optional[Tuple[str, ...]]) -> Tuple[List[Tuple[SetSource, str]], Dict[str, Any]]:
    """[(set, "alphabet/character")] of one challenge split, and what the split is (for meta)."""
    if split == "test":
        ev = found.need(EVALUATION_SET, "the test split")
        return [(ev, c) for c in ev.characters], {"val_alphabets": None}
    train_set = found.need(BACKGROUND_SETS[background], f"background={background}")
    known = found.background_alphabets()
    if val is None:
        chosen, explicit = DEFAULT_VAL[background], False
    else:
        chosen, explicit = val, True
        evaluation = set(found.sets[EVALUATION_SET].alphabets) if EVALUATION_SET in found.sets else set()
        for name in chosen:
            if name in evaluation:
                raise ConfigError(f"{NAME}: val_alphabets: {name!r} is an evaluation alphabet (images_evaluation "
                                  "is the test set); choose background alphabets")
            if name not in known:
                raise ConfigError(f"{NAME}: val_alphabets: unknown alphabet {name!r}; the background alphabets "
                                  f"found under {str(found.root)!r}: {', '.join(sorted(known))}")
    info = {"val_alphabets": list(chosen), "val_rule": "given" if explicit else f"default for background={background}"}
    if split == "train":
        held = set(chosen)
        classes = [(train_set, c) for c in train_set.characters if c.split("/")[0] not in held]
        if not classes:
            raise ConfigError(f"{NAME}: val_alphabets hold out every alphabet of {train_set.name}; leave some to train on")
        return classes, info
    if not chosen:
        raise ConfigError(f"{NAME}: val_alphabets is [] (no validation split); name validation alphabets to have one")
    classes = []
    for name in chosen:
        home = train_set if name in train_set.alphabets else (found.sets[known[name]] if name in known else None)
        if home is None:
            raise DataError(f"{NAME}: validation alphabet {name!r} ({info['val_rule']}) is in no background set "
                            f"found under {str(found.root)!r} (found: {', '.join(found.sets) or 'none'}); add the set "
                            "that has it (e.g. images_background_small2.zip or images_background.zip) or set "
                            "data.options.val_alphabets")
        classes += [(home, c) for c in home.characters if c.split("/")[0] == name]
    return classes, info


def _vinyals_classes(found: OmniglotRoot, split: str, trainval: bool) -> List[Tuple[SetSource, str]]:
    sets = [found.need(n, "protocol=vinyals") for n in ("images_background", EVALUATION_SET)]
    if trainval and split == "val":
        raise ConfigError(f"{NAME}: trainval=true puts the Vinyals validation characters into 'train'; "
                          "there is no 'val' split then")
    roles = ("train", "val") if (trainval and split == "train") else (split,)
    classes = [(s, c) for s in sets for c in s.characters if vinyals_role(c) in roles]
    return sorted(classes, key=lambda sc: sc[1])


# ---------------------------------------------------------------------------------------------- the loader


@DATASETS.register(NAME)
def load_omniglot(
    root: str,
    split: str,
    *,
    image_size: int = 28,
    channels: int = 1,
    protocol: str = "challenge",
    background: Optional[str] = None,
    val_alphabets: Optional[Sequence[str]] = None,
    rotations: Optional[bool] = None,
    trainval: bool = False,
    cache_dir: Optional[str] = None,
    **unknown: object,
) -> ImageSplit:
    """One split of Omniglot as uint8 (N, image_size, image_size, channels), white strokes on black.

    See the module docstring for the options and the split rules. meta records the protocol, the
    background, the validation alphabets, the sets read, the polarity and the preprocessing.
    """
    reject_unknown(NAME, unknown, OPTIONS)
    split = normalize_split(split, NAME)
    size = check_positive_int(image_size, "image_size", NAME)
    check_choice(channels, "channels", (1, 3), NAME)
    check_choice(protocol, "protocol", PROTOCOLS, NAME)
    val = _check_names(val_alphabets, "val_alphabets")
    for key, value in (("rotations", rotations), ("trainval", trainval)):
        if value is not None and not isinstance(value, bool):
            raise ConfigError(f"{NAME}: {key} must be true or false, got {value!r}")
    found = find_sets(root)
    if protocol == "vinyals":
        for key, value in (("background", background), ("val_alphabets", val_alphabets)):
            if value is not None and not (key == "background" and value == "full"):
                raise ConfigError(f"{NAME}: {key} applies to protocol=challenge; protocol=vinyals uses the "
                                  "published character lists (see metakd.data.omniglot)")
        classes = _vinyals_classes(found, split, trainval)
        info: Dict[str, Any] = {"background": "full+evaluation", "trainval": trainval}
        rotate = True if rotations is None else rotations
    else:
        if trainval:
            raise ConfigError(f"{NAME}: trainval applies to protocol=vinyals; for the challenge set val_alphabets: []")
        background = _resolve_background(found, background)
        classes, info = _challenge_classes(found, split, background, val)
        info["background"] = background
        rotate = False if rotations is None else rotations
    pre = StrokePreprocess(size, channels, SOURCE_POLARITY)
    images, labels, names, cache = _decode(found, classes, pre, rotate, protocol, split, cache_dir)
    used = sorted({s.name for s, _ in classes})
    meta = {
        "format": found.layout, "protocol": protocol, **info, "rotations": rotate,
        "alphabets": sorted({c.split("/")[0] for _, c in classes}),
        "sets": {n: f"{found.sets[n].kind} {found.sets[n].path}" for n in used},
        "polarity": STROKE_POLARITY, "source_polarity": SOURCE_POLARITY,
        "preprocess": {"image_size": size, "channels": channels, "function": "metakd.data.strokes.stroke_image",
                       "version": PREPROCESS_VERSION},
        "cache": str(cache), "augment_preset": "glyph",
    }
    source = ", ".join(str(found.sets[n].path) for n in used)
    return ImageSplit(images, labels, names, f"{NAME}/{split}", source, meta)


def _decode(found: OmniglotRoot, classes: List[Tuple[SetSource, str]], pre: StrokePreprocess, rotate: bool,
            protocol: str, split: str, cache_dir: Optional[str]) -> Tuple[np.ndarray, np.ndarray, List[str], Path]:
    """Images (through the cache), labels and class names of ``classes``, rotated copies after each character."""
    rots = ROTATIONS if rotate else (0,)
    counts = [len(s.characters[c]) for s, c in classes]
    names = [f"{c}/rot{r:03d}" if rotate else c for _, c in classes for r in rots]
    labels = np.repeat(np.arange(len(names), dtype=np.int64), [n for n in counts for _ in rots])
    total = sum(counts) * len(rots)
    shape = (total, pre.image_size, pre.image_size, pre.channels)
    selection = fingerprint(tuple((s.name, c) for s, c in classes), rots)
    sources = tuple(sorted({s.name: s.fingerprint() for s, _ in classes}.items()))
    stem = f"{NAME}-{root_tag(found.root)}-{protocol}-{split}-{selection[:8]}-{pre.image_size}px-{pre.channels}ch"
    cache = resolve_cache_dir(found.root, cache_dir)
    path, stale = cache_file(cache, stem, fingerprint(sources, PREPROCESS_VERSION, pre.source_polarity))
    desc = f"{NAME}/{split}: decoding {sum(counts)} images once into a {pre.image_size}px cache"

    def fill(out: np.ndarray) -> None:
        base = np.empty((sum(counts),) + shape[1:], np.uint8)
        srcs: List[Union[bytes, Path]] = []
        wheres: List[str] = []
        for s, c in classes:
            members = s.characters[c]
            srcs += s.read_all(members)
            wheres += [s.where(m) for m in members]
        decode_many_into(base, srcs, channels=pre.channels, desc=desc, where=wheres.__getitem__, decode=pre.decode)
        row = start = 0
        for n in counts:
            for r in rots:
                block = base[start:start + n]
                out[row:row + n] = np.rot90(block, r // 90, axes=(1, 2)) if r else block
                row += n
            start += n

    def probe() -> None:
        s, c = classes[0]
        member = s.characters[c][0]
        pre.image(s.read_all([member])[0], s.where(member))

    images = cached_uint8_array(path, shape, fill, desc, stale, probe=probe)
    return images, labels, names, path


# ---------------------------------------------------------------------------------------------- reports


def describe_root(root: Union[str, Path]) -> List[str]:
    """Lines for ``metakd data ROOT``: the sets found (zip or folder, alphabets, characters, images), the runs,
    and what a run will see (polarity, the default size)."""
    found = find_sets(root)
    lines = [s.describe() for s in found.sets.values()]
    missing = [n for n in SET_NAMES if n not in found.sets]
    if missing:
        lines.append(f"not found: {', '.join(missing)}")
    if found.runs is None:
        lines.append("one-shot runs: not found (all_runs.zip or run01/ ... folders)")
    else:
        runs = scan_runs(found.runs)
        lines.append(f"one-shot runs: {len(runs)} runs, {sum(len(r['queries']) for r in runs.values())} query items "
                     f"({found.runs})")
    lines.append(f"images as a run sees them: {polarity_note(SOURCE_POLARITY)}; 28x28x1 unless data.image_size / "
                 "data.options.channels say otherwise")
    return lines
