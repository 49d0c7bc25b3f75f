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
scores the same as the example alone (tested to float rounding).
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


def _batches(items: Sequence, size: int) -> Iterator[Tuple[int, Sequence]]:
    for start in range(0, len(items), size):
        yield start, items[start:start + size]


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


@torch.no_grad()
def continuation_log_likelihoods(
    model, tokenizer, pairs: Sequence[Tuple[List[int], List[int]]], batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress = None,
) -> List[float]:
    """Σ_t log P(cont[t] | prompt, cont[<t]) (nats, float64 sum) for (prompt ids, continuation ids)."""
    device = _model_device(model)
    scores: List[float] = []
    for _, batch in _batches(pairs, batch_size):
        sequences = [list(p) + list(c) for p, c in batch]
        ids, mask, positions = _pad_left(sequences, _pad_id(tokenizer), device)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        width = ids.shape[1]
        for row, (_, cont) in enumerate(batch):
            n = len(cont)
            # token at column j is predicted by the logits at column j - 1
            targets = ids[row, width - n:]
            rows = log_probs[row, width - n - 1:width - 1]
            scores.append(float(rows.gather(1, targets[:, None]).double().sum()))
        if progress is not None:
            progress(len(batch))
    return scores


@torch.no_grad()
def _next_token_log_probs(model, tokenizer, prompts: Sequence[List[int]], batch_size: int, progress: Progress) -> List[torch.Tensor]:
    """log P(· | prompt) over the vocabulary, one float32 vector per prompt."""
    device = _model_device(model)
    out: List[torch.Tensor] = []
    for _, batch in _batches(prompts, batch_size):
        ids, mask, positions = _pad_left(batch, _pad_id(tokenizer), device)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1).logits
        out.extend(torch.log_softmax(logits[:, -1].float(), dim=-1).cpu())
        if progress is not None:
            progress(len(batch))
    return out


def choice_scores(
    model, tokenizer, examples: Sequence[ChoiceExample], batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress = None,
) -> List[List[float]]:
    """Summed log-probability of every candidate of every example (nats)."""
    prompts = [encode_prompt(tokenizer, e.prompt) for e in examples]
    choices = [[encode_continuation(tokenizer, c) for c in e.choices] for e in examples]
    single = [i for i, cs in enumerate(choices) if all(len(c) == 1 for c in cs)]
    multi = [i for i, cs in enumerate(choices) if not all(len(c) == 1 for c in cs)]
    scores: List[Optional[List[float]]] = [None] * len(examples)
    if single:
        vectors = _next_token_log_probs(model, tokenizer, [prompts[i] for i in single], batch_size, progress)
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
    progress: Progress = None,
) -> List[int]:
    """Predicted choice index per example (ties go to the first candidate)."""
    return [max(range(len(s)), key=lambda j: (s[j], -j)) for s in choice_scores(model, tokenizer, examples, batch_size, progress)]


def accuracy(predictions: Sequence[int], examples: Sequence[ChoiceExample]) -> float:
    if not examples:
        raise EvaluationDataError("no examples to score")
    return sum(int(p == e.label) for p, e in zip(predictions, examples)) / len(examples)


@torch.no_grad()
def greedy_continuations(
    model, tokenizer, prompts: Sequence[str], max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = DEFAULT_BATCH_SIZE, progress: Progress = None,
) -> List[str]:
    """Greedy decoding (no sampling) until EOS or ``max_new_tokens``; the decoded new text."""
    device = _model_device(model)
    eos = tokenizer.eos_token_id
    texts: List[str] = []
    for _, batch in _batches(list(prompts), batch_size):
        ids, mask, positions = _pad_left([encode_prompt(tokenizer, p) for p in batch], _pad_id(tokenizer), device)
        generated = torch.empty((len(batch), 0), dtype=torch.long, device=device)
        finished = torch.zeros(len(batch), dtype=torch.bool, device=device)
        past = None
        step_ids, step_positions = ids, positions
        for _ in range(max_new_tokens):
            cache_arg = {} if past is None else {_cache_keyword(model): past}
            out = model(input_ids=step_ids, attention_mask=mask, position_ids=step_positions,
                        use_cache=True, logits_to_keep=1, **cache_arg)
            past = out.get("cache")
            if past is None:
                past = out.get("past_key_values")
            token = out.logits[:, -1].float().argmax(dim=-1)
            if eos is not None:
                token = torch.where(finished, torch.full_like(token, eos), token)
                finished |= token == eos
            generated = torch.cat([generated, token[:, None]], dim=1)
            if bool(finished.all()):
                break
            step_ids = token[:, None]
            step_positions = step_positions[:, -1:] + 1
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        for row in generated.tolist():
            if eos is not None and eos in row:
                row = row[:row.index(eos)]
            texts.append(tokenizer.decode(row, skip_special_tokens=True))
        if progress is not None:
            progress(len(batch))
    return texts


def greedy_exact_match(
    model, tokenizer, examples: Sequence[AnswerExample], max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = DEFAULT_BATCH_SIZE, progress: Progress = None,
) -> float:
    """Fraction of examples whose greedy continuation, stripped, equals the answer, stripped."""
    if not examples:
        raise EvaluationDataError("no examples to score")
    outputs = greedy_continuations(model, tokenizer, [e.prompt for e in examples], max_new_tokens, batch_size, progress)
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
    for _, batch in _batches(encoded, batch_size):
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
