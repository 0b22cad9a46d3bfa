"""PaddleNLP checkpoint conversion, checked against outputs PaddleNLP itself computed.

The oracle is transformers: a converted checkpoint loaded strictly into its *ForSequenceClassification
must reproduce shared/fixtures/paddle/*/reference.json. The restricted unpickler must refuse any
global other than numpy's array reconstruction, before it runs.
"""
import builtins
import json
import os
import pickle
import pickletools
import shutil
import struct

import numpy as np
import pytest
import torch
import transformers

from zhcls.errors import ZhclsError
from zhcls.models.formats.paddle import (
    BOOKKEEPING_KEY,
    PDPARAMS,
    convert_paddle,
    is_paddle_dir,
    load_pdparams,
    unused_paddle_names,
)

FIXTURES = ("ernie_tiny_h64_l2", "bert_tiny_h64_l2", "electra_tiny_e32_h64_l2")
TOLERANCE = 1e-4  # the README's; a correct float32 conversion lands near 1e-6

pytestmark = pytest.mark.usefixtures("one_thread")




def fixture_dir(shared, name):
    return shared / "fixtures" / "paddle" / name


def hf_model(config: dict, state: dict) -> torch.nn.Module:
    """The transformers class the config names, with exactly these weights, in eval mode."""
    model = getattr(transformers, config["architectures"][0])(transformers.AutoConfig.for_model(**config))
    if model.base_model is model:  # a bare model's own names lack the "ernie." prefix the state dict keeps
        state = {k.removeprefix(f"{config['model_type']}."): v for k, v in state.items()}
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return model.eval()


def write_folder(path, params: dict, config: dict, config_name: str = "config.json"):
    """A PaddleNLP-style folder: the params pickled the way paddle.save does, and a config."""
    path.mkdir(parents=True, exist_ok=True)
    with open(path / PDPARAMS, "wb") as f:
        pickle.dump({**params, BOOKKEEPING_KEY: {k: f"param_{i}" for i, k in enumerate(params)}}, f, protocol=4)
    (path / config_name).write_text(json.dumps(config), encoding="utf-8")
    return path


def read_config(shared, name) -> dict:
    return json.loads((fixture_dir(shared, name) / "config.json").read_text(encoding="utf-8"))


def max_diff(a, b) -> float:
    return float((torch.as_tensor(a) - torch.as_tensor(b)).abs().max())


