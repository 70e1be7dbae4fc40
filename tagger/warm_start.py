"""Warm start: continue training a saved model from its LoRA adapter and O/B/I head.

The one home of this for ``vaner train --init-from MODEL`` and for ``vaner retrain`` (which warm
starts from the current ``latest`` model by default). Why the model config comes from the saved
model and nothing else: the adapter's shapes are tied to the backbone, its layer count and the
LoRA rank and targets, and the head learned on inputs built with the saved instruction template.
A given setting that agrees with the saved one is fine; one that disagrees is refused rather than
silently ignored (the user would believe they trained, say, 8 layers while the model has 16).
A single-type model is never continued as a multi-type one or the other way round: the head's
shape and the instruction's meaning differ, so nothing but the adapter would carry over.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tagger.config import TaggerConfig, check_keys
from tagger.model import read_saved_config, read_saved_meta
from vaner.errors import InvalidArgument

_LABELS = {"template": "instruction"}


def warm_start_config(artifact: str | Path, given: Mapping[str, Any] | TaggerConfig | None, *, source: str,
                      hint: str) -> TaggerConfig:
    """The saved model's config, after checking that every model setting in ``given`` (a partial
    dict of :class:`TaggerConfig` fields) agrees with it. ``source`` names the model in errors and
    ``hint`` says how to get out (e.g. "drop the flag or --init-from")."""
    saved = read_saved_config(artifact)
    if isinstance(given, TaggerConfig):
        given = given.to_dict()
    given = dict(given or {})
    check_keys(TaggerConfig, given, "model setting")
    if "multi_type" in given and bool(given["multi_type"]) != saved.multi_type:
        raise InvalidArgument(f"{source} is {_kind(saved.multi_type)} and cannot be continued as "
                              f"{_kind(bool(given['multi_type']))}: its head and instruction do not carry over; "
                              f"train that kind from scratch, or {hint}")
    try:
        candidate = dataclasses.replace(saved, **given)  # normalises lists, dicts and templates
    except InvalidArgument as exc:
        raise InvalidArgument(f"model settings do not fit {source}: {exc.message}; {hint}") from None
    conflicts = [name for name in given if getattr(candidate, name) != getattr(saved, name)]
    if conflicts:
        described = "; ".join(f"{_LABELS.get(n, n)} {_show(getattr(candidate, n))} vs {_show(getattr(saved, n))}"
                              for n in conflicts)
        raise InvalidArgument(f"model settings disagree with {source}, which the warm start continues from "
                              f"(given vs saved: {described}); {hint}")
    return saved


def _kind(multi_type: bool) -> str:
    return ("a multi-type model (one O/B/I head per category, one pass per sentence)" if multi_type
            else "a single-type model (one O/B/I head, one pass per sentence and type)")


def _show(value: Any) -> str:
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    return repr(value)


def load_trainable(artifact: str | Path, device: str = "auto") -> Any:
    """The saved model with a trainable adapter and head (a :class:`tagger.model.VanerTagger`)."""
    from tagger.model import VanerTagger

    return VanerTagger.load(artifact, device=device, trainable=True)


def trained_steps(artifact: str | Path) -> int | None:
    """Optimizer steps the saved model had been trained for when it was saved, when recorded."""
    step = read_saved_meta(artifact).get("step")
    return int(step) if isinstance(step, int) and step > 0 else None
