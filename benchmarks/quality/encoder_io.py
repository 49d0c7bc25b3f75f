"""Save/load the two halves of a sequence classifier: the shared encoder (a plain ``BertModel``
folder, so mergekit's ``bert`` architecture applies) and the task's own head (``classifier.*``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Sequence, Union

import torch
from safetensors.torch import load_file, save_file
from transformers import BertForSequenceClassification, BertModel

PathLike = Union[str, Path]
HEAD_FILE = "head.safetensors"
HEAD_META_FILE = "head.json"


def head_state(model: BertForSequenceClassification) -> Dict[str, torch.Tensor]:
    """The classification head: ``classifier.weight`` [C, hidden] and ``classifier.bias`` [C]."""
    return {f"classifier.{k}": v.detach().clone().contiguous() for k, v in model.classifier.state_dict().items()}


def save_head(model: BertForSequenceClassification, folder: PathLike, task: str, class_names: Sequence[str]) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(head_state(model), str(folder / HEAD_FILE))
    (folder / HEAD_META_FILE).write_text(json.dumps({"task": task, "class_names": list(class_names)}, indent=2))


def load_head(folder: PathLike) -> Dict[str, torch.Tensor]:
    return load_file(str(Path(folder) / HEAD_FILE))


def head_task(folder: PathLike) -> str:
    """The task a saved head was trained on (recorded next to it)."""
    return json.loads((Path(folder) / HEAD_META_FILE).read_text())["task"]


def save_encoder(model: BertForSequenceClassification, folder: PathLike) -> None:
    """Write ``model.bert`` as a stand-alone BertModel folder (config.json + model.safetensors)."""
    model.bert.save_pretrained(str(folder))


def load_encoder(folder: PathLike) -> BertModel:
    return BertModel.from_pretrained(str(folder), add_pooling_layer=True).eval()


def with_state(encoder: BertModel, state: Dict[str, torch.Tensor]) -> BertModel:
    """``encoder`` holding exactly the weights in ``state`` (every key, strict), in eval mode: one
    encoder reused for every grid point instead of reading the template folder each time."""
    encoder.load_state_dict(state, strict=True)
    return encoder.eval()


class HeadedEncoder(torch.nn.Module):
    """Encoder + task head, computing what BertForSequenceClassification computes in eval mode:
    logits = W · pooler_output + b  (pooler_output = tanh(W_p · h_[CLS] + b_p), dropout off)."""

    def __init__(self, encoder: BertModel, head: Dict[str, torch.Tensor]) -> None:
        super().__init__()
        n_labels, hidden = head["classifier.weight"].shape
        if hidden != encoder.config.hidden_size:
            raise ValueError(f"head expects hidden size {hidden}, encoder has {encoder.config.hidden_size}")
        self.bert = encoder
        self.classifier = torch.nn.Linear(hidden, n_labels)
        self.classifier.load_state_dict({k.removeprefix("classifier."): v for k, v in head.items()})
        self.eval()

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.bert(**inputs).pooler_output)


def attach_head(encoder: BertModel, head: Dict[str, torch.Tensor]) -> HeadedEncoder:
    """The task's classifier on top of a (shared) encoder; the encoder is not copied."""
    return HeadedEncoder(encoder, head)
