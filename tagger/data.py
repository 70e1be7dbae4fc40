"""Old import path of :mod:`vaner.corpus` (sentences, CoNLL reader, dataset registry).

Kept only for modules that still import from here (the model, encoding and training code); new
code imports :mod:`vaner.corpus`, the one home of corpus reading.
"""

from vaner.corpus import (  # noqa: F401 - re-exported
    DATASETS,
    TAG_TO_ID,
    TAGS,
    DatasetInfo,
    DatasetRegistry,
    Sentence,
    benchmark_eval_texts,
    default_data_dir,
    load_dataset,
    read_conll,
    tags_to_spans,
)
