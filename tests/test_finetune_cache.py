"""A cached fine-tune never answers for an input that changed: the tracks' fine-tune caches compare the
inputs fingerprint (settings, base weight files, training examples) their marker records, trust a marker
made before fingerprints were recorded once (stamping it), and read MiniLM's old plain-number marker.
Training is replaced by an instant stand-in except in one end-to-end test on a tiny LLaMA."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List

import pytest

from benchmarks.harness.finetune_inputs import read_marker, settings_dict, write_marker
from benchmarks.llm.finetune import DONE_MARKER, FinetuneSettings
from mergekit_awd.tools.lm_scoring import AnswerExample

SETTINGS = FinetuneSettings(steps=2, batch_size=2, log_every=1)


def _perturb(folder: Path) -> None:
    """The folder's weights changed a little (still a loadable model)."""
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    state = load_file(str(path))
    name = sorted(state)[0]
    state[name] = state[name] + 1e-3
    save_file(state, str(path), metadata={"format": "pt"})


@pytest.fixture
def llm(tmp_path, monkeypatch):
    """The LLM track's ``ensure_finetunes`` on a tiny base and task "t", training replaced by a stand-in
    that writes the marker as ``finetune_task`` does; ``.run()`` returns the tasks trained by that call."""
    import benchmarks.llm.models as models
    from mergekit_awd.testing.synthetic import build_family

    base = build_family(tmp_path / "family", n_models=0)[0]
    monkeypatch.setattr(models, "ensure_base_model", lambda: base)
    built: List[str] = []

    def finetune_task(base_dir, task, train, folder, settings, checkpoint_every=0, inputs=None):
        folder.mkdir(parents=True, exist_ok=True)
        record = {"task": task, "seconds": 1.0, "settings": settings_dict(settings), "inputs": inputs}
        write_marker(folder / DONE_MARKER, record)
        built.append(task)
        return record

    monkeypatch.setattr(models, "finetune_task", finetune_task)
    env = SimpleNamespace(base=base, root=tmp_path / "finetunes", built=built,
                          examples={"t": [AnswerExample(f"what is {i}", f" {i}") for i in range(4)]})

    def run() -> List[str]:
        before = len(built)
        models.ensure_finetunes(["t"], env.root, SETTINGS, splits_of=lambda task, tok: SimpleNamespace(
            train=tuple(env.examples[task])))
        return built[before:]

    env.run = run
    return env


def test_unchanged_inputs_answer_from_the_cache(llm, capsys):
    assert llm.run() == ["t"]
    assert llm.run() == []
    assert "t: cached (1.0 s)" in capsys.readouterr().out
    inputs = read_marker(llm.root / "t" / DONE_MARKER)["inputs"]
    assert inputs["settings"] == settings_dict(SETTINGS) and inputs["train_examples"] == 4
    assert len(inputs["base_sha256"]) == len(inputs["data_sha256"]) == 64


def test_a_changed_base_file_trains_again(llm, capsys):
    llm.run()
    _perturb(llm.base)
    assert llm.run() == ["t"]
    assert "trained with another base model (its weight files changed): training again" in capsys.readouterr().out
    assert llm.run() == []


def test_changed_training_data_trains_again(llm, capsys):
    llm.run()
    llm.examples["t"][2] = AnswerExample("what is 2", " two")
    assert llm.run() == ["t"]
    assert "trained with other training data: training again" in capsys.readouterr().out


def test_other_settings_train_again(llm, capsys):
    llm.run()
    marker = llm.root / "t" / DONE_MARKER
    record = read_marker(marker)
    record["inputs"]["settings"]["learning_rate"] = 1.0
    write_marker(marker, record)
    assert llm.run() == ["t"]
    assert "trained with other settings: training again" in capsys.readouterr().out


def test_a_legacy_marker_is_trusted_once_then_a_changed_base_trains_again(llm, capsys):
    folder = llm.root / "t"
    folder.mkdir(parents=True)
    legacy = {"task": "t", "seconds": 189.0, "settings": settings_dict(SETTINGS), "final_loss": 0.05}
    (folder / DONE_MARKER).write_text(json.dumps(legacy, indent=1) + "\n")
    assert llm.run() == []
    out = capsys.readouterr().out
    assert out.count("made before its inputs were recorded: trusted as is and stamped") == 1
    assert f"delete {folder} to train it again" in out
    stamped = read_marker(folder / DONE_MARKER)
    assert {k: v for k, v in stamped.items() if k != "inputs"} == legacy and "inputs" in stamped
    assert llm.run() == []
    assert "made before" not in capsys.readouterr().out
    _perturb(llm.base)
    assert llm.run() == ["t"]


def test_a_legacy_marker_of_other_settings_trains_again(llm):
    folder = llm.root / "t"
    folder.mkdir(parents=True)
    write_marker(folder / DONE_MARKER, {"seconds": 1, "settings": {**settings_dict(SETTINGS), "steps": 99}})
    assert llm.run() == ["t"]


