"""Writing benchmark results: atomically (temporary file + rename), a JSON and its markdown table side by side."""
from __future__ import annotations

import json
import os
from pathlib import Path


def write_atomic(path: Path, text: str) -> None:
    """``text`` into ``path`` via a temporary file and a rename, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_and_markdown(out: Path, report: dict, markdown: str) -> None:
    """``report`` as ``out`` (JSON) and ``markdown`` as the same name with .md."""
    out = Path(out)
    write_atomic(out, json.dumps(report, indent=2))
    write_atomic(out.with_suffix(".md"), markdown)
    print(f"written {out} and {out.with_suffix('.md')}")
