"""Training-loop behaviour on a real data subset: determinism, from-scratch vocab, accumulation,
schedule, batching, resume guards. Small models, a few dozen steps each."""
import numpy as np
import pytest
from safetensors.numpy import load_file

import zhcls
from helpers import SMALL, subset
from zhcls.data.batching import inference_batches, training_batches
from zhcls.data.tokenizer import Tokenizer
from zhcls.errors import ZhclsError
from zhcls.training.loop import lr_factor

pytestmark = pytest.mark.slow  # real training: minutes; `-m 'not slow'` skips them while iterating


@pytest.fixture(scope="module")
def kq(shared, tmp_path_factory):
    return subset(shared / "data/kuake_qic", tmp_path_factory.mktemp("kq"), n_train=640, n_dev=200)


def quick(kq, shared, save_dir, **kw):
    args = dict(dataset_dir=str(kq), model_name=SMALL, init_random=True, save_dir=str(save_dir), epochs=1,
                max_seq_length=48, progress=False, vocab_file=str(shared / "vocab/bert-base-chinese/vocab.txt"))
    return zhcls.train(**{**args, **kw})


def test_same_seed_same_weights(kq, shared, tmp_path):
    a = quick(kq, shared, tmp_path / "a", threads=1)
    b = quick(kq, shared, tmp_path / "b", threads=1)
    c = quick(kq, shared, tmp_path / "c", threads=1, seed=4)
    wa, wb, wc = (load_file(r.save_dir / "model.safetensors") for r in (a, b, c))
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)
    assert not all(np.array_equal(wa[k], wc[k]) for k in wa)
    assert a.best_score == b.best_score


def test_vocab_from_data(kq, shared, tmp_path):
    result = quick(kq, shared, tmp_path / "v", vocab_file=None, vocab_from_data=True, vocab_size=3000)
    tokenizer = Tokenizer.from_dir(result.save_dir)
    assert tokenizer.vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert 500 < tokenizer.vocab_size <= 3000
    dev = [line.split("\t")[0] for line in (kq / "dev.txt").read_text(encoding="utf-8").splitlines()]
    ids = [i for row in tokenizer.encode(dev).input_ids for i in row[1:-1]]
    assert np.mean(np.array(ids) == tokenizer.unk_token_id) < 0.05  # dev characters are mostly known
    assert not list(tmp_path.glob("*vocab*"))  # the temporary vocab file is gone
    assert zhcls.load(result.save_dir).predict(dev[:3])[0]["label"] in tokenizer_labels(kq)


def tokenizer_labels(kq):
    return (kq / "label.txt").read_text(encoding="utf-8").split()


def test_gradient_accumulation_takes_fewer_steps(kq, shared, tmp_path):
    plain = quick(kq, shared, tmp_path / "p", batch_size=16)
    accumulated = quick(kq, shared, tmp_path / "g", batch_size=16, gradient_accumulation_steps=2)
    assert plain.global_step == 40 and accumulated.global_step == 20


