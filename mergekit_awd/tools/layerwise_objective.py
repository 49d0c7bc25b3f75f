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
               pad_id: int, positions: Sequence[Tuple[int, int]]) -> List[torch.Tensor]:
    """log P(next token) at positions ``[start, stop)`` of each right-padded sequence ([stop − start, vocab]
    each), with the weights ``params``.  Only those rows go through the log-softmax: the vocabulary-wide
    values of every other position are never kept for the backward pass (they would dominate memory)."""
    device = next(iter(params.values())).device
    ids, mask = _right_padded(sequences, pad_id, device)
    logits = functional_call(model, dict(params), args=(), kwargs={"input_ids": ids, "attention_mask": mask}).logits
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    return [torch.log_softmax(logits[row, start:stop].to(dtype), dim=-1) for row, (start, stop) in enumerate(positions)]


def continuation_log_likelihood(model: torch.nn.Module, params: Mapping[str, torch.Tensor],
                                pairs: Sequence[Tuple[List[int], List[int]]], pad_id: int) -> torch.Tensor:
    """Σ_t log P(cont[t] | prompt, cont[<t]) [n] for (prompt ids, continuation ids), differentiable."""
    positions = [(len(p) - 1, len(p) - 1 + len(c)) for p, c in pairs]
    rows = _log_probs(model, params, [p + c for p, c in pairs], pad_id, positions)
    totals = []
    for log_probs, (_, continuation) in zip(rows, pairs):
        targets = torch.tensor(continuation, dtype=torch.long, device=log_probs.device)
        totals.append(log_probs.gather(1, targets[:, None]).sum())
    return torch.stack(totals)


def _choice_log_likelihoods(model, params, tokenizer, examples: Sequence[Example], pad_id: int
                            ) -> List[torch.Tensor]:
    """Per example, its choices' log-likelihoods [C].  A line whose every choice is one token needs only
    its prompt: one sequence, the choices read from the next-token distribution after it (the same values
    as scoring each prompt + choice, at a fraction of the tokens); the others score prompt + choice."""
    encoded = [(encode_prompt(tokenizer, e.prompt), [encode_continuation(tokenizer, c) for c in e.choices])
               for e in examples]
    single = [i for i, (_, choices) in enumerate(encoded) if all(len(c) == 1 for c in choices)]
    out: List[torch.Tensor] = [torch.empty(0)] * len(examples)
    if single:
        prompts = [encoded[i][0] for i in single]
        rows = _log_probs(model, params, prompts, pad_id, [(len(p) - 1, len(p)) for p in prompts])
        for i, row in zip(single, rows):
            tokens = torch.tensor([c[0] for c in encoded[i][1]], dtype=torch.long, device=row.device)
            out[i] = row[0, tokens]
    rest = [i for i in range(len(examples)) if i not in set(single)]
    if rest:
        pairs = [(encoded[i][0], choice) for i in rest for choice in encoded[i][1]]
        values = continuation_log_likelihood(model, params, pairs, pad_id)
        for i, part in zip(rest, torch.split(values, [len(encoded[i][1]) for i in rest])):
            out[i] = part
    return out


def _next_token_entropy(model, params, tokenizer, prompts: Sequence[str], pad_id: int) -> torch.Tensor:
    """Entropy (nats) [n] of the next-token distribution after each prompt."""
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    rows = _log_probs(model, params, encoded, pad_id, [(len(ids) - 1, len(ids)) for ids in encoded])
    last = torch.cat(rows)
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
