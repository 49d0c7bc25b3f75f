"""The causal-LM evaluator (mergekit_awd.tools.lm_scoring) against direct computations on a tiny
LLaMA, and the LLM track's splits."""

from __future__ import annotations

import math

import pytest
import torch

from mergekit_awd.testing.synthetic import TINY, llama_config, save_word_tokenizer
from mergekit_awd.tools import lm_scoring as S


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    from transformers import AutoTokenizer, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tok")
    save_word_tokenizer(folder, TINY.vocab_size)
    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config(TINY)).eval()
    return model, AutoTokenizer.from_pretrained(str(folder))


def direct_log_likelihood(model, tokenizer, prompt: str, continuation: str) -> float:
    """Unbatched, unpadded: Σ log softmax(logits)[next token] over the continuation's tokens."""
    p = tokenizer(prompt, add_special_tokens=True).input_ids
    c = tokenizer(continuation, add_special_tokens=False).input_ids
    ids = torch.tensor([p + c])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    return sum(float(log_probs[len(p) + i - 1, tok]) for i, tok in enumerate(c))


# prompts of different lengths, so batches are padded
PROMPTS = ["w1 w2 w3", "w4", "w5 w6 w7 w8 w9 w10 w11", "w12 w13"]


def test_choice_scores_equal_direct_computation_single_and_multi_token(lm):
    model, tokenizer = lm
    single = [S.ChoiceExample(p, (" w20", " w21", " w22"), 1) for p in PROMPTS]
    multi = [S.ChoiceExample(p, (" w20 w30", " w21", " w22 w31 w32"), 0) for p in PROMPTS]
    for examples in (single, multi):
        scores = S.choice_scores(model, tokenizer, examples, batch_size=3)
        for example, row in zip(examples, scores):
            expected = [direct_log_likelihood(model, tokenizer, example.prompt, c) for c in example.choices]
            assert row == pytest.approx(expected, rel=1e-4, abs=1e-4)
        predictions = S.rank_classification(model, tokenizer, examples, batch_size=3)
        assert predictions == [max(range(3), key=lambda j: row[j]) for row in scores]


# prompts sharing an instruction-like prefix of several tokens, of different lengths and not in
# length order, so the shared prefix runs once per batch and batches are formed after sorting
SHARED = ["w50 w51 w52 w53 w1 w2 w3", "w50 w51 w52 w53 w4", "w50 w51 w52 w53 w5 w6 w7 w8 w9",
          "w50 w51 w52 w53 w12 w13", "w50 w51 w52 w53 w14 w15 w16"]


def test_shared_prefix_length_keeps_one_token_per_prompt():
    assert S.shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5, 6]]) == 3
    assert S.shared_prefix_length([[1, 2], [1, 2, 3]]) == 1
    assert S.shared_prefix_length([[1, 2], [3, 2]]) == 0
    assert S.shared_prefix_length([]) == 0


@pytest.mark.parametrize("batch_size", [1, 2, 16])
def test_shared_prefix_scores_equal_direct_computation_in_the_callers_order(lm, batch_size):
    model, tokenizer = lm
    encoded = [S.encode_prompt(tokenizer, p) for p in SHARED]
    assert S.shared_prefix_length(encoded) >= 4
    examples = [S.ChoiceExample(p, (" w20", " w21", " w22"), 2) for p in SHARED]
    scores = S.choice_scores(model, tokenizer, examples, batch_size=batch_size)
    for example, row in zip(examples, scores):
        expected = [direct_log_likelihood(model, tokenizer, example.prompt, c) for c in example.choices]
        assert row == pytest.approx(expected, rel=1e-4, abs=1e-4)
    plain = S.choice_scores(model, tokenizer, examples, batch_size=batch_size, share_prefix=False)
    assert scores == [pytest.approx(row, rel=1e-4, abs=1e-4) for row in plain]
    outputs = S.greedy_continuations(model, tokenizer, SHARED, max_new_tokens=4, batch_size=batch_size)
    assert outputs == [direct_greedy(model, tokenizer, p, 4) for p in SHARED]
    assert outputs == S.greedy_continuations(model, tokenizer, SHARED, max_new_tokens=4, batch_size=batch_size,
                                             share_prefix=False)


def test_accuracy_counts_the_label(lm):
    model, tokenizer = lm
    examples = [S.ChoiceExample(p, (" w20", " w21"), 0) for p in PROMPTS]
    predictions = S.rank_classification(model, tokenizer, examples)
    assert S.accuracy(predictions, examples) == sum(p == 0 for p in predictions) / len(PROMPTS)
    with pytest.raises(ValueError):
        S.accuracy([], [])


