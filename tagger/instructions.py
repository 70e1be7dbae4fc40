"""The instruction is a strategy object stored with the model (flair's prefixed tagger, VANER 3.2).

It renders the prompt for a (category, dataset) pair; the sentence words follow it and only they
are labelled. DBR sentences and unseen text use the dataset-free form (paper eq. 6).
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


@dataclass(frozen=True)
class InstructionTemplate:
    with_dataset: str = DEFAULT_TEMPLATE
    without_dataset: str = DEFAULT_TEMPLATE_NO_DATASET

    def __post_init__(self) -> None:
        for field_name, text in (("with_dataset", self.with_dataset), ("without_dataset", self.without_dataset)):
            if "{type}" not in text:
                raise InvalidArgument(f"instruction template {field_name} must contain {{type}}: {text!r}")
        if "{dataset}" not in self.with_dataset:
            raise InvalidArgument("instruction template with_dataset must contain {dataset}")

    def render(self, category: Category, dataset: str | None = None) -> str:
        if dataset:
            return self.with_dataset.format(type=category.value, dataset=dataset)
        return self.without_dataset.format(type=category.value)

    @classmethod
    def named(cls, name: str) -> InstructionTemplate:
        """The built-in templates: ``paper`` (VANER's wording) or ``compact``."""
        if name == "paper":
            return cls()
        if name == "compact":
            return cls(COMPACT_TEMPLATE, COMPACT_TEMPLATE_NO_DATASET)
        raise InvalidArgument(f"unknown instruction template {name!r}; expected paper or compact")

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> InstructionTemplate:
        unknown = sorted(set(data) - {"with_dataset", "without_dataset"})
        if unknown:
            raise InvalidArgument(f"unknown instruction template keys {unknown}; known: with_dataset, without_dataset")
        return cls(**data)
