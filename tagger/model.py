"""A LLaMA-family decoder used as a bidirectional token classifier over O/B/I (VANER 3.3).

The causal mask is replaced by a padding-only mask (every real token sees every real token;
padding is never attended to), built here as a 4-D additive mask that transformers passes to the
attention kernels untouched. ``attention="causal"`` builds causal+padding instead, for the
ablation. Because padding is masked as keys and positions start at 0 for every row, a sentence
gets the same logits alone or inside a right-padded batch.

A multi-type model (``TaggerConfig.multi_type``) has one O/B/I head per category (``categories``,
a fixed order saved with the model) behind an instruction that names no type, so one pass over a
sentence answers every category. Queries stay one per (sentence, category) for every model:
:meth:`VanerTagger.window_groups` says which queries share model windows (one per query for a
single-type model; a sentence's consecutive queries, one per type, for a multi-type one) and
:meth:`VanerTagger.fold` hands each query its own (words, 3) probabilities, so decoding, spans
and evaluation do not know which kind of model ran. Training labels are (tokens, categories) for a
multi-type model, IGNORE_INDEX for every category a sentence's corpus does not annotate, so the
same cross-entropy only sees supervised cells.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tagger.backbone import resolve_backbone
from tagger.config import TaggerConfig
from tagger.data import TAGS
from tagger.decoding import decode_tags
from tagger.encoding import IGNORE_INDEX, EncodedInput, InputEncoder
from vaner.categories import Category
from vaner.errors import FailedPrecondition, InvalidArgument, NotFound

log = logging.getLogger(__name__)

CONFIG_FILE = "tagger_config.json"
HEAD_FILE = "head.safetensors"
ADAPTER_DIR = "adapter"
TOKENIZER_DIR = "tokenizer"


@dataclass(frozen=True)
class WordQuery:
    """One sentence to label: words, the category the instruction asks for, optional dataset."""

    words: Sequence[str]
    category: Category
    dataset: str | None = None


def read_saved_meta(artifact: str | Path) -> dict:
    """The ``tagger_config.json`` of a saved model: its model config, training config, dev metrics."""
    path = Path(artifact) / CONFIG_FILE
    if not path.exists():
        raise NotFound(f"{artifact}: not a vaner model (no {CONFIG_FILE})")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"{path}: not JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict):
        raise InvalidArgument(f"{path}: no 'model' object")
    return meta


def read_saved_config(artifact: str | Path) -> TaggerConfig:
    """A saved model's :class:`TaggerConfig`, read the tolerant way (``TaggerConfig.from_saved``)."""
    return TaggerConfig.from_saved(read_saved_meta(artifact)["model"], f"{Path(artifact) / CONFIG_FILE}")


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FailedPrecondition(f"device {device!r} asked for, but CUDA is not available")
    return torch.device(device)


def fold_windows(lengths: Sequence[int], pieces: Iterable[tuple[int, int, np.ndarray]],
                 shape: tuple[int, ...] = (len(TAGS),)) -> list[np.ndarray]:
    """Per-input (len(words), *shape) probabilities from per-window ones: each piece is (input
    index, the window's first word in that input, :meth:`VanerTagger.window_proba` rows of the
    window); ``shape`` is a word's probabilities (:attr:`VanerTagger.word_shape`)."""
    results = [np.zeros((n, *shape), dtype=np.float32) for n in lengths]
    for qi, offset, p in pieces:
        results[qi][offset: offset + len(p)] = p
    return results


def saved_categories(meta: dict, config: TaggerConfig, source: str) -> tuple[Category, ...]:
    """The head's category order of a saved model (``categories`` in its meta): () for a
    single-type model, which has one O/B/I head whatever it is asked."""
    if not config.multi_type:
        return ()
    names = meta.get("categories")
    if not isinstance(names, list) or not names:
        raise InvalidArgument(f"{source}: a multi-type model must list its head's 'categories'")
    return tuple(Category.parse(n) for n in names)


