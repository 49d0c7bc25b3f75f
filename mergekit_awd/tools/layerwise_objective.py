"""The objectives layer-wise tuning minimises over Λ (issue #29), differentiable through θ(Λ).

The model runs with its weights replaced by θ(Λ) (``core.layerwise.merged_state``) through
``torch.func.functional_call``, so gradients reach Λ and nothing but Λ (θ_base and the parts D_i are
constants); ``∂θ/∂λ_{i,g} = D_i^g``.

* ``likelihood`` (labelled lines): the mean negative log-likelihood of the right answer — for a
  classification line, −log softmax over its choices' summed log-probabilities (nats) at the right
  choice; for a generative line, −Σ_t log P(answer tokens, then EOS | prompt).
* ``entropy`` (AdaMerging's objective, arXiv 2310.02575 eq. 6; labels and answers unused, so lines
  without them, ``PromptExample``, count too): the entropy (nats) of the model's distribution over a
  line's choices, or, for a line without choices (a prompt, or a generative line), of its next-token
  distribution after the prompt.
"""

from __future__ import annotations

from typing import Dict, List, Literal, Mapping, Sequence, Tuple, Union

import torch
from torch.func import functional_call

from mergekit_awd.errors import EvaluationDataError
from mergekit_awd.tools.lm_scoring import (
    AnswerExample, ChoiceExample, PromptExample, encode_continuation, encode_prompt,
)

Objective = Literal["likelihood", "entropy"]
OBJECTIVES: Tuple[str, ...] = ("likelihood", "entropy")


Example = Union[ChoiceExample, AnswerExample, PromptExample]


def _right_padded(sequences: Sequence[Sequence[int]], pad_id: int, device: torch.device
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, :len(sequence)] = torch.tensor(list(sequence), dtype=torch.long)
        mask[row, :len(sequence)] = 1
    return ids.to(device), mask.to(device)


def _log_probs(model: torch.nn.Module, params: Mapping[str, torch.Tensor], sequences: Sequence[Sequence[int]],
               pad_id: int) -> torch.Tensor:
    """log P(next token) [n, width, vocab] of right-padded sequences with the weights ``params``."""
    device = next(iter(params.values())).device
    ids, mask = _right_padded(sequences, pad_id, device)
    logits = functional_call(model, dict(params), args=(), kwargs={"input_ids": ids, "attention_mask": mask}).logits
    return torch.log_softmax(logits.to(torch.float64 if logits.dtype == torch.float64 else torch.float32), dim=-1)


def continuation_log_likelihood(model: torch.nn.Module, params: Mapping[str, torch.Tensor],
                                pairs: Sequence[Tuple[List[int], List[int]]], pad_id: int) -> torch.Tensor:
    """Σ_t log P(cont[t] | prompt, cont[<t]) [n] for (prompt ids, continuation ids), differentiable."""
    log_probs = _log_probs(model, params, [p + c for p, c in pairs], pad_id)
    totals = []
    for row, (prompt, continuation) in enumerate(pairs):
        start = len(prompt)
        targets = torch.tensor(continuation, dtype=torch.long, device=log_probs.device)
        totals.append(log_probs[row, start - 1:start - 1 + len(continuation)].gather(1, targets[:, None]).sum())
    return torch.stack(totals)


def _choice_log_likelihoods(model, params, tokenizer, examples: Sequence[Example], pad_id: int
                            ) -> List[torch.Tensor]:
    """Per example, its choices' log-likelihoods [C]."""
    pairs, sizes = [], []
    for example in examples:
        prompt = encode_prompt(tokenizer, example.prompt)
        pairs += [(prompt, encode_continuation(tokenizer, choice)) for choice in example.choices]
        sizes.append(len(example.choices))
    return list(torch.split(continuation_log_likelihood(model, params, pairs, pad_id), sizes))


def _next_token_entropy(model, params, tokenizer, prompts: Sequence[str], pad_id: int) -> torch.Tensor:
    """Entropy (nats) [n] of the next-token distribution after each prompt."""
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    log_probs = _log_probs(model, params, encoded, pad_id)
    last = torch.stack([log_probs[row, len(ids) - 1] for row, ids in enumerate(encoded)])
    return -(last.exp() * last).sum(dim=-1)


def objective_value(model: torch.nn.Module, params: Mapping[str, torch.Tensor], tokenizer: object,
                    examples: Sequence[Example], objective: Objective) -> torch.Tensor:
    """The mean objective over ``examples`` (module docstring), a differentiable scalar."""
    pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
    choices = [e for e in examples if getattr(e, "choices", ())]
    others = [e for e in examples if not getattr(e, "choices", ())]
    if objective == "likelihood" and any(isinstance(e, PromptExample) for e in examples):
        raise EvaluationDataError("the likelihood objective needs labelled lines (choices with a label, or "
                                  "answers); lines without a label take the entropy objective")
    terms: List[torch.Tensor] = []
    if choices:
        scores = _choice_log_likelihoods(model, params, tokenizer, choices, pad_id)
        for example, values in zip(choices, scores):
            log_p = torch.log_softmax(values, dim=0)
            terms.append(-log_p[example.label] if objective == "likelihood" else -(log_p.exp() * log_p).sum())
    if others and objective == "entropy":
        terms += list(_next_token_entropy(model, params, tokenizer, [e.prompt for e in others], pad_id))
    elif others:
        answers = [e for e in others if isinstance(e, AnswerExample)]
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        pairs = [(encode_prompt(tokenizer, e.prompt), encode_continuation(tokenizer, e.answer) + eos) for e in answers]
        terms += list(-continuation_log_likelihood(model, params, pairs, pad_id))
    return torch.stack(terms).mean()


def parameters_of(model: torch.nn.Module, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The model's parameters and buffers with ``state``'s tensors where it has them (a tied head
    follows the embeddings)."""
    params = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    params.update({k: v for k, v in state.items() if k in params})
    if "lm_head.weight" in params and "lm_head.weight" not in state and getattr(model.config, "tie_word_embeddings",
                                                                               False):
        params["lm_head.weight"] = params["model.embed_tokens.weight"]
    return params


__all__ = ["Objective", "OBJECTIVES", "continuation_log_likelihood", "objective_value",
           "parameters_of"]
