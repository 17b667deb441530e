"""Writing benchmark results: atomically (temporary file + rename), a JSON and its markdown table side by side."""
from __future__ import annotations

import json
from pathlib import Path

from metakd.atomic import atomic_write as _atomic_write


def write_atomic(path: Path, text: str) -> None:
    """``text`` into ``path`` atomically (``metakd.atomic``), so a reader never sees half a file."""
    _atomic_write(path, text, what="benchmark result")


def write_json_and_markdown(out: Path, report: dict, markdown: str) -> None:
    """``report`` as ``out`` (JSON) and ``markdown`` as the same name with .md."""
    out = Path(out)
    write_atomic(out, json.dumps(report, indent=2))
    write_atomic(out.with_suffix(".md"), markdown)
    print(f"written {out} and {out.with_suffix('.md')}")
