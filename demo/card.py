"""What the loaded model knows and does not know, read from its model card (never hard-coded).

The app shows a short banner of these facts above every tab and repeats them under About, so a
user sees the model's limits before trusting a ranking. They come from the checkpoint, in this
order (the first that has any wins):

1. ``config.json`` → ``extra["card"]`` = ``{"knows": [...], "does_not_know": [...]}``;
2. the YAML front matter of the checkpoint's ``README.md`` (the Hugging Face model card
   metadata block) with the same two keys::

       ---
       knows:
         - colours and shapes of objects
       does_not_know:
         - where objects are (left of, above)
       ---

3. else the bullet points of the card's ``Limits`` (or ``Limitations``) section, as "does not
   know" — what older cards without the block say;
4. else nothing: the banner says that the model has no card.

Each fact is one short line of Markdown; at most :data:`MAX_FACTS` per list are kept, each cut
to :data:`MAX_FACT_CHARS` characters. No Gradio here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_FACTS = 8
MAX_FACT_CHARS = 200
KEYS = ("knows", "does_not_know")
_LIMITS_HEADING = re.compile(r"^#{1,6}\s*(known\s+)?limit(s|ations)\b", re.I)
_HEADING = re.compile(r"^#{1,6}\s")
_BULLET = re.compile(r"^\s*[-*+]\s+(.*\S)\s*$")


@dataclass
class ModelCard:
    """A checkpoint's card, as the app uses it.

    Attributes:
        text: the card's Markdown without its front matter (``None``: no card).
        knows: short lines on what the model can tell apart.
        does_not_know: short lines on what it cannot (its limits).
        source: where the facts came from: ``"config"``, ``"front matter"``, ``"limits"`` or
            ``"none"``.
    """

    text: str | None = None
    knows: list[str] = field(default_factory=list)
    does_not_know: list[str] = field(default_factory=list)
    source: str = "none"

    @property
    def has_facts(self) -> bool:
        return bool(self.knows or self.does_not_know)

    @classmethod
    def from_markdown(
        cls, markdown: str | None, extra: Mapping[str, Any] | None = None
    ) -> ModelCard:
        """Facts from ``extra["card"]``, else the card's front matter, else its Limits section."""
        meta: dict[str, Any] = {}
        body = markdown
        if markdown:
            meta, body = split_front_matter(markdown)
        body = body.strip() if body else None
        for source, block in (("config", (extra or {}).get("card")), ("front matter", meta)):
            facts = _facts(block, source)
            if facts is not None:
                return cls(body or None, *facts, source=source)
        limits = limits_section(body or "")
        if limits:
            return cls(body or None, [], limits, source="limits")
        return cls(body or None)


def split_front_matter(markdown: str) -> tuple[dict[str, Any], str]:
    """``(metadata, body)`` of a Markdown card with optional YAML front matter.

    Parsed by ``huggingface_hub.RepoCard`` (the Hub's own model-card reader); a broken block is
    logged and read as no metadata.
    """
    if not markdown.lstrip().startswith("---"):
        return {}, markdown
    try:
        from huggingface_hub import RepoCard

        card = RepoCard(markdown, ignore_metadata_errors=True)
        return dict(card.data.to_dict()), card.text
    except Exception as err:  # a broken card must not stop the app
        log.warning("the model card's front matter could not be read: %s", type(err).__name__)
        end = markdown.find("\n---", 3)
        return {}, markdown[end + 4 :] if end > 0 else markdown


def _clean(items: Any, source: str, key: str) -> list[str]:
    if isinstance(items, str):
        items = [items]
    if not isinstance(items, (list, tuple)):
        log.warning("model card (%s): %r is not a list of lines; ignored", source, key)
        return []
    out = []
    for item in items[:MAX_FACTS]:
        if not isinstance(item, (str, int, float)):
            continue
        text = " ".join(str(item).split())
        if text:
            out.append(text if len(text) <= MAX_FACT_CHARS else text[: MAX_FACT_CHARS - 1] + "…")
    return out


def _facts(block: Any, source: str) -> tuple[list[str], list[str]] | None:
    """``(knows, does_not_know)`` from a mapping with those keys; None when it has neither."""
    if not isinstance(block, Mapping) or not any(k in block for k in KEYS):
        return None
    knows, unknown = (_clean(block.get(k, []), source, k) for k in KEYS)
    return (knows, unknown) if knows or unknown else None


def limits_section(markdown: str) -> list[str]:
    """The bullet points of the first ``Limits`` / ``Limitations`` heading (up to the next)."""
    out: list[str] = []
    inside = False
    for line in markdown.splitlines():
        if _HEADING.match(line):
            if inside:
                break
            inside = bool(_LIMITS_HEADING.match(line))
            continue
        if inside:
            m = _BULLET.match(line)
            if m:
                out.append(m.group(1))
            elif out and line.strip() and line.startswith((" ", "\t")):
                out[-1] += " " + line.strip()  # a bullet continued on the next line
    return _clean(out, "limits", "Limits")


def read_card(checkpoint_dir: str | Path, extra: Mapping[str, Any] | None = None) -> ModelCard:
    """The card of a checkpoint directory: its ``README.md`` (or its parent folder's, where the
    shipped model keeps it) and ``config.json``'s ``extra``."""
    d = Path(checkpoint_dir)
    for cand in (d / "README.md", d.parent / "README.md"):
        if cand.is_file():
            text = cand.read_text(encoding="utf-8", errors="replace")
            return ModelCard.from_markdown(text, extra)
    return ModelCard.from_markdown(None, extra)


__all__ = ["KEYS", "ModelCard", "limits_section", "read_card", "split_front_matter"]
