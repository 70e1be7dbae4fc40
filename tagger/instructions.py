"""The instruction is a strategy object stored with the model (flair's prefixed tagger, VANER 3.2).

It renders the prompt for a (category, dataset) pair; the sentence words follow it and only they
are labelled. DBR sentences and unseen text use the dataset-free form (paper eq. 6).

A single-type model's instruction names the one type it is asked for (``{type}``); a multi-type
model's (``TaggerConfig.multi_type``) names none, because one pass answers every category: its
templates have no ``{type}`` and rendering ignores the category.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from vaner.categories import Category
from vaner.errors import InvalidArgument

DEFAULT_TEMPLATE = "If any {type} entity is mentioned in the {dataset} input, extract it. ##input:"
DEFAULT_TEMPLATE_NO_DATASET = "If any {type} entity is mentioned in the input, extract it. ##input:"
# The compact form says the same thing in ~6 tokens instead of ~20: every sentence of every
# training step and every (sentence, type) query at inference pays for the prompt, which is about
# a third of the tokens of an average PubMed sentence. Measured in BENCHMARKS.md (recipe runs).
COMPACT_TEMPLATE = "{type} entities ({dataset}):"
COMPACT_TEMPLATE_NO_DATASET = "{type} entities:"


def _every_type() -> str:
    names = [c.value for c in Category]
    return ", ".join(names[:-1]) + " and " + names[-1]


# Multi-type forms: the same two wordings, asking for every category at once.
MULTI_TEMPLATE = f"Extract every {_every_type()} entity mentioned in the {{dataset}} input. ##input:"
MULTI_TEMPLATE_NO_DATASET = f"Extract every {_every_type()} entity mentioned in the input. ##input:"
MULTI_COMPACT_TEMPLATE = "entities ({dataset}):"
MULTI_COMPACT_TEMPLATE_NO_DATASET = "entities:"


@dataclass(frozen=True)
class InstructionTemplate:
    with_dataset: str = DEFAULT_TEMPLATE
    without_dataset: str = DEFAULT_TEMPLATE_NO_DATASET

    def __post_init__(self) -> None:
        if ("{type}" in self.with_dataset) != ("{type}" in self.without_dataset):
            raise InvalidArgument("instruction template: with_dataset and without_dataset must both contain {type} "
                                  f"(a single-type model) or neither (a multi-type model): {self.with_dataset!r}, "
                                  f"{self.without_dataset!r}")
        if "{dataset}" not in self.with_dataset:
            raise InvalidArgument("instruction template with_dataset must contain {dataset}")

    @property
    def names_type(self) -> bool:
        """True for a single-type model's instruction (it names the type asked for)."""
        return "{type}" in self.with_dataset

    def render(self, category: Category | None, dataset: str | None = None) -> str:
        if self.names_type and category is None:
            raise InvalidArgument("this instruction names a type: give the category to render it for")
        kind = category.value if category is not None else ""
        if dataset:
            return self.with_dataset.format(type=kind, dataset=dataset)
        return self.without_dataset.format(type=kind)

    @classmethod
    def named(cls, name: str, multi_type: bool = False) -> InstructionTemplate:
        """The built-in templates: ``paper`` (VANER's wording) or ``compact``, in their single-type
        form or, with ``multi_type``, the form that asks for every category at once."""
        if name == "paper":
            return cls(MULTI_TEMPLATE, MULTI_TEMPLATE_NO_DATASET) if multi_type else cls()
        if name == "compact":
            return cls(*((MULTI_COMPACT_TEMPLATE, MULTI_COMPACT_TEMPLATE_NO_DATASET) if multi_type
                         else (COMPACT_TEMPLATE, COMPACT_TEMPLATE_NO_DATASET)))
        raise InvalidArgument(f"unknown instruction template {name!r}; expected paper or compact")

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> InstructionTemplate:
        unknown = sorted(set(data) - {"with_dataset", "without_dataset"})
        if unknown:
            raise InvalidArgument(f"unknown instruction template keys {unknown}; known: with_dataset, without_dataset")
        return cls(**data)