@pytest.mark.parametrize("name", FIXTURES)
def test_converted_fixture_reproduces_paddlenlp(shared, name):
    folder = fixture_dir(shared, name)
    config, state = convert_paddle(folder)
    model = hf_model(config, state)
    reference = json.loads((folder / "reference.json").read_text(encoding="utf-8"))
    diffs = {}
    with torch.no_grad():
        for example in reference["examples"]:
            out = model(input_ids=torch.tensor([example["input_ids"]]),
                        token_type_ids=torch.tensor([example["token_type_ids"]]), output_hidden_states=True)
            last = out.hidden_states[-1]
            outputs = {"logits": out.logits[0], "last_hidden_first_token": last[0, 0]}
            if "pooled_output" in example:  # ERNIE and BERT; ELECTRA has no pooler
                outputs["pooled_output"] = model.base_model.pooler(last)[0]
            for key, value in outputs.items():
                diffs[key] = max(diffs.get(key, 0.0), max_diff(value, example[key]))

        # One right-padded batch; PaddleNLP masked input_ids == pad_token_id itself.
        pad = config["pad_token_id"]
        length = reference["batch_padded_len"]
        examples = reference["examples"]
        input_ids = torch.tensor([e["input_ids"] + [pad] * (length - len(e["input_ids"])) for e in examples])
        token_type_ids = torch.tensor([e["token_type_ids"] + [0] * (length - len(e["token_type_ids"])) for e in examples])
        logits = model(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=(input_ids != pad).long()).logits
        diffs["batch_padded_logits"] = max_diff(logits, reference["batch_padded_logits"])

    print(f"{name} max abs diff vs PaddleNLP: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    assert all(v < TOLERANCE for v in diffs.values()), diffs


def test_config_has_what_transformers_needs_and_nothing_paddle_only(shared):
    ernie, _ = convert_paddle(fixture_dir(shared, "ernie_tiny_h64_l2"))
    assert ernie["model_type"] == "ernie" and ernie["architectures"] == ["ErnieForSequenceClassification"]
    assert ernie["use_task_id"] is True and ernie["task_type_vocab_size"] == 3
    assert ernie["num_labels"] == 5 and ernie["id2label"]["4"] == "LABEL_4" and ernie["label2id"]["LABEL_4"] == 4
    assert ernie["layer_norm_eps"] == 1e-12 and ernie["vocab_size"] == 40000 and ernie["max_position_embeddings"] == 2048
    assert not {"fuse", "pool_act", "paddlenlp_version", "task_id"} & set(ernie)
    electra, _ = convert_paddle(fixture_dir(shared, "electra_tiny_e32_h64_l2"))
    assert electra["embedding_size"] == 32 and electra["hidden_size"] == 64
    assert not {"disc_weight", "gen_weight", "num_choices", "use_task_id"} & set(electra)


def test_ernie_layer_norm_epsilon_is_1e12_whatever_the_config_says(shared, tmp_path):
    params = load_pdparams(fixture_dir(shared, "ernie_tiny_h64_l2"))
    config = {**read_config(shared, "ernie_tiny_h64_l2"), "layer_norm_eps": 1e-5}
    assert convert_paddle(write_folder(tmp_path / "ernie", params, config))[0]["layer_norm_eps"] == 1e-12
    bert = {**read_config(shared, "bert_tiny_h64_l2"), "layer_norm_eps": 1e-5}
    bert_params = load_pdparams(fixture_dir(shared, "bert_tiny_h64_l2"))
    assert convert_paddle(write_folder(tmp_path / "bert", bert_params, bert))[0]["layer_norm_eps"] == 1e-5


@pytest.mark.parametrize("name", FIXTURES)
def test_backbone_only_checkpoint_converts(shared, tmp_path, name):
    """A bare model saved by PaddleNLP: no classifier, no "ernie." prefix; same backbone outputs."""
    folder = fixture_dir(shared, name)
    model_type = read_config(shared, name)["model_type"]
    params = {k.removeprefix(f"{model_type}."): v for k, v in load_pdparams(folder).items() if not k.startswith("classifier.")}
    bare = {k: v for k, v in read_config(shared, name).items() if k not in ("id2label", "label2id", "architectures")}
    config, state = convert_paddle(write_folder(tmp_path, params, {**bare, "architectures": ["XModel"]}))
    assert "num_labels" not in config and config["architectures"][0].endswith("Model")
    assert not any(k.startswith("classifier.") for k in state)
    model = hf_model(config, state)
    example = json.loads((folder / "reference.json").read_text(encoding="utf-8"))["examples"][0]
    with torch.no_grad():
        out = model(input_ids=torch.tensor([example["input_ids"]]), token_type_ids=torch.tensor([example["token_type_ids"]]))
    assert max_diff(out.last_hidden_state[0, 0], example["last_hidden_first_token"]) < TOLERANCE
    if "pooled_output" in example:
        assert max_diff(out.pooler_output[0], example["pooled_output"]) < TOLERANCE


def test_legacy_model_config_json(shared, tmp_path):
    """PaddleNLP < 2.5 wrote model_config.json: task arguments on top, the backbone's in init_args."""
    name = "ernie_tiny_h64_l2"
    new = read_config(shared, name)
    backbone_keys = ("attention_probs_dropout_prob", "hidden_act", "hidden_dropout_prob", "hidden_size",
                     "initializer_range", "intermediate_size", "max_position_embeddings", "num_attention_heads",
                     "num_hidden_layers", "pad_token_id", "task_type_vocab_size", "type_vocab_size", "use_task_id",
                     "vocab_size")
    legacy = {"init_args": [{**{k: new[k] for k in backbone_keys}, "init_class": "ErnieModel"}],
              "init_class": "ErnieForSequenceClassification", "num_classes": 5, "dropout": None}
    folder = tmp_path / "legacy"
    folder.mkdir()
    shutil.copy(fixture_dir(shared, name) / PDPARAMS, folder / PDPARAMS)
    (folder / "model_config.json").write_text(json.dumps(legacy), encoding="utf-8")
    old_config, old_state = convert_paddle(folder)
    new_config, new_state = convert_paddle(fixture_dir(shared, name))
    new_config.pop("classifier_dropout")  # only the new layout records it
    assert old_config == new_config
    assert old_state.keys() == new_state.keys()


def test_unused_tensors_are_listed_not_converted(shared, tmp_path, caplog):
    params = load_pdparams(fixture_dir(shared, "bert_tiny_h64_l2"))
    params["cls.predictions.decoder_bias"] = np.zeros(21128, np.float32)
    folder = write_folder(tmp_path, params, read_config(shared, "bert_tiny_h64_l2"))
    assert unused_paddle_names(folder) == ["cls.predictions.decoder_bias"]
    _, state = convert_paddle(folder)
    assert "cls.predictions.decoder_bias" in caplog.text
    assert not any(k.startswith("cls.") for k in state)


def test_a_token_classifier_head_is_not_taken_for_a_sequence_classifier(shared, tmp_path):
    config = {**read_config(shared, "ernie_tiny_h64_l2"), "architectures": ["ErnieForTokenClassification"]}
    folder = write_folder(tmp_path, load_pdparams(fixture_dir(shared, "ernie_tiny_h64_l2")), config)
    converted, _ = convert_paddle(folder)
    assert converted["architectures"] == ["ErnieModel"] and "num_labels" not in converted
    assert unused_paddle_names(folder) == ["classifier.bias", "classifier.weight"]


def test_missing_tensor_is_named(shared, tmp_path):
    params = load_pdparams(fixture_dir(shared, "bert_tiny_h64_l2"))
    del params["bert.encoder.layers.1.linear2.weight"]
    folder = write_folder(tmp_path, params, read_config(shared, "bert_tiny_h64_l2"))
    with pytest.raises(ZhclsError, match=r"missing 1 tensor.*bert\.encoder\.layers\.1\.linear2\.weight"):
        convert_paddle(folder)


def test_ernie_task_id_row_becomes_row_zero(shared, tmp_path):
    """PaddleNLP adds task_type_embeddings[config.task_id]; transformers adds row 0."""
    params = load_pdparams(fixture_dir(shared, "ernie_tiny_h64_l2"))
    config = {**read_config(shared, "ernie_tiny_h64_l2"), "task_id": 2}
    _, state = convert_paddle(write_folder(tmp_path, params, config))
    rows = params["ernie.embeddings.task_type_embeddings.weight"]
    np.testing.assert_array_equal(state["ernie.embeddings.task_type_embeddings.weight"], rows[[2, 1, 0]])


def test_bfloat16_stored_as_uint16_bits(shared, tmp_path):
    name = "electra_tiny_e32_h64_l2"
    params = load_pdparams(fixture_dir(shared, name))
    bf16 = {k: (v.view(np.uint32) >> 16).astype(np.uint16) for k, v in params.items()}  # what paddle.save writes
    _, state = convert_paddle(write_folder(tmp_path, bf16, read_config(shared, name)))
    _, reference = convert_paddle(fixture_dir(shared, name))
    for key, value in reference.items():
        assert state[key].dtype == np.float32
        np.testing.assert_allclose(state[key], value, rtol=2**-7, atol=1e-30)


@pytest.mark.parametrize("name, change, problem", [
    ("electra_tiny_e32_h64_l2", {"hidden_act": "relu"}, "always uses gelu"),
    ("bert_tiny_h64_l2", {"pool_act": "linear"}, "pooler is always tanh"),
    ("bert_tiny_h64_l2", {"model_type": "roberta"}, "not supported"),
])
def test_configs_transformers_cannot_reproduce_are_refused(shared, tmp_path, name, change, problem):
    folder = write_folder(tmp_path, load_pdparams(fixture_dir(shared, name)), {**read_config(shared, name), **change})
    with pytest.raises(ZhclsError, match=problem):
        convert_paddle(folder)


class Payload:
    """Unpickles as ``func(*args)``: the classic pickle code-execution gadget."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("gadget", ["open", "os.system"])
def test_malicious_pdparams_is_refused_before_the_payload_runs(tmp_path, gadget):
    marker = tmp_path / "pwned"
    payload = Payload(builtins.open, (str(marker), "w")) if gadget == "open" else Payload(os.system, (f"touch '{marker}'",))
    path = tmp_path / PDPARAMS
    path.write_bytes(pickle.dumps({"ok.weight": np.zeros((2, 2), np.float32), "evil": payload}, protocol=4))
    with pytest.raises(ZhclsError, match=r"refusing to unpickle \S+\.(open|system) from .*not a plain array checkpoint"):
        load_pdparams(path)
    assert not marker.exists()


def pickle_with_numpy_module(obj, module: str) -> bytes:
    """A protocol-4 pickle of ``obj`` whose array globals live in ``module`` (numpy 1 and 2 differ)."""
    data = pickle.dumps(obj, protocol=4)
    written = next(arg for _, arg, _ in pickletools.genops(data) if isinstance(arg, str) and arg.endswith("core.multiarray"))
    old, new = written.encode(), module.encode()
    # A small pickle is PROTO 4, then one FRAME (opcode + 8-byte length) holding everything else.
    assert data[2:3] == pickle.FRAME
    body = data[11:].replace(pickle.SHORT_BINUNICODE + bytes([len(old)]) + old,
                             pickle.SHORT_BINUNICODE + bytes([len(new)]) + new)
    return data[:2] + pickle.FRAME + struct.pack("<Q", len(body)) + body


@pytest.mark.parametrize("module", ["numpy.core.multiarray", "numpy._core.multiarray"])
def test_both_numpy_module_spellings_load(tmp_path, module):
    weights = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.array([1, 2], np.int64),
               BOOKKEEPING_KEY: {"w": "linear_0.w_0"}}
    data = pickle_with_numpy_module(weights, module)
    assert module in {arg for _, arg, _ in pickletools.genops(data)}
    path = tmp_path / PDPARAMS
    path.write_bytes(data)
    loaded = load_pdparams(path)
    assert loaded.keys() == {"w", "n"}
    np.testing.assert_array_equal(loaded["w"], weights["w"])
    np.testing.assert_array_equal(loaded["n"], weights["n"])


@pytest.mark.parametrize("content", [
    pytest.param("truncated", id="truncated"),
    pytest.param(b"", id="empty"),
    pytest.param(b"PK\x03\x04 this is a zip, not a pickle" * 10, id="garbage"),
    pytest.param(b"\x80\x04\x95\xff\xff\xff\xff\x00\x00\x00\x00}q\x00", id="bad-frame"),
    pytest.param(pickle.dumps([np.zeros(3)], protocol=4), id="not-a-dict"),
    pytest.param(pickle.dumps({"w": np.array([1, "a"], dtype=object)}, protocol=4), id="object-array"),
    pytest.param(None, id="missing-file"),
])
def test_broken_pdparams_give_a_one_line_zhcls_error(shared, tmp_path, content):
    path = tmp_path / PDPARAMS
    if content == "truncated":
        with open(fixture_dir(shared, "electra_tiny_e32_h64_l2") / PDPARAMS, "rb") as f:
            content = f.read(100_000)
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ZhclsError) as error:
        load_pdparams(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_folder_detection_and_missing_config(shared, tmp_path):
    assert is_paddle_dir(fixture_dir(shared, "bert_tiny_h64_l2"))
    assert not is_paddle_dir(tmp_path)
    shutil.copy(fixture_dir(shared, "electra_tiny_e32_h64_l2") / PDPARAMS, tmp_path / PDPARAMS)
    with pytest.raises(ZhclsError, match="without config.json or model_config.json"):
        convert_paddle(tmp_path)
