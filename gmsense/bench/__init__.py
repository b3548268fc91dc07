"""The measuring sticks: ``gmsense bench accuracy`` (detection against synthetic truth) and
``gmsense bench speed`` (throughput against the machine and a peer) and ``gmsense bench scale``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_json_and_markdown(results: Any, out: Path, markdown: str) -> Path:
    """Write ``results`` as JSON to ``out`` and ``markdown`` beside it (``.md``)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    out.with_suffix(".md").write_text(markdown)
    return out
