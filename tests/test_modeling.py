"""The encoder against transformers on random weights: same names, same logits (<= 1e-5)."""
import pytest
import torch

from zhcls.models.modeling import EncoderConfig, SequenceClassifier, count_parameters

transformers = pytest.importorskip("transformers")

SHAPES = {
    "bert": dict(model_type="bert", vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=128, hidden_act="gelu_new"),
    "ernie": dict(model_type="ernie", vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=128, type_vocab_size=4, use_task_id=True, task_type_vocab_size=3,
                  max_position_embeddings=2048),
    "electra": dict(model_type="electra", vocab_size=300, embedding_size=32, hidden_size=64, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=128),
}


def hf_model(config: EncoderConfig):
    hf_config = transformers.AutoConfig.for_model(**{k: v for k, v in config.to_dict().items() if k != "model_type"},
                                                  model_type=config.model_type)
    return transformers.AutoModelForSequenceClassification.from_config(hf_config).eval()


def batch(vocab_size, lengths=(9, 5, 1 + 1), seed=0):
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.randint(1, vocab_size, (len(lengths), T), generator=g)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    ids = ids * mask  # pad id 0 after the text
    types = torch.zeros_like(ids)
    types[:, 3:] = 1
    return ids, types * mask, mask


@pytest.mark.parametrize("family", list(SHAPES))
def test_logits_match_transformers(family):
    config = EncoderConfig(**SHAPES[family], id2label={0: "a", 1: "b", 2: "c"})
    ours = SequenceClassifier(config).eval()
    theirs = hf_model(config)
    # Same parameter names and shapes in both directions: theirs loads ours strictly.
    missing, unexpected = theirs.load_state_dict(ours.state_dict(), strict=False)
    assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
    ids, types, mask = batch(config.vocab_size)
    with torch.no_grad():
        diff = (ours(ids, types, mask) - theirs(input_ids=ids, token_type_ids=types, attention_mask=mask).logits).abs().max()
    assert diff <= 1e-5, diff
    assert ours.num_parameters() == count_parameters(config) == theirs.num_parameters()


def test_padding_does_not_change_logits():
    config = EncoderConfig(**SHAPES["ernie"])
    model = SequenceClassifier(config).eval()
    ids, types, mask = batch(config.vocab_size, lengths=(9, 4))
    with torch.no_grad():
        padded = model(ids, types, mask)[1]
        alone = model(ids[1:, :4], types[1:, :4], mask[1:, :4])[0]
    assert (padded - alone).abs().max() <= 1e-5


def test_pruned_layers_have_their_own_widths():
    config = EncoderConfig(**SHAPES["bert"], layer_num_heads=[2, 4], layer_intermediate_sizes=[64, 96])
    model = SequenceClassifier(config).eval()
    assert model.bert.encoder.layer[0].attention.self.query.weight.shape == (32, 64)
    assert model.bert.encoder.layer[1].intermediate.dense.weight.shape == (96, 64)
    ids, types, mask = batch(config.vocab_size)
    assert model(ids, types, mask).shape == (3, 2)
    assert model.num_parameters() == count_parameters(config)
    assert EncoderConfig.from_dict(config.to_dict()) == config
