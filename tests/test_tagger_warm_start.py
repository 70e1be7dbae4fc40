"""Strict configs (unknown keys refused; saved configs read the tolerant way) and the one warm-start
check shared by ``vaner train --init-from`` and ``vaner retrain``."""

from __future__ import annotations

import json

import pytest

import tagger.config
from tagger.config import TaggerConfig, TrainConfig
from tagger.instructions import InstructionTemplate
from tagger.model import read_saved_config
from tagger.warm_start import trained_steps, warm_start_config
from vaner.errors import InvalidArgument, NotFound


def test_from_dict_refuses_unknown_keys_and_names_them():
    with pytest.raises(InvalidArgument, match="unknown model setting 'lora_rank'.*known: backbone"):
        TaggerConfig.from_dict({"lora_rank": 4})
    with pytest.raises(InvalidArgument, match="unknown training setting 'lr_head'"):
        TrainConfig.from_dict({"datasets": ["ncbi"], "lr_head": 0.1})
    with pytest.raises(InvalidArgument, match="unknown model setting 'layers'"):
        TrainConfig.from_dict({"datasets": ["ncbi"], "model": {"layers": 2}})
    with pytest.raises(InvalidArgument, match="unknown instruction template keys"):
        TaggerConfig.from_dict({"template": {"with_dataset": "{type} {dataset}", "prefix": "x"}})
    cfg = TrainConfig.from_dict({"datasets": ["ncbi"], "model": {"num_layers": 2}, "lr": 2e-4})
    assert cfg.model.num_layers == 2 and cfg.lr == 2e-4
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # a run's saved train_config reads back


def test_saved_configs_ignore_retired_keys_and_refuse_unknown_ones(tmp_path, monkeypatch):
    art = tmp_path / "m"
    art.mkdir()
    (art / "tagger_config.json").write_text(json.dumps({"model": {"backbone": "b", "old_knob": 1}}))
    with pytest.raises(InvalidArgument, match=r"tagger_config.json: model settings 'old_knob' .* newer release"):
        read_saved_config(art)
    monkeypatch.setitem(tagger.config.RETIRED_MODEL_KEYS, "old_knob", "removed; had no effect")
    assert read_saved_config(art) == TaggerConfig(backbone="b")  # missing keys take their defaults
    with pytest.raises(NotFound, match="not a vaner model"):
        read_saved_config(tmp_path)


def _saved(tmp_path, **model):
    art = tmp_path / "saved"
    art.mkdir(exist_ok=True)
    cfg = TaggerConfig(**{"backbone": "tiny", "num_layers": 4, **model})
    (art / "tagger_config.json").write_text(json.dumps({"model": cfg.to_dict(), "step": 300}))
    return art, cfg


def test_warm_start_keeps_the_saved_model_settings(tmp_path):
    art, cfg = _saved(tmp_path, template=InstructionTemplate.named("compact"))
    assert warm_start_config(art, None, source="m", hint="h") == cfg
    agreeing = {"backbone": "tiny", "num_layers": 4, "lora_targets": list(cfg.lora_targets),
                "template": InstructionTemplate.named("compact").to_dict()}
    assert warm_start_config(art, agreeing, source="m", hint="h") == cfg  # lists, dicts: same values
    assert trained_steps(art) == 300


@pytest.mark.parametrize("given, shown", [
    ({"num_layers": 2}, "num_layers 2 vs 4"),
    ({"backbone": "other", "lora_r": 4}, "backbone 'other' vs 'tiny'; lora_r 4 vs 12"),
    ({"template": InstructionTemplate()}, "instruction"),
    ({"lora_dropout": 0.0}, "lora_dropout 0.0 vs 0.1"),
])
def test_warm_start_refuses_settings_that_disagree(tmp_path, given, shown):
    art, _ = _saved(tmp_path, template=InstructionTemplate.named("compact"))
    with pytest.raises(InvalidArgument) as err:
        warm_start_config(art, given, source="the current model m1", hint="or pass --from-scratch")
    assert shown in err.value.message and "the current model m1" in err.value.message
    assert err.value.message.endswith("or pass --from-scratch")


def test_train_init_from_refuses_disagreeing_flags_before_loading(tmp_path, capsys, vaner_home):
    from vaner.cli import main

    art, _ = _saved(tmp_path)
    code = main(["train", "--datasets", "ncbi", "--init-from", str(art), "--num-layers", "2",
                 "--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "num_layers 2 vs 4" in err and "--init-from" in err
    code = main(["train", "--datasets", "ncbi", "--init-from", str(art), "--instruction", "compact",
                 "--output-dir", str(tmp_path / "run")])
    assert code == 2 and "instruction" in capsys.readouterr().err
