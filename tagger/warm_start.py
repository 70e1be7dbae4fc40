"""Warm start: continue training a saved model from its LoRA adapter and O/B/I head.

The one home of this for ``vaner train --init-from MODEL`` and for ``vaner retrain`` (which warm
starts from the current ``latest`` model by default). Why the model config comes from the saved
model and nothing else: the adapter's shapes are tied to the backbone, its layer count and the
LoRA rank and targets, and the head learned on inputs built with the saved instruction template.
A given setting that agrees with the saved one is fine; one that disagrees is refused rather than
silently ignored (the user would believe they trained, say, 8 layers while the model has 16).
A multi-type model is never continued as a single-type one. A single-type model may *seed* a
multi-type one (``vaner train --init-from MODEL --multi-type``, :func:`widen_to_multi_type`): the
LoRA adapter, which holds nearly everything the model learned about biomedical text, carries over,
and each category's O/B/I block of the new head starts as the single-type head. That is a starting
point, not an answer (the instruction now names every type, so the features under the head change),
and it is why a multi-type model can be trained in a fraction of a from-scratch budget.
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
                      hint: str, widen: bool = False) -> TaggerConfig:
    """The saved model's config, after checking that every model setting in ``given`` (a partial
    dict of :class:`TaggerConfig` fields) agrees with it. ``source`` names the model in errors and
    ``hint`` says how to get out (e.g. "drop the flag or --init-from"). With ``widen``, a
    single-type model asked to be multi-type gives the multi-type config it seeds
    (:func:`widen_to_multi_type`); without it that is refused like any change of kind."""
    saved = read_saved_config(artifact)
    if isinstance(given, TaggerConfig):
        given = given.to_dict()
    given = dict(given or {})
    check_keys(TaggerConfig, given, "model setting")
    if widen and given.get("multi_type") and not saved.multi_type:
        # seeding a multi-type model: every other setting must still agree with the saved one
        template = given.pop("template", None) or _multi_type_wording(saved, source)
        del given["multi_type"]
        _check_agrees(saved, given, source=source, hint=hint)
        return dataclasses.replace(saved, multi_type=True, template=template)  # normalises a dict template
    if "multi_type" in given and bool(given["multi_type"]) != saved.multi_type:
        raise InvalidArgument(f"{source} is {_kind(saved.multi_type)} and cannot be continued as "
                              f"{_kind(bool(given['multi_type']))}: its head and instruction do not carry over; "
                              f"train that kind from scratch, or {hint}")
    _check_agrees(saved, given, source=source, hint=hint)
    return saved


def _check_agrees(saved: TaggerConfig, given: dict[str, Any], *, source: str, hint: str) -> None:
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


def _multi_type_wording(saved: TaggerConfig, source: str) -> Any:
    """The multi-type form of a single-type model's built-in wording (paper or compact)."""
    from tagger.instructions import InstructionTemplate

    for name in ("paper", "compact"):
        if saved.template == InstructionTemplate.named(name):
            return InstructionTemplate.named(name, multi_type=True)
    raise InvalidArgument(f"{source} has a custom instruction; name the multi-type wording with "
                          "--instruction paper|compact")


def widen_to_multi_type(model: Any, config: TaggerConfig) -> Any:
    """A multi-type :class:`tagger.model.VanerTagger` on ``model``'s (single-type) backbone and
    adapter, every category's head block initialised from its O/B/I head."""
    import torch

    from tagger.model import VanerTagger

    if model.config.multi_type or not config.multi_type:
        raise InvalidArgument("widen_to_multi_type takes a single-type model and a multi-type config")
    wide = VanerTagger(model.backbone, model.tokenizer, config)
    with torch.no_grad():
        n = len(wide.categories)
        wide.head.weight.copy_(model.head.weight.repeat(n, 1))
        wide.head.bias.copy_(model.head.bias.repeat(n))
    return wide.to(model.device).train(model.training)


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
