"""Score a causal LM the way lm-evaluation-harness does: rank classification, greedy exact match,
perplexity.  Shared by the LLM benchmark (``benchmarks/llm``) and ``mergekit-awd tune``.

* **Rank classification** (:func:`rank_classification`): for a prompt p and candidate answers
  c₁…c_C the prediction is argmax_c Σ_t log P(c[t] | p, c[<t]) (summed token log-probabilities,
  nats, no length normalisation: lm-eval's ``acc``).  Prompt and answer are tokenized separately
  and concatenated (lm-eval encodes the whole string and splits it; for answers that start with a
  space, as ours do, the two agree with a BPE tokenizer whose pre-tokenizer splits at spaces).
  When every candidate of an example is one token, one forward pass of the prompt gives all the
  scores (the same numbers, C times cheaper).
* **Exact match** (:func:`greedy_exact_match`): greedy decoding from the prompt until the EOS token
  or ``max_new_tokens``; the decoded continuation, stripped, must equal the answer stripped.
* **Answer log-likelihood** (:func:`answer_log_likelihoods`): Σ_t log P(a[t] | p, a[<t]) for the
  answer tokens followed by EOS, nats.
* **Perplexity** (:func:`perplexity`): exp of the mean next-token negative log-likelihood over every
  predicted token of every text (token-weighted), each text its own sequence with the BOS token when
  the tokenizer adds one.

Batches are left-padded with explicit position ids (cumulative attention mask), so a padded example
scores the same as the example alone (tested to float rounding).  Prompt batches (rank
classification with one-token answers, greedy decoding) are formed after sorting the prompts by
length, and the token prefix that every prompt of a call shares (the task's instruction) is run once
per batch with batch size 1, its key/value cache repeated over the batch: the same numbers (to float
rounding) for a fraction of the prompt tokens; ``benchmarks/llm/bench_scoring.py`` measures the
saving.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import torch

from mergekit_awd.errors import EvaluationDataError

DEFAULT_BATCH_SIZE = 16
DEFAULT_MAX_NEW_TOKENS = 8
Progress = Optional[Callable[[int], None]]


@dataclass(frozen=True)
class ChoiceExample:
    """A prompt, its candidate answers (each as it follows the prompt, e.g. ``" positive"``) and the
    index of the right one."""

    prompt: str
    choices: Tuple[str, ...]
    label: int


@dataclass(frozen=True)
class AnswerExample:
    """A prompt and the answer to generate (``" 85"``)."""

    prompt: str
    answer: str


@dataclass(frozen=True)
class PromptExample:
    """A line without a label or an answer: a prompt, and the candidate answers if it has them.  It
    is scored by nothing; layer-wise tuning's ``entropy`` objective uses it (the model's distribution
    over the choices, or over the next token)."""

    prompt: str
    choices: Tuple[str, ...] = ()


def _pad_left(sequences: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> Tuple[torch.Tensor, ...]:
    """input_ids, attention_mask, position_ids of left-padded sequences."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq):] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, width - len(seq):] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


def _pad_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def encode_prompt(tokenizer, prompt: str) -> List[int]:
    """Prompt token ids, with the tokenizer's special tokens (BOS where it adds one)."""
    return list(tokenizer(prompt, add_special_tokens=True).input_ids)


def encode_continuation(tokenizer, text: str) -> List[int]:
    """Continuation token ids, no special tokens; raises on an empty continuation."""
    ids = list(tokenizer(text, add_special_tokens=False).input_ids)
    if not ids:
        raise EvaluationDataError(f"continuation {text!r} has no tokens")
    return ids


def _cache_keyword(model) -> str:
    """``cache`` in recent transformers (``past_key_values`` is deprecated there), else the old name."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def shared_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Number of leading tokens every prompt shares, at most the shortest length - 1 (each prompt
    keeps one token of its own to run after the shared part)."""
    if not prompts:
        return 0
    shortest = min(len(p) for p in prompts)
    first = prompts[0]
    length = 0
    while length < shortest - 1 and all(p[length] == first[length] for p in prompts):
        length += 1
    return length