def one_step(kq, shared, save_dir, batch_size, accumulation):
    """One optimizer step of the loop on 16 real KUAKE-QIC texts (dropout off: both runs compute the same
    function); returns the gradients the optimizer saw and the weights after the step."""
    import torch
    import torch.nn.functional as F

    from zhcls.data import read_examples, read_labels
    from zhcls.models.modeling import EncoderConfig, SequenceClassifier
    from zhcls.training.loop import Job, LoopConfig, fit, start

    labels = read_labels(kq / "label.txt")
    examples = read_examples(kq / "train.txt", labels)[0][:16]
    tokenizer = Tokenizer(shared / "vocab/bert-base-chinese/vocab.txt")
    enc = tokenizer.encode([e.text_a for e in examples], None, 48)
    y = torch.tensor([labels.index(e.labels[0]) for e in examples])
    cfg = LoopConfig(save_dir=str(save_dir), batch_size=batch_size, gradient_accumulation_steps=accumulation,
                     epochs=1, max_steps=1, learning_rate=1e-3, threads=1, progress=False)
    rt = start(cfg)
    model = SequenceClassifier(EncoderConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, intermediate_size=128, hidden_dropout_prob=0.0,
                                             attention_probs_dropout_prob=0.0, id2label=dict(enumerate(labels))))

    def loss(module, idx):
        batch = tokenizer.pad([enc.input_ids[i] for i in idx], [enc.token_type_ids[i] for i in idx])
        logits = module(**{k: torch.from_numpy(v) for k, v in batch.items()})
        return F.cross_entropy(logits, y[idx], reduction="sum"), {}

    grads = []

    def record(optimizer, args, kwargs):
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})

    from torch.optim.optimizer import register_optimizer_step_pre_hook

    hook = register_optimizer_step_pre_hook(record)
    try:
        fit(Job(model, [len(ids) for ids in enc.input_ids], loss, lambda: 0.0, lambda record: None), cfg, rt)
    finally:
        hook.remove()
    assert len(grads) == 1  # one optimizer step
    return grads[0], {k: v.clone() for k, v in model.state_dict().items()}


def test_gradient_accumulation_is_one_big_batch(kq, shared, tmp_path):
    """2 x batch 8 accumulated is the update of one batch of 16: same gradients, same weights after the step."""
    big_grads, big = one_step(kq, shared, tmp_path / "big", 16, 1)
    acc_grads, acc = one_step(kq, shared, tmp_path / "acc", 8, 2)
    half_grads, _ = one_step(kq, shared, tmp_path / "half", 8, 1)  # one batch of 8 alone: a different update
    assert big_grads.keys() == acc_grads.keys() and len(big_grads) > 20
    assert max(float((big_grads[k] - acc_grads[k]).abs().max()) for k in big_grads) <= 1e-6
    assert max(float((big[k] - acc[k]).abs().max()) for k in big) <= 1e-6
    assert max(float((big_grads[k] - half_grads[k]).abs().max()) for k in big_grads) > 1e-3
    assert max(float(v.abs().max()) for v in big_grads.values()) > 1e-3  # the step did something


def test_each_rank_takes_its_own_gpu():
    from zhcls.training.loop import rank_device

    assert [rank_device("auto", r, 4, cuda=True) for r in range(4)] == [f"cuda:{r}" for r in range(4)]
    assert rank_device("gpu", 1, 2, cuda=True) == "cuda:1"
    assert rank_device("auto", 1, 2, cuda=False) == "auto"  # CPU: gloo, every rank on the CPU
    assert rank_device("cpu", 1, 2, cuda=True) == "cpu"
    assert rank_device("auto", 0, 1, cuda=True) == "auto"  # one process: the usual choice


def test_early_stop_and_init_from_ckpt(kq, shared, tmp_path):
    first = quick(kq, shared, tmp_path / "first", epochs=2)
    # Starting from trained weights at a zero learning rate keeps them: dev score is reproduced.
    again = quick(kq, shared, tmp_path / "again", init_from_ckpt=str(first.save_dir), learning_rate=1e-12)
    assert again.best_score == pytest.approx(first.best_score, abs=0.006)
    stopped = quick(kq, shared, tmp_path / "stop", epochs=6, early_stop=True, early_stop_nums=1, learning_rate=1e-12)
    assert len(stopped.history) == 2  # no improvement after epoch 1: one more epoch, then stop


def test_resume_refuses_other_settings(kq, shared, tmp_path):
    quick(kq, shared, tmp_path / "r", max_steps=3)
    with pytest.raises(ZhclsError, match="batch_size"):
        quick(kq, shared, tmp_path / "r", max_steps=3, batch_size=8, resume=True)
    with pytest.raises(ZhclsError, match="nothing to resume"):
        quick(kq, shared, tmp_path / "none", resume=True)