def direct_greedy(model, tokenizer, prompt: str, steps: int) -> str:
    """Greedy decoding without a cache or padding: the whole sequence re-run at every step."""
    ids = tokenizer(prompt, add_special_tokens=True).input_ids
    new = []
    for _ in range(steps):
        with torch.no_grad():
            token = int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
        if token == tokenizer.eos_token_id:
            break
        new.append(token)
    return tokenizer.decode(new, skip_special_tokens=True)


def test_greedy_decoding_equals_uncached_unpadded_decoding_and_exact_match(lm):
    model, tokenizer = lm
    outputs = S.greedy_continuations(model, tokenizer, PROMPTS, max_new_tokens=5, batch_size=3)
    assert outputs == [direct_greedy(model, tokenizer, p, 5) for p in PROMPTS]
    assert any(o.strip() for o in outputs)
    right = [S.AnswerExample(p, " " + o) for p, o in zip(PROMPTS, outputs)]
    assert S.greedy_exact_match(model, tokenizer, right, max_new_tokens=5) == 1.0
    wrong = [S.AnswerExample(p, o + " w199") for p, o in zip(PROMPTS, outputs)]
    assert S.greedy_exact_match(model, tokenizer, wrong, max_new_tokens=5) == 0.0


def test_answer_log_likelihood_includes_eos(lm):
    model, tokenizer = lm
    examples = [S.AnswerExample(p, " w40 w41") for p in PROMPTS]
    scores = S.answer_log_likelihoods(model, tokenizer, examples, batch_size=2)
    for example, score in zip(examples, scores):
        expected = direct_log_likelihood(model, tokenizer, example.prompt, " w40 w41 </s>")
        assert score == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_perplexity_equals_direct_token_weighted_computation(lm):
    model, tokenizer = lm
    texts = ["w1 w2 w3 w4 w5", "w6 w7", "w8 w9 w10 w11 w12 w13 w14 w15"]
    nll, count = 0.0, 0
    for text in texts:
        ids = tokenizer(text, add_special_tokens=True).input_ids
        for i in range(1, len(ids)):
            nll -= direct_log_likelihood(model, tokenizer, " ".join(tokenizer.convert_ids_to_tokens(ids[:i])),
                                         " " + tokenizer.convert_ids_to_tokens(ids[i]))
            count += 1
    assert S.perplexity(model, tokenizer, texts, batch_size=2) == pytest.approx(math.exp(nll / count), rel=1e-4)


def test_arithmetic_splits_are_deterministic_and_disjoint():
    from benchmarks.llm.tasks import arithmetic_splits

    first, second = arithmetic_splits(), arithmetic_splits()
    assert first == second
    prompts = [{e.prompt for e in split} for split in (first.train, first.validation, first.test)]
    assert all(len(p) == n for p, n in zip(prompts, (len(first.train), len(first.validation), len(first.test))))
    assert not (prompts[0] & prompts[1]) and not (prompts[0] & prompts[2]) and not (prompts[1] & prompts[2])
    assert all(e.answer == f" {eval(e.prompt.split('What is ')[1].split('?')[0])}" for e in first.test)


def test_classification_splits_are_deterministic_disjoint_and_balanced(lm, monkeypatch):
    from benchmarks.text_tasks.setup_data import missing_apt_packages, missing_pip_packages

    if missing_pip_packages() or missing_apt_packages():
        pytest.skip("real data sources not installed (./run.sh llm-quality installs them)")
    import benchmarks.llm.tasks as llm_tasks
    from benchmarks.llm.tasks import CLASSIFICATION_TASKS, task_splits

    # the word-level test tokenizer knows no English: keep the texts whole (the SmolLM2 tokenizer
    # is not installed in CI); disjointness of the texts is what the split guarantees
    monkeypatch.setattr(llm_tasks, "truncate", lambda tokenizer, text, max_tokens=0: text)
    _, tokenizer = lm
    for name, task in CLASSIFICATION_TASKS.items():
        first, second = task_splits(name, tokenizer), task_splits(name, tokenizer)
        assert first == second
        sets = [{e.prompt for e in s} for s in (first.train, first.validation, first.test)]
        assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
        counts = [sum(e.label == c for e in first.test) for c in range(len(task.answers))]
        assert max(counts) - min(counts) <= 1