def _length_sorted_batches(prompts: Sequence[Sequence[int]], size: int, sort: bool = True) -> Iterator[List[int]]:
    """Indices of ``prompts`` in batches of ``size``, shortest first (less padding per batch);
    in the given order with ``sort=False``."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i])) if sort else list(range(len(prompts)))
    for start in range(0, len(order), size):
        yield order[start:start + size]


@torch.no_grad()
def continuation_log_likelihoods(
    model, tokenizer, pairs: Sequence[Tuple[List[int], List[int]]], batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress = None,
) -> List[float]:
    """Σ_t log P(cont[t] | prompt, cont[<t]) (nats, float64 sum) for (prompt ids, continuation ids)."""
    device = _model_device(model)
    sequences = [list(p) + list(c) for p, c in pairs]
    scores: List[Optional[float]] = [None] * len(pairs)
    for indices in _length_sorted_batches(sequences, batch_size):
        ids, mask, positions = _pad_left([sequences[i] for i in indices], _pad_id(tokenizer), device)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        width = ids.shape[1]
        for row, i in enumerate(indices):
            n = len(pairs[i][1])
            # token at column j is predicted by the logits at column j - 1
            targets = ids[row, width - n:]
            rows = log_probs[row, width - n - 1:width - 1]
            scores[i] = float(rows.gather(1, targets[:, None]).double().sum())
        if progress is not None:
            progress(len(indices))
    return scores  # type: ignore[return-value]


def _prefill(model, tokenizer, batch: Sequence[Sequence[int]], prefix_length: int):
    """One forward pass of left-padded prompts that share their first ``prefix_length`` tokens.

    The shared prefix runs once (batch size 1) and its cache is repeated over the batch; the rest
    of each prompt runs left-padded after it, with positions continuing from the prefix.  Returns
    (model output with its cache, attention mask over prefix + rest, position ids of the rest).
    A model whose cache cannot be repeated over a batch runs the whole prompts."""
    device = _model_device(model)
    cache = None
    if prefix_length:
        prefix = torch.tensor([list(batch[0][:prefix_length])], dtype=torch.long, device=device)
        cache = _output_cache(model(input_ids=prefix, use_cache=True, logits_to_keep=1))
        if hasattr(cache, "batch_repeat_interleave"):
            cache.batch_repeat_interleave(len(batch))
        else:
            cache, prefix_length = None, 0
    ids, mask, positions = _pad_left([p[prefix_length:] for p in batch], _pad_id(tokenizer), device)
    cache_arg = {}
    if cache is not None:
        cache_arg = {_cache_keyword(model): cache}
        mask = torch.cat([torch.ones((len(batch), prefix_length), dtype=mask.dtype, device=device), mask], dim=1)
        positions = positions + prefix_length
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                **cache_arg)
    return out, mask, positions


def _output_cache(output):
    cache = output.get("cache")
    return output.get("past_key_values") if cache is None else cache


@torch.no_grad()
def _next_token_log_probs(model, tokenizer, prompts: Sequence[List[int]], batch_size: int, progress: Progress,
                          share_prefix: bool = True) -> List[torch.Tensor]:
    """log P(· | prompt) over the vocabulary, one float32 vector per prompt (in ``prompts``' order)."""
    prefix_length = shared_prefix_length(prompts) if share_prefix else 0
    out: List[Optional[torch.Tensor]] = [None] * len(prompts)
    for indices in _length_sorted_batches(prompts, batch_size, sort=share_prefix):
        result, _, _ = _prefill(model, tokenizer, [prompts[i] for i in indices], prefix_length)
        for i, vector in zip(indices, torch.log_softmax(result.logits[:, -1].float(), dim=-1).cpu()):
            out[i] = vector
        if progress is not None:
            progress(len(indices))
    return out  # type: ignore[return-value]


def choice_scores(
    model, tokenizer, examples: Sequence[ChoiceExample], batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress = None, share_prefix: bool = True,
) -> List[List[float]]:
    """Summed log-probability of every candidate of every example (nats).  ``share_prefix=False``
    batches the prompts in the given order and runs each whole (the same scores, slower)."""
    prompts = [encode_prompt(tokenizer, e.prompt) for e in examples]
    choices = [[encode_continuation(tokenizer, c) for c in e.choices] for e in examples]
    single = [i for i, cs in enumerate(choices) if all(len(c) == 1 for c in cs)]
    multi = [i for i, cs in enumerate(choices) if not all(len(c) == 1 for c in cs)]
    scores: List[Optional[List[float]]] = [None] * len(examples)
    if single:
        vectors = _next_token_log_probs(model, tokenizer, [prompts[i] for i in single], batch_size, progress,
                                        share_prefix)
        for i, vector in zip(single, vectors):
            scores[i] = [float(vector[c[0]]) for c in choices[i]]
    if multi:
        pairs = [(prompts[i], c) for i in multi for c in choices[i]]
        flat = continuation_log_likelihoods(model, tokenizer, pairs, batch_size)
        at = 0
        for i in multi:
            scores[i] = flat[at:at + len(choices[i])]
            at += len(choices[i])
            if progress is not None:
                progress(1)
    return [s for s in scores if s is not None]


def rank_classification(
    model, tokenizer, examples: Sequence[ChoiceExample], batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress = None, share_prefix: bool = True,
) -> List[int]:
    """Predicted choice index per example (ties go to the first candidate)."""
    return predictions_from_scores(choice_scores(model, tokenizer, examples, batch_size, progress, share_prefix))


def predictions_from_scores(scores: Sequence[Sequence[float]]) -> List[int]:
    """argmax per example of :func:`choice_scores`' rows (ties go to the first candidate)."""
    return [max(range(len(s)), key=lambda j: (s[j], -j)) for s in scores]


def accuracy(predictions: Sequence[int], examples: Sequence[ChoiceExample]) -> float:
    if not examples:
        raise EvaluationDataError("no examples to score")
    return sum(int(p == e.label) for p, e in zip(predictions, examples)) / len(examples)


@torch.no_grad()
def greedy_continuations(
    model, tokenizer, prompts: Sequence[str], max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = DEFAULT_BATCH_SIZE, progress: Progress = None, share_prefix: bool = True,
) -> List[str]:
    """Greedy decoding (no sampling) until EOS or ``max_new_tokens``; the decoded new text
    (``share_prefix`` as in :func:`choice_scores`)."""
    device = _model_device(model)
    eos = tokenizer.eos_token_id
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    prefix_length = shared_prefix_length(encoded) if share_prefix else 0
    texts: List[Optional[str]] = [None] * len(encoded)
    for indices in _length_sorted_batches(encoded, batch_size, sort=share_prefix):
        generated = torch.empty((len(indices), 0), dtype=torch.long, device=device)
        finished = torch.zeros(len(indices), dtype=torch.bool, device=device)
        out, mask, step_positions = _prefill(model, tokenizer, [encoded[i] for i in indices], prefix_length)
        for step in range(max_new_tokens):
            if step:
                out = model(input_ids=token[:, None], attention_mask=mask, position_ids=step_positions,
                            use_cache=True, logits_to_keep=1, **{_cache_keyword(model): _output_cache(out)})
            token = out.logits[:, -1].float().argmax(dim=-1)
            if eos is not None:
                token = torch.where(finished, torch.full_like(token, eos), token)
                finished |= token == eos
            generated = torch.cat([generated, token[:, None]], dim=1)
            if bool(finished.all()):
                break
            step_positions = step_positions[:, -1:] + 1
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        for i, row in zip(indices, generated.tolist()):
            if eos is not None and eos in row:
                row = row[:row.index(eos)]
            texts[i] = tokenizer.decode(row, skip_special_tokens=True)
        if progress is not None:
            progress(len(indices))
    return texts  # type: ignore[return-value]


def greedy_exact_match(
    model, tokenizer, examples: Sequence[AnswerExample], max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = DEFAULT_BATCH_SIZE, progress: Progress = None, share_prefix: bool = True,
) -> float:
    """Fraction of examples whose greedy continuation, stripped, equals the answer, stripped."""
    if not examples:
        raise EvaluationDataError("no examples to score")
    outputs = greedy_continuations(model, tokenizer, [e.prompt for e in examples], max_new_tokens, batch_size, progress,
                                   share_prefix)
    return sum(int(o.strip() == e.answer.strip()) for o, e in zip(outputs, examples)) / len(examples)


def answer_log_likelihoods(
    model, tokenizer, examples: Sequence[AnswerExample], batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress = None,
) -> List[float]:
    """Σ log P(answer tokens, then EOS | prompt) per example (nats)."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    pairs = [(encode_prompt(tokenizer, e.prompt), encode_continuation(tokenizer, e.answer) + eos) for e in examples]
    return continuation_log_likelihoods(model, tokenizer, pairs, batch_size, progress)


@torch.no_grad()
def perplexity(
    model, tokenizer, texts: Sequence[str], max_length: int = 256, batch_size: int = 8,
    progress: Progress = None,
) -> float:
    """exp(Σ NLL / number of predicted tokens) over all texts (each truncated to ``max_length`` tokens)."""
    device = _model_device(model)
    encoded = [list(tokenizer(t, add_special_tokens=True).input_ids)[:max_length] for t in texts]
    encoded = [e for e in encoded if len(e) >= 2]
    if not encoded:
        raise EvaluationDataError("no text of at least two tokens")
    total_nll, total_tokens = 0.0, 0
    for indices in _length_sorted_batches(encoded, batch_size):
        batch = [encoded[i] for i in indices]
        ids, mask, positions = _pad_left(batch, _pad_id(tokenizer), device)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()
        log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
        targets = ids[:, 1:]
        picked = log_probs.gather(2, targets[..., None])[..., 0]
        valid = mask[:, 1:].bool() & mask[:, :-1].bool()
        total_nll -= float(picked[valid].double().sum())
        total_tokens += int(valid.sum())
        if progress is not None:
            progress(len(batch))
    return math.exp(total_nll / total_tokens)
