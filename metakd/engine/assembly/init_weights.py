"""``model.init``: start a backbone from the weights of a pre-training or meta-training checkpoint.

Accepted: a ``metakd pretrain`` checkpoint (``kind: metakd-pretrain``, the backbone's state under
``model``), a ``metakd train`` checkpoint (the learner's state under ``learner``; the backbone is its
``model.`` part, also inside wrappers such as MSD or the distilled learner), or a run folder of either
(its best.pt). Read with ``weights_only=True`` (``checkpoint.safe_load``).

Rules: every parameter of the new backbone outside the head must be in the checkpoint with the same
shape, else one ConfigError naming the mismatched keys (another backbone, another width). The head
(parameters under ``head.``) is loaded when its shapes match and otherwise kept as freshly initialised
(e.g. a 64-way pre-training head under a 5-way learner). Buffers (BatchNorm running statistics) load
when present; missing ones keep their initial values and unused ones are ignored, both reported.
"""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple

from torch import Tensor, nn

from ...errors import ConfigError, MetakdError
from ..runs.checkpoint import PRETRAIN_KIND, find_checkpoint, safe_load, state_dict_mismatch

HEAD = "head."


def backbone_state(ckpt: Any, path: Path) -> Tuple[Dict[str, Tensor], str]:
    """(the backbone's state dict, the backbone name recorded with it) from a loaded checkpoint."""
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("config"), dict):
        raise ConfigError(f"model.init: {path} is not a metakd checkpoint (no config mapping)")
    model_cfg = ckpt["config"].get("model")
    arch = str(model_cfg.get("backbone", "?") if isinstance(model_cfg, dict) else "?")
    if ckpt.get("kind") == PRETRAIN_KIND:
        if not isinstance(ckpt.get("model"), Mapping):
            raise ConfigError(f"model.init: {path} is a pre-training checkpoint without its backbone ('model')")
        return dict(ckpt["model"]), arch
    state = ckpt.get("learner")
    if not isinstance(state, Mapping):
        raise ConfigError(f"model.init: {path} holds neither a pre-trained backbone ('model') nor a learner "
                          f"('learner'); keys: {sorted(ckpt)}")
    # the backbone is the part under "<prefix>model."; wrappers (MSD, distilled) add a prefix
    prefixes = Counter(k[:k.index("model.") + len("model.")] for k in state if "model." in k
                       and (k.startswith("model.") or k[k.index("model.") - 1] == "."))
    if not prefixes:
        raise ConfigError(f"model.init: {path}: no backbone weights ('model.*') in its learner state")
    prefix = "model." if "model." in prefixes else prefixes.most_common(1)[0][0]
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, arch


def init_backbone(model: nn.Module, path: str | Path, backbone: str) -> Dict[str, Any]:
    """Load ``path``'s backbone weights into ``model`` (see the module docstring); returns the report
    {source, loaded, kept_initial, ignored} and prints its one-line summary to stderr."""
    file = find_checkpoint(path, "best", key="model.init",
                           hint="give a `metakd pretrain` or `metakd train` checkpoint or run folder")
    try:
        ckpt = safe_load(file, what="model.init checkpoint")
    except MetakdError as exc:
        raise ConfigError(f"model.init: {exc}") from None
    saved, arch = backbone_state(ckpt, file)
    own = model.state_dict()
    params = {n for n, _ in model.named_parameters()}
    body_own = {k: v for k, v in own.items() if k in params and not k.startswith(HEAD)}
    body_saved = {k: v for k, v in saved.items() if k in body_own or (k not in own and not k.startswith(HEAD)
                                                                         and not _is_buffer_name(k))}
    mismatch = state_dict_mismatch(body_own, body_saved)
    if mismatch:
        raise ConfigError(f"model.init: {file} holds a {arch} backbone that does not fit this {backbone} "
                          f"({mismatch})")
    load: Dict[str, Tensor] = {}
    kept: List[str] = []
    for k, v in own.items():
        if k in saved and tuple(saved[k].shape) == tuple(v.shape):
            load[k] = saved[k]
        elif k in saved:
            kept.append(f"{k} (checkpoint {tuple(saved[k].shape)}, new {tuple(v.shape)})")
        else:
            kept.append(f"{k} (not in the checkpoint)")
    ignored = sorted(k for k in saved if k not in own)
    model.load_state_dict({**own, **load})
    report = {"source": str(file), "checkpoint_backbone": arch, "loaded": sorted(load), "kept_initial": kept,
              "ignored": ignored}
    print(f"metakd: {describe_init(report)}", file=sys.stderr, flush=True)
    return report


def describe_init(report: Mapping[str, Any]) -> str:
    """One line: how many tensors came from where, and by name what was not loaded."""
    text = f"model.init: loaded {len(report['loaded'])} tensors from {report['source']}"
    if report["kept_initial"]:
        text += f"; kept as initialised: {', '.join(report['kept_initial'])}"
    if report["ignored"]:
        text += f"; not used: {', '.join(report['ignored'])}"
    return text


def _is_buffer_name(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")