def _load_base(config: TaggerConfig, device: torch.device):  # noqa: ANN202
    from transformers import AutoModel, AutoTokenizer

    ref = resolve_backbone(config.backbone)
    kwargs: dict = {}
    if ref.gguf_file:
        kwargs["gguf_file"] = ref.gguf_file
    if config.quantize_4bit:
        if device.type != "cuda":
            raise FailedPrecondition("4-bit QLoRA needs a CUDA GPU and bitsandbytes (pip install -e .[gpu])")
        try:
            from transformers import BitsAndBytesConfig
        except ImportError as exc:  # pragma: no cover
            raise FailedPrecondition(f"4-bit QLoRA needs bitsandbytes: {exc}") from exc
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref.location, **({"gguf_file": ref.gguf_file} if ref.gguf_file else {}))
        base = AutoModel.from_pretrained(ref.location, dtype=torch.float32, **kwargs)
    except OSError as exc:
        raise NotFound(f"cannot load backbone {config.backbone!r}: {exc}") from exc
    if base.config.model_type not in ("llama", "mistral", "qwen2", "qwen3"):
        log.warning("backbone model_type %s is not LLaMA-family; continuing", base.config.model_type)
    if config.num_layers is not None and config.num_layers < len(base.layers):
        base.layers = base.layers[: config.num_layers]
        base.config.num_hidden_layers = config.num_layers
        if isinstance(getattr(base.config, "layer_types", None), list):
            base.config.layer_types = base.config.layer_types[: config.num_layers]
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if not config.quantize_4bit:
        base.to(device)
    return base, tokenizer


def length_batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int, *, slack: float = 0.05,
                   min_rows: int = 8) -> list[range]:
    """Batches over ``lengths`` sorted ascending, as index ranges: at most ``batch_size`` rows and
    ``max_batch_tokens`` padded tokens each, and, past ``min_rows`` rows, no row that would make the
    padded tokens exceed the real ones by more than ``slack``. ``min_rows`` keeps the matmuls wide
    enough to run near the CPU's peak (a lone 40-token window does not)."""
    batches: list[range] = []
    i = 0
    while i < len(lengths):
        j, real = i + 1, lengths[i]
        while j < len(lengths) and j - i < batch_size and lengths[j] * (j - i + 1) <= max_batch_tokens:
            if j - i >= min_rows and lengths[j] * (j - i + 1) > (1 + slack) * (real + lengths[j]):
                break
            real += lengths[j]
            j += 1
        batches.append(range(i, j))
        i = j
    return batches


