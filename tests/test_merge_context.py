"""No hidden global state (issue #26): what a merge needs travels in one ``MergeContext`` per merge,
mergekit is driven without per-merge patches, and two merges on two threads equal the same merges
run one after the other, bit for bit; every (scope, solver, optimizer) rule is refused before loading."""

from __future__ import annotations

import hashlib
import inspect
import threading

import mergekit.card
import mergekit.merge
import pytest
import torch
import yaml

from mergekit_awd import run_merge
from mergekit_awd.errors import ConfigError
from mergekit_awd.pipeline.mergekit_run import MERGEKIT_RUN_MERGE_SHA256
from mergekit_awd.testing.synthetic import build_family, merge_config
from reference_outputs import tensor_digests

# two different merges, one of each context user: model scope (the solution), row scope + combine
# (a second method's report sections) and a matrix method with its own report
MERGES = {
    "awd_model": ("awd", {"scope": "model", "steps": 20}),
    "awd_row_ties": ("awd", {"scope": "row", "combine": "ties", "density": 0.5, "steps": 20}),
    "tsv": ("tsv", {}),
}


def _configs(tmp_path):
    families = [build_family(tmp_path / f"family{i}", n_models=3, seed=i) for i in range(2)]
    configs = {}
    for index, (name, (method, parameters)) in enumerate(MERGES.items()):
        path = tmp_path / f"{name}.yml"
        path.write_text(yaml.safe_dump(merge_config(method, families[index % 2], parameters)))
        configs[name] = path
    return configs


def _merge(config, out):
    outcome = run_merge(config, out, copy_tokenizer=False, quiet=True)
    return tensor_digests(out), outcome.report.to_json()


def test_merges_on_threads_equal_the_same_merges_one_after_the_other(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # intra-op parallelism changes last bits with the thread count, any program
    try:
        configs = _configs(tmp_path)
        sequential = {name: _merge(config, tmp_path / "one_by_one" / name) for name, config in configs.items()}
        results, errors = {}, []

        def worker(name):
            try:
                results[name] = _merge(configs[name], tmp_path / "threads" / name)
            except BaseException as error:  # reported by the main thread
                errors.append((name, error))

        workers = [threading.Thread(target=worker, args=(name,)) for name in configs]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
    finally:
        torch.set_num_threads(threads)
    assert errors == []
    for name in configs:
        digests, report = results[name]
        assert digests == sequential[name][0], name
        assert report["summary"] == sequential[name][1]["summary"], name
        assert report.get("scopes") == sequential[name][1].get("scopes"), name
    # each report holds only its own merge's tensors
    assert "combined" in results["awd_row_ties"][1] and "combined" not in results["awd_model"][1]
    assert list(results["awd_model"][1]["scopes"]) == ["model"]


def test_no_mergekit_function_is_replaced_during_a_merge(tmp_path, monkeypatch):
    """The planner is constructed by our driver; the one patch (``is_hf``) was applied at import."""
    from mergekit_awd.hub_ids import is_hub_id

    seen = []
    original = mergekit.merge.MergePlanner
    monkeypatch.setattr("mergekit_awd.pipeline.mergekit_run.generate_card",
                        lambda **kw: seen.append((mergekit.merge.MergePlanner, mergekit.card.is_hf)) or "card")
    run_merge(_configs(tmp_path)["tsv"], tmp_path / "out", copy_tokenizer=False, quiet=True)
    assert seen == [(original, is_hub_id)]
    assert mergekit.merge.MergePlanner is original


def test_mergekit_run_merge_is_the_version_our_driver_follows():
    """``pipeline.mergekit_run`` follows mergekit 0.1.5's ``run_merge`` step for step: a changed one
    (a new mergekit release) must be read again and the driver brought in line."""
    source = inspect.getsource(mergekit.merge.run_merge)
    assert hashlib.sha256(source.encode()).hexdigest() == MERGEKIT_RUN_MERGE_SHA256


@pytest.mark.parametrize("parameters, message", [
    ({"scope": "row", "solver": "direct"}, "solver: direct with scope: row"),  # optimizer adam by default
    ({"scope": "model", "solver": "direct", "optimizer": "gd"}, "solver: direct holds the full δ"),
    ({"combine": "slerp"}, "combine = 'slerp' is not accepted: Input should be 'task_arithmetic', 'ties'"),
])
def test_refused_settings_are_refused_before_anything_loads(tmp_path, parameters, message):
    family = build_family(tmp_path / "family", n_models=2, seed=0)
    for path in family[1:]:  # a merge that loaded a tensor would fail on these instead
        for weights in path.glob("*.safetensors"):
            weights.write_bytes(b"not safetensors")
    config = tmp_path / "c.yml"
    config.write_text(yaml.safe_dump(merge_config("awd", family, parameters)))
    with pytest.raises(ConfigError, match=message):
        run_merge(config, tmp_path / "out", copy_tokenizer=False, quiet=True)


def test_a_refused_combination_inside_a_filter_is_refused_before_loading(tmp_path):
    family = build_family(tmp_path / "family", n_models=2, seed=0)
    data = merge_config("awd", family, {"solver": "direct"})
    data["parameters"]["scope"] = [{"filter": "mlp", "value": "row"}, {"value": "tensor"}]
    config = tmp_path / "c.yml"
    config.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="solver: direct with scope: row"):
        run_merge(config, tmp_path / "out", copy_tokenizer=False, quiet=True)