def test_lr_schedule():
    assert [lr_factor(s, 10, 2) for s in (0, 1, 2, 6, 10)] == [0.0, 0.5, 1.0, 0.5, 0.0]
    assert lr_factor(0, 10, 0) == 1.0


def test_batches_cover_everything_once_and_group_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 120, size=5000)
    batches = training_batches(lengths, 32, np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(5000))
    padded = sum(len(b) * lengths[b].max() for b in batches)
    assert padded < 1.15 * lengths.sum()  # random batches would pad ~1.9x
    assert [b.tolist() for b in batches] == [b.tolist() for b in training_batches(lengths, 32, np.random.default_rng(1))]
    order = np.concatenate(inference_batches(lengths, 100))
    assert sorted(order.tolist()) == list(range(5000)) and (np.diff(lengths[order]) <= 0).all()


# Run under torchrun: `zhcls train` with each rank's final weights written to OUT/rank<R>.safetensors.
RANK_WEIGHTS = """
import sys
from safetensors.torch import save_file
import zhcls.training.finetune as finetune
from zhcls.cli import main

fit = finetune.fit

def fit_and_keep(job, cfg, rt):
    result = fit(job, cfg, rt)
    weights = {k: v.detach().cpu().clone() for k, v in job.model.state_dict().items()}
    save_file(weights, f"{sys.argv[1]}/rank{rt.rank}.safetensors")
    return result

finetune.fit = fit_and_keep
sys.exit(main(sys.argv[2:]))
"""


def test_torchrun_two_processes_split_the_batches(kq, shared, tmp_path):
    """DistributedDataParallel on CPU (gloo): two workers, each half the batches, gradients averaged between
    them, so both end with the same weights; one checkpoint."""
    import json
    import subprocess
    import sys

    script = tmp_path / "rank_weights.py"
    script.write_text(RANK_WEIGHTS, encoding="utf-8")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script), str(tmp_path),
           "train", "--dataset_dir", str(kq), "--model", SMALL, "--init_random", "--vocab_file",
           str(shared / "vocab/bert-base-chinese/vocab.txt"), "--save_dir", str(tmp_path / "ddp"), "--epochs", "1",
           "--max_seq_length", "48", "--threads", "1", "--no_baseline"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("best dev score") == 1
    state = json.loads((tmp_path / "ddp/training_state/state.json").read_text())
    assert state["step"] == 10  # 640 examples / 32 = 20 batches, 10 per worker
    # The ranks saw different batches; only averaged gradients leave them with identical weights.
    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert rank0.keys() == rank1.keys() and len(rank0) > 10
    for name in rank0:
        np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=name)
    saved = load_file(tmp_path / "ddp/model.safetensors")
    np.testing.assert_array_equal(saved["classifier.weight"], rank0["classifier.weight"])
    assert zhcls.load(tmp_path / "ddp").predict(["头疼怎么办"])[0]["label"] in tokenizer_labels(kq)


def test_fused_adamw_makes_the_loops_update():
    """The loop's AdamW is fused where the device has it (faster: benchmarks/engine.py); it must compute the
    per-parameter loop's update, decay groups included."""
    import copy

    import torch
    import torch.nn.functional as F

    from zhcls.training.loop import optimizer_for

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 3))
    twin, start = copy.deepcopy(model), copy.deepcopy(model)
    fused, loop = optimizer_for(model, 1e-2, 0.01), optimizer_for(twin, 1e-2, 0.01, fused=False)
    assert fused.defaults["fused"] and not loop.defaults["fused"]
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    for _ in range(3):
        for m, optimizer in ((model, fused), (twin, loop)):
            F.cross_entropy(m(x), y).backward()
            optimizer.step()
            optimizer.zero_grad()
    for a, b, before in zip(model.parameters(), twin.parameters(), start.parameters()):
        assert not torch.equal(a, before)  # both took real steps
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
