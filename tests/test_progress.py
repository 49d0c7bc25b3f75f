"""Progress and the up-front estimate (issue #13, item 1): our phases show one bar at a time with
counts, mergekit's generic bars are replaced (never nested), ``--quiet`` silences all of it, and the
estimate is the documented sum of each method's matrix work times the measured constants."""

from __future__ import annotations

import pytest
import yaml

from mergekit_awd.cli import run
from mergekit_awd.testing.synthetic import TINY, merge_config

N_TENSORS = 3 + 9 * TINY.num_hidden_layers  # embed, norm, lm_head + 9 per layer


def write(tmp_path, paths, method, parameters, name="merge.yml"):
    config = tmp_path / name
    weights = [1.0] * (len(paths) - 1)
    config.write_text(yaml.safe_dump(merge_config(method, paths, parameters, "float32", weights=weights)))
    return config


def test_model_scope_shows_its_phases_with_counts_and_no_mergekit_bar(tiny_family, tmp_path, capsys):
    config = write(tmp_path, tiny_family, "awd", {"scope": "model", "steps": 5})
    assert run([str(config), str(tmp_path / "out"), "--no-copy-tokenizer"]) == 0
    err = capsys.readouterr().err
    assert "awd: reading 4 models and planning" in err
    assert "awd · Gram pass" in err and "awd · merging tensors" in err
    assert f"{N_TENSORS}/{N_TENSORS}" in err
    assert "awd: δ of scope model solved over" in err
    assert "Executing graph" not in err and "Warmup loader cache" not in err
    assert err.index("Gram pass") < err.index("solved over") < err.rindex("merging tensors")


def test_quiet_prints_no_bar_and_no_phase_line(tiny_family, tmp_path, capsys):
    config = write(tmp_path, tiny_family, "tsv", {})
    assert run([str(config), str(tmp_path / "out"), "--no-copy-tokenizer", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "tsv ·" not in captured.err and "tsv:" not in captured.err and "Executing graph" not in captured.err


def test_mergekit_methods_keep_mergekit_bars(tiny_family, tmp_path, capsys):
    config = write(tmp_path, tiny_family, "task_arithmetic", {})
    assert run([str(config), str(tmp_path / "out"), "--no-copy-tokenizer"]) == 0
    err = capsys.readouterr().err
    assert "Executing graph" in err and "merging tensors" not in err


def test_estimate_is_the_sum_of_matrix_work_times_the_constants(tiny_family, monkeypatch):
    from mergekit_awd.core.selection import is_task_matrix
    from mergekit_awd.mergekit_adapter.registration import method_for
    from mergekit_awd.pipeline import estimate as estimate_module
    from mergekit_awd.pipeline.config import load_config

    monkeypatch.setattr(estimate_module, "SECONDS_PER_UNIT", {"svd": 2e-9, "matmul": 3e-11})
    monkeypatch.setattr("torch.get_num_threads", lambda: estimate_module.REFERENCE_THREADS)
    for method_name, parameters in (("tsv", {}), ("tsv", {"svd": "lowrank"}), ("iso_cts", {}),
                                    ("wudi", {"solver": "exact"}), ("wudi", {}), ("ace", {})):
        config, _, _ = load_config(merge_config(method_name, tiny_family, dict(parameters), "float32"))
        method = method_for(method_name)
        result = estimate_module.estimate_merge(config, method, on_cpu=True)
        shapes = estimate_module.tensor_shapes(str(tiny_family[0]))
        settings = method.settings(parameters)
        matrices = [s for n, s in shapes.items() if len(s) == 2 and is_task_matrix(n, 2, settings.select)]
        expected = sum(units * {"svd": 2e-9, "matmul": 3e-11}[kind]
                       for rows, cols in matrices
                       for kind, units in method.matrix_work(rows, cols, 3, settings).items())
        assert result.matrices == len(matrices) == 7 * TINY.num_hidden_layers
        assert result.models == 3
        assert result.seconds == pytest.approx(expected, rel=1e-12) and expected > 0
    assert estimate_module.estimate_merge(config, method_for("awd"), on_cpu=True) is None
    assert estimate_module.estimate_merge(config, method, on_cpu=False) is None


def test_the_estimate_line_names_the_faster_options(tiny_family, tmp_path, capsys, monkeypatch):
    from mergekit_awd.pipeline import estimate as estimate_module
    from mergekit_awd.pipeline import runner

    monkeypatch.setattr(estimate_module, "SECONDS_PER_UNIT", {"svd": 1e-3, "matmul": 1e-3})
    monkeypatch.setattr(runner, "PRINT_ABOVE_SECONDS", 0.0)
    config = write(tmp_path, tiny_family, "tsv", {})
    assert run([str(config), str(tmp_path / "out"), "--no-copy-tokenizer"]) == 0
    err = capsys.readouterr().err
    assert "tsv: about" in err and "of matrix work on CPU (14 matrices, 3 models" in err
    assert "faster: `svd: lowrank` or `--cuda`" in err


def test_compress_shows_tensor_and_adapter_bars_unless_quiet(tiny_family, tmp_path, capsys):
    config = write(tmp_path, tiny_family, "tsv", {})
    assert run(["compress", str(config), str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "compress · SVDs of 3 task vectors per tensor" in err and f"{N_TENSORS}/{N_TENSORS}" in err
    assert "compress · writing adapters" in err and "3/3" in err
    assert run(["compress", str(config), str(tmp_path / "b"), "--quiet"]) == 0
    assert "compress ·" not in capsys.readouterr().err


def test_inspect_shows_a_bar_over_the_tensors_unless_quiet(tiny_family, tmp_path, capsys):
    config = write(tmp_path, tiny_family, "awd", {})
    assert run(["inspect", str(config)]) == 0
    err = capsys.readouterr().err
    assert "inspect · reading tensors and their SVDs" in err and f"{N_TENSORS}/{N_TENSORS}" in err
    assert run(["inspect", str(config), "--no-tsv", "--quiet"]) == 0
    assert "inspect ·" not in capsys.readouterr().err
