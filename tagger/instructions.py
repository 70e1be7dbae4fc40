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

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> InstructionTemplate:
        return cls(**data)