@pytest.fixture
def minilm(tmp_path, monkeypatch):
    """The MiniLM track's ``ensure_finetunes`` on a stand-in base folder and task "t", training replaced
    by a stand-in calling the real marker writer; ``.run()`` returns the tasks trained by that call."""
    import benchmarks.quality.models as models
    from benchmarks.text_tasks.splits import Split

    base = tmp_path / "minilm"
    base.mkdir()
    (base / "model.safetensors").write_bytes(b"weights")
    env = SimpleNamespace(base=base, root=tmp_path / "finetunes", built=[],
                          train={"t": Split(("a text", "another"), (0, 1))})
    monkeypatch.setattr(models, "pretrained_model_path", lambda: base)
    monkeypatch.setattr(models, "task_splits", lambda task: (("no", "yes"), SimpleNamespace(train=env.train[task])))

    def finetune_task(base_path, task, class_names, train, folder, settings, inputs=None) -> float:
        folder.mkdir(parents=True, exist_ok=True)
        write_marker(folder / models.DONE_MARKER, {"seconds": 2.0, "inputs": inputs})
        env.built.append(task)
        return 2.0

    monkeypatch.setattr(models, "finetune_task", finetune_task)

    def run() -> List[str]:
        before = len(env.built)
        models.ensure_finetunes(["t"], env.root)
        return env.built[before:]

    env.run = run
    return env


def test_minilm_old_plain_marker_is_read_stamped_and_then_checked(minilm, capsys):
    from benchmarks.quality.finetune import DONE_MARKER as MINILM_MARKER
    from benchmarks.text_tasks.splits import Split

    marker = minilm.root / "t" / MINILM_MARKER
    marker.parent.mkdir(parents=True)
    marker.write_text("98.9\n")
    assert minilm.run() == []
    assert "t: cached (98.9 s), made before its inputs were recorded" in capsys.readouterr().out
    record: Dict = json.loads(marker.read_text())
    assert record["seconds"] == 98.9 and record["inputs"]["train_examples"] == 2
    assert minilm.run() == []
    minilm.train["t"] = Split(("a text", "another"), (1, 0))
    assert minilm.run() == ["t"]
    assert "trained with other training data: training again" in capsys.readouterr().out
    (minilm.base / "model.safetensors").write_bytes(b"other weights")
    assert minilm.run() == ["t"]


def test_a_real_fine_tune_records_its_inputs_and_is_cached(tmp_path, monkeypatch):
    """End to end on a tiny LLaMA (two real steps): the marker ``finetune_task`` writes answers next time."""
    import benchmarks.llm.models as models
    from mergekit_awd.testing.synthetic import build_family

    base = build_family(tmp_path / "family", n_models=0)[0]
    monkeypatch.setattr(models, "ensure_base_model", lambda: base)
    train = tuple(AnswerExample(f"what is {i}", f" {i}") for i in range(4))
    splits_of = lambda task, tok: SimpleNamespace(train=train)  # noqa: E731
    folders = models.ensure_finetunes(["t"], tmp_path / "ft", SETTINGS, splits_of=splits_of, checkpoint_every=1)
    record = read_marker(folders["t"] / DONE_MARKER)
    assert record["inputs"]["train_examples"] == 4 and record["settings"] == settings_dict(SETTINGS)
    weights = (folders["t"] / "model.safetensors").read_bytes()
    monkeypatch.setattr(models, "finetune_task", lambda *a, **k: pytest.fail("trained again"))
    models.ensure_finetunes(["t"], tmp_path / "ft", SETTINGS, splits_of=splits_of)
    assert (folders["t"] / "model.safetensors").read_bytes() == weights
    assert not (tmp_path / "ft" / "t.checkpoint.pt").exists()


def test_the_schedule_warms_up_and_decays_linearly():
    from benchmarks.harness.finetune import lr_factor
    from benchmarks.llm.finetune import FinetuneSettings

    constant = FinetuneSettings(steps=10)
    assert [lr_factor(constant, s) for s in range(10)] == [1.0] * 10
    scheduled = FinetuneSettings(steps=10, warmup_steps=4, decay="linear")
    factors = [lr_factor(scheduled, s) for s in range(10)]
    assert factors[:4] == pytest.approx([0.25 * 1.0, 0.5 * 0.9, 0.75 * 0.8, 1.0 * 0.7])
    assert factors[-1] == pytest.approx(0.1) and all(a >= b for a, b in zip(factors[3:], factors[4:]))


def test_settings_added_later_leave_the_recorded_settings_unchanged_at_their_defaults():
    """A cache made before ``warmup_steps``/``decay`` existed still answers for the default schedule, and a
    fine-tune with a schedule is another fine-tune."""
    from benchmarks.harness.finetune_inputs import settings_dict
    from benchmarks.llm.finetune import FinetuneSettings

    before = {"steps": 400, "batch_size": 8, "learning_rate": 5e-4, "weight_decay": 0.0, "seed": 0, "log_every": 10}
    assert settings_dict(FinetuneSettings(steps=400, learning_rate=5e-4)) == before
    assert settings_dict(FinetuneSettings(steps=400, learning_rate=5e-4, warmup_steps=40, decay="linear")) == {
        **before, "warmup_steps": 40, "decay": "linear"}