class VanerTagger(nn.Module):
    def __init__(self, backbone: nn.Module, tokenizer, config: TaggerConfig,  # noqa: ANN001
                 categories: Sequence[Category] | None = None):
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.config = config
        # the head's category order (multi-type only): a saved model's comes from its meta
        self.categories: tuple[Category, ...] = tuple(categories or Category) if config.multi_type else ()
        self._slot = {c: i for i, c in enumerate(self.categories)}
        hidden = backbone.config.hidden_size
        self.dropout = nn.Dropout(config.head_dropout)
        self.head = nn.Linear(hidden, len(TAGS) * max(len(self.categories), 1))
        self.encoder = InputEncoder(tokenizer, config.template, config.max_length)
        self.pad_id = tokenizer.pad_token_id

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def create(cls, config: TaggerConfig, device: str = "auto", seed: int = 0) -> VanerTagger:
        """A fresh tagger: pretrained backbone, new LoRA adapters and a new head (seeded)."""
        from peft import LoraConfig, get_peft_model

        dev = resolve_device(device)
        base, tokenizer = _load_base(config, dev)
        for p in base.parameters():
            p.requires_grad_(False)
        torch.manual_seed(seed)
        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=list(config.lora_targets), bias="none")
        try:
            peft_model = get_peft_model(base, lora)
        except ValueError as exc:
            raise InvalidArgument(f"LoRA targets {list(config.lora_targets)} do not match the backbone: {exc}") from exc
        model = cls(peft_model, tokenizer, config)
        nn.init.normal_(model.head.weight, std=0.02)
        nn.init.zeros_(model.head.bias)
        return model.to(dev)

    @classmethod
    def load(cls, artifact_dir: str | Path, device: str = "auto", trainable: bool = False) -> VanerTagger:
        """Load a saved tagger: backbone by its recorded reference, LoRA adapter, head."""
        from peft import PeftModel
        from safetensors.torch import load_file

        artifact = Path(artifact_dir)
        config = read_saved_config(artifact)
        categories = saved_categories(read_saved_meta(artifact), config, f"{artifact / CONFIG_FILE}")
        dev = resolve_device(device)
        base, tokenizer = _load_base(config, dev)
        peft_model = PeftModel.from_pretrained(base, str(artifact / ADAPTER_DIR), is_trainable=trainable)
        model = cls(peft_model, tokenizer, config, categories)
        model.head.load_state_dict(load_file(str(artifact / HEAD_FILE)))
        model.to(dev)
        model.train(trainable)
        if not trainable:
            model.eval()
        return model

    def save(self, artifact_dir: str | Path, extra: dict | None = None) -> Path:
        from safetensors.torch import save_file

        out = Path(artifact_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(str(out / ADAPTER_DIR))
        save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()},
                  str(out / HEAD_FILE))
        meta = {"format": 1, "labels": list(TAGS), "model": self.config.to_dict(),
                "hidden_size": self.backbone.config.hidden_size, **(extra or {})}
        if self.categories:
            meta["categories"] = [c.value for c in self.categories]
        (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        return out

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    @property
    def word_shape(self) -> tuple[int, ...]:
        """One word's probabilities from :meth:`window_proba`: (3,), or (categories, 3) multi-type."""
        return (len(self.categories), len(TAGS)) if self.categories else (len(TAGS),)

    def category_slot(self, category: Category) -> int:
        """Where a category's O/B/I logits sit in a multi-type head."""
        try:
            return self._slot[category]
        except KeyError:
            raise InvalidArgument(f"this model tags {', '.join(c.value for c in self.categories)}; "
                                  f"not {Category.parse(category).value}") from None

    # ---- forward ------------------------------------------------------------------------------
    def attention_mask_4d(self, attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(B, L) 1/0 padding mask -> (B, 1, L, L) additive mask: padding keys always masked;
        future keys masked too in causal mode."""
        b, n = attention_mask.shape
        allowed = attention_mask[:, None, None, :].bool().expand(b, 1, n, n)
        if self.config.attention == "causal":
            causal = torch.ones(n, n, dtype=torch.bool, device=attention_mask.device).tril()
            allowed = allowed & causal
        # a padded query row would see nothing under causal+padding; let it see itself (ignored later)
        eye = torch.eye(n, dtype=torch.bool, device=attention_mask.device)
        allowed = allowed | eye
        mask = torch.zeros(b, 1, n, n, dtype=dtype, device=attention_mask.device)
        return mask.masked_fill(~allowed, torch.finfo(dtype).min)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits (B, L, 3); (B, L, categories, 3) for a multi-type model."""
        dtype = self.head.weight.dtype
        mask4d = self.attention_mask_4d(attention_mask, dtype)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0).expand_as(input_ids)
        out = self.backbone(input_ids=input_ids, attention_mask=mask4d, position_ids=positions, use_cache=False)
        hidden = out.last_hidden_state.to(dtype)
        logits = self.head(self.dropout(hidden))
        return logits.unflatten(-1, self.word_shape) if self.categories else logits

    def collate(self, batch: Sequence[EncodedInput]) -> dict[str, torch.Tensor]:
        """Padded tensors; labels (B, L), or (B, L, categories) for a multi-type model with each
        input's tags in its own category's column and IGNORE_INDEX in the others (a corpus
        annotates one category: the others are unknown, not O)."""
        n = max(len(x.input_ids) for x in batch)
        ids = torch.full((len(batch), n), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), n), dtype=torch.long)
        labels = torch.full((len(batch), n, *self.word_shape[:-1]), IGNORE_INDEX, dtype=torch.long)
        for i, x in enumerate(batch):
            k = len(x.input_ids)
            ids[i, :k] = torch.tensor(x.input_ids)
            mask[i, :k] = 1
            if not self.categories:
                labels[i, :k] = torch.tensor(x.labels)
            elif x.category is not None:
                labels[i, :k, self.category_slot(x.category)] = torch.tensor(x.labels)
        dev = self.device
        return {"input_ids": ids.to(dev), "attention_mask": mask.to(dev), "labels": labels.to(dev)}

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy over the labelled (token, category) cells only."""
        logits = self(batch["input_ids"], batch["attention_mask"])
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1),
                                           ignore_index=IGNORE_INDEX)

    # ---- inference ----------------------------------------------------------------------------
    def query_windows(self, query: WordQuery) -> list[EncodedInput]:
        """The model inputs that cover one query's words (a long sentence takes several windows).
        Separate from :meth:`window_proba` so a server can encode lazily, just before a batch."""
        if not query.words:
            return []
        return self.encoder.encode_windows(list(query.words), query.category, query.dataset)

    def window_groups(self, queries: Sequence[WordQuery]) -> list[list[int]]:
        """Indices of the queries that one set of model windows answers, in order: each query
        alone for a single-type model (its instruction names the type); for a multi-type model
        each run of consecutive queries with the same words and dataset, whatever their
        categories (how :meth:`tagger.extract.Extractor.plan` lists a sentence's types). Only
        consecutive ones: a sentence repeated elsewhere is run again, as a single-type model
        would, so the two kinds' costs compare per sentence. Encode a group with
        :meth:`query_windows` of its first query."""
        if not self.categories:
            return [[i] for i in range(len(queries))]
        groups: list[list[int]] = []
        for i, q in enumerate(queries):
            self.category_slot(q.category)  # refuse a category the head lacks before any work
            if groups:
                first = queries[groups[-1][0]]
                if first.dataset == q.dataset and (first.words is q.words or list(first.words) == list(q.words)):
                    groups[-1].append(i)
                    continue
            groups.append([i])
        return groups

    def fold(self, queries: Sequence[WordQuery], groups: Sequence[Sequence[int]],
             pieces: Iterable[tuple[int, int, np.ndarray]]) -> list[np.ndarray]:
        """Each query's (len(words), 3) probabilities from the windows of :meth:`window_groups`:
        ``pieces`` are (group index, the window's first word, :meth:`window_proba` output)."""
        folded = fold_windows([len(queries[g[0]].words) for g in groups], pieces, self.word_shape)
        out: list[np.ndarray] = [np.zeros((0, len(TAGS)), dtype=np.float32)] * len(queries)
        for g, p in zip(groups, folded, strict=True):
            for qi in g:
                out[qi] = p[:, self.category_slot(queries[qi].category)] if self.categories else p
        return out

    @torch.no_grad()
    def window_proba(self, windows: Sequence[EncodedInput], batch_size: int = 32,
                     max_batch_tokens: int = 8192) -> list[np.ndarray]:
        """O/B/I probabilities at each window's kept words, shape (len(word_starts), *word_shape):
        (words, 3), or (words, categories, 3) for a multi-type model; in input order.

        Windows are sorted by length and cut into batches (:func:`length_batches`) that pad at
        most ~5 % beyond their real tokens: the service's fair queue hands over windows from
        several calls at once, whose lengths spread far wider than one call's, and padding is
        compute spent on nothing (it cost the gRPC path 13 % of its throughput)."""
        was_training = self.training
        self.eval()
        out: list[np.ndarray] = [np.zeros((0, *self.word_shape), dtype=np.float32)] * len(windows)
        order = sorted(range(len(windows)), key=lambda i: len(windows[i].input_ids))
        for span in length_batches([len(windows[i].input_ids) for i in order], batch_size, max_batch_tokens):
            rows = [order[k] for k in span]
            batch = self.collate([windows[j] for j in rows])
            probs = torch.softmax(self(batch["input_ids"], batch["attention_mask"]).float(), dim=-1).cpu().numpy()
            for row, j in enumerate(rows):
                out[j] = probs[row, windows[j].word_starts]
        self.train(was_training)
        return out

    def predict_proba(self, queries: Sequence[WordQuery], batch_size: int = 32,
                      max_batch_tokens: int = 8192) -> list[np.ndarray]:
        """Per-word O/B/I probabilities, shape (len(words), 3), for each query (a multi-type model
        runs each sentence once for all its queries' categories). Long sentences are covered by
        consecutive windows; inputs are sorted by length before batching."""
        groups = self.window_groups(queries)
        pieces = [(gi, enc) for gi, g in enumerate(groups) for enc in self.query_windows(queries[g[0]])]
        probs = self.window_proba([enc for _, enc in pieces], batch_size, max_batch_tokens)
        return self.fold(queries, groups,
                         ((gi, enc.word_offset, p) for (gi, enc), p in zip(pieces, probs, strict=True)))

    def predict_tags(self, queries: Sequence[WordQuery], batch_size: int = 32,
                     decoding: str = "viterbi") -> list[list[str]]:
        """O/B/I per word; ``viterbi`` never lets an I start an entity (tagger/decoding.py)."""
        return [decode_tags(p, decoding) for p in self.predict_proba(queries, batch_size)]
