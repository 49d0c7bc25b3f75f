"""Peak memory of `awd` (and `tsv`) against mergekit's `task_arithmetic` on a ~1B-parameter model.

    python -m benchmarks.speed.bench_memory_1b [--cache ~/.cache/mergekit-awd/benchmarks] [--layers 20] [--models 4]

Builds (once, cached outside git) a LLaMA-shaped base of ~1.03B parameters (hidden 2048, MLP 5632,
20 layers, 16 heads / 4 KV heads, vocabulary 32,000, untied head) and 4 fine-tunes in bfloat16,
then runs each merge as its own `mergekit-awd` process, one after the other, and records the
child's peak RSS (VmHWM, ``benchmarks.speed.measure.run_measured``) and wall time.  Reports each as a
ratio to task_arithmetic measured in the same run (target: awd within 1.3x), plus, for context,
the peak RSS of loading one whole model into memory (what not streaming would cost, times K + 1).
Writes benchmarks/results/memory_1b.{json,md}.

The family is written tensor by tensor into sharded safetensors with the recipe of
``mergekit_awd.testing.synthetic.build_family`` (θ_i = θ_base + s_t (c · shared_t + own_i,t)):
``build_family`` itself holds several float32 copies of the whole model (~18 GB at this size).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
import zlib
from pathlib import Path
from typing import Dict, List, Tuple

import torch

from benchmarks.common import CACHE, RESULTS, save_results
from benchmarks.speed.measure import METHODS, machine_info, measure_merge, run_measured, write_merge_config
from mergekit_awd.testing.synthetic import LlamaShape, llama_config

SHARD_BYTES = 512 * 1024 * 1024
SHARED, SCALE, INIT_STD = 0.6, 0.02, 0.02


def shape_for(layers: int) -> LlamaShape:
    return LlamaShape(hidden_size=2048, intermediate_size=5632, num_hidden_layers=layers,
                      num_attention_heads=16, num_key_value_heads=4, vocab_size=32000)


def tensor_shapes(shape: LlamaShape) -> Dict[str, Tuple[int, ...]]:
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(llama_config(shape))
    return {name: tuple(value.shape) for name, value in model.state_dict().items()}


def shard_plan(shapes: Dict[str, Tuple[int, ...]], bytes_per_element: int) -> List[List[str]]:
    shards: List[List[str]] = [[]]
    size = 0
    for name, dims in shapes.items():
        nbytes = bytes_per_element * int(torch.Size(dims).numel())
        if shards[-1] and size + nbytes > SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


def _generator(name: str, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(name.encode()) * 64 + stream)


def build_streaming(family: Path, shape: LlamaShape, n_models: int, dtype: torch.dtype = torch.bfloat16) -> List[Path]:
    """Write family/base and family/ft_0.. tensor by tensor; at most one shard per model in memory."""
    from safetensors.torch import save_file

    shapes = tensor_shapes(shape)
    plan = shard_plan(shapes, torch.finfo(dtype).bits // 8)
    paths = [family / "base"] + [family / f"ft_{i}" for i in range(n_models)]
    config = llama_config(shape)
    config.architectures = ["LlamaForCausalLM"]
    config.dtype = dtype
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
        config.save_pretrained(str(path))
    weight_map, total = {}, 0
    for number, names in enumerate(plan, start=1):
        filename = f"model-{number:05d}-of-{len(plan):05d}.safetensors"
        shards: List[Dict[str, torch.Tensor]] = [{} for _ in paths]
        for name in names:
            dims = shapes[name]
            if name.endswith("norm.weight"):
                base = torch.ones(dims)
            else:
                base = torch.randn(dims, generator=_generator(name, 0)) * INIT_STD
            step = SCALE * (float(base.pow(2).mean().sqrt()) or 1.0)
            shared = torch.randn(dims, generator=_generator(name, 1)) * (SHARED * step)
            shards[0][name] = base.to(dtype)
            for i in range(n_models):
                own = torch.randn(dims, generator=_generator(name, 2 + i))
                shards[i + 1][name] = own.mul_(step).add_(shared).add_(base).to(dtype)
                del own
            del base, shared
            weight_map[name] = filename
            total += torch.Size(dims).numel() * (torch.finfo(dtype).bits // 8)
        for path, tensors in zip(paths, shards):
            save_file(tensors, str(path / filename), metadata={"format": "pt"})
        print(f"  shard {number}/{len(plan)} written", flush=True)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    for path in paths:
        (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return paths


def build_inputs(cache: Path, layers: int, n_models: int) -> Tuple[List[Path], int]:
    shape = shape_for(layers)
    parameters = sum(torch.Size(d).numel() for d in tensor_shapes(shape).values())
    family = cache / f"llama{parameters / 1e9:.2f}b_bf16_k{n_models}"
    paths = [family / "base"] + [family / f"ft_{i}" for i in range(n_models)]
    if not all((p / "model.safetensors.index.json").exists() for p in paths):
        needed = (n_models + 3) * parameters * 2  # inputs + room for two outputs
        free = shutil.disk_usage(cache).free
        print(f"disk: {free / 2**30:.1f} GiB free in {cache}, about {needed / 2**30:.1f} GiB needed", flush=True)
        if free < needed:
            raise SystemExit("not enough disk space for the inputs and the outputs")
        if family.exists():
            shutil.rmtree(family)
        print(f"building the {parameters / 1e9:.2f}B LLaMA family in {family} (once) ...", flush=True)
        start = time.perf_counter()
        build_streaming(family, shape, n_models)
        print(f"built in {time.perf_counter() - start:.0f} s", flush=True)
    return paths, parameters


def method_table(available: List[str]) -> Dict[str, Dict]:
    methods = dict(METHODS)
    if "tsv" in available:
        # the randomized SVD; fraction 0.1 keeps k = 51 of the paper's r/K = 512 triplets per task
        # (at fraction 1 one 2048 x 5632 tensor takes ~1 min on 2 cores: ~1.5 h for the model)
        methods["tsv_lowrank"] = {"merge_method": "tsv", "parameters": {"lambda": 1.0, "svd": "lowrank", "fraction": 0.1}}
    return methods


def load_whole_model(folder: str) -> None:
    """--load-only: read every tensor of one model into memory (no streaming).

    From the bytes of each shard, not ``load_file``: that maps the file, and pages nobody touches
    never become resident, so VmHWM would not show the model.
    """
    from safetensors.torch import load

    state = {}
    for shard in sorted(Path(folder).glob("*.safetensors")):
        state.update(load(shard.read_bytes()))
    print(f"loaded {len(state)} tensors, {sum(v.numel() * v.element_size() for v in state.values()) / 2**30:.2f} GiB")


def measure_whole_model_load(folder: Path, n_models: int) -> Dict[str, float]:
    """Peak RSS of loading one model whole; K + 1 models: that plus K more models' bytes."""
    _, peak = run_measured("benchmarks.speed.bench_memory_1b", ["--load-only", folder])
    model_mib = sum(f.stat().st_size for f in Path(folder).glob("*.safetensors")) / 2**20
    estimate = peak + n_models * model_mib
    print(f"{'whole-model load':16s} peak RSS {peak:8.0f} MiB (one model of {model_mib:.0f} MiB; "
          f"K + 1 = {n_models + 1} models would be about {estimate:.0f} MiB)", flush=True)
    return {"one_model_peak_rss_mib": peak, "model_file_mib": model_mib, "k_plus_1_models_estimate_mib": estimate}


def write_results(results: Dict) -> None:
    """memory_1b.json and the table in memory_1b.md."""
    runs, ratios, load = results["runs"], results["ratios_to_task_arithmetic"], results["whole_model_load"]
    machine = results["machine"]
    lines = [
        "# Peak memory on a ~1B-parameter model: awd (and tsv) vs mergekit task_arithmetic",
        "",
        f"Command: `{results['command']}` ({machine['cpu_count']} CPU cores, torch {machine['torch']}). "
        "Each merge is a fresh `mergekit-awd CONFIG OUT --no-copy-tokenizer --quiet --no-write-model-card` "
        "process, run one after the other; peak RSS = the child's VmHWM. Model: " + results["model"] + ".",
        "",
        "| method | parameters | wall s | peak RSS MiB | RSS ratio | time ratio | target |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in runs.items():
        target = "reference" if name == "task_arithmetic" else ("≤ 1.3× RSS" if name.startswith("awd") else "")
        params = ", ".join(f"{k}: {v}" for k, v in results["methods"][name]["parameters"].items())
        ratio = ratios.get(name, {})
        lines.append(f"| {name} | {params} | {r['seconds']:.0f} | {r['peak_rss_mib']:.0f} | "
                     f"{ratio.get('rss_ratio', float('nan')):.2f} | {ratio.get('time_ratio', float('nan')):.2f} | {target} |")
    for name, error in results["failures"].items():
        lines.append(f"| {name} | | failed | | | | {error} |")
    k = results["k"]
    lines += [
        "",
        f"For context, loading one whole model ({load['model_file_mib']:.0f} MiB of weights) into memory "
        f"(every shard read and deserialised) peaks at {load['one_model_peak_rss_mib']:.0f} MiB; holding the "
        f"base and the {k} fine-tunes at once, as a non-streaming merge would, is about "
        f"{load['k_plus_1_models_estimate_mib']:.0f} MiB (that peak plus {k} more models' weights)"
        + (f" (measured by `{load['command']}`)" if load.get("command") else "") + ".",
        "",
    ]
    save_results("memory_1b", results, lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=str(CACHE))
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--models", type=int, default=4, help="K, the number of fine-tunes")
    parser.add_argument("--context-only", action="store_true",
                        help="only re-measure the whole-model load and update the existing results")
    parser.add_argument("--load-only", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_only:
        load_whole_model(args.load_only)
        return
    command = ("python -m benchmarks.speed.bench_memory_1b" + (f" --layers {args.layers}" if args.layers != 20 else "")
               + (f" --models {args.models}" if args.models != 4 else ""))
    if args.context_only:
        results = json.loads((RESULTS / "memory_1b.json").read_text())
        results.setdefault("k", args.models)
        results.setdefault("methods", method_table(["tsv"] if "tsv_lowrank" in results["runs"] else []))
        paths, _ = build_inputs(Path(args.cache), args.layers, args.models)
        results["whole_model_load"] = {**measure_whole_model_load(paths[0], args.models),
                                       "command": command + " --context-only"}
        write_results(results)
        return
    from mergekit.merge_methods import registered_methods

    import mergekit_awd  # noqa: F401  (registers awd and tsv)

    available = [m.spec.name for m in registered_methods()]
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    paths, parameters = build_inputs(cache, args.layers, args.models)
    work = cache / "memory_1b_runs"
    work.mkdir(parents=True, exist_ok=True)
    runs: Dict[str, Dict[str, float]] = {}
    failures: Dict[str, str] = {}
    methods = method_table(available)
    for name, method in methods.items():
        config = work / f"{name}.yml"
        write_merge_config(paths, method["merge_method"], method["parameters"], "bfloat16", config)
        out = work / f"out_{name}"
        try:
            runs[name] = measure_merge(config, out)
        except RuntimeError as error:
            failures[name] = str(error)
            print(f"{name:16s} FAILED: {error}", flush=True)
            continue
        finally:
            if out.exists():
                shutil.rmtree(out)  # 2 GB per output: keep one at a time
        print(f"{name:16s} {runs[name]['seconds']:8.1f} s  peak RSS {runs[name]['peak_rss_mib']:8.0f} MiB", flush=True)
    reference = runs.get("task_arithmetic")
    ratios = ({name: {"rss_ratio": r["peak_rss_mib"] / reference["peak_rss_mib"],
                      "time_ratio": r["seconds"] / reference["seconds"]} for name, r in runs.items()}
              if reference else {})
    results = {
        "command": command,
        "machine": machine_info(),
        "model": model_description(parameters, args.layers, args.models),
        "parameters": parameters,
        "k": args.models,
        "methods": methods,
        "runs": runs,
        "failures": failures,
        "ratios_to_task_arithmetic": ratios,
        "whole_model_load": measure_whole_model_load(paths[0], args.models),
        "target": {"awd_rss_ratio": 1.3},
    }
    write_results(results)


def model_description(parameters: int, layers: int, n_models: int) -> str:
    return (f"LLaMA-shaped, {parameters / 1e9:.3f}B parameters (hidden 2048, {layers} layers, MLP 5632, "
            f"16 heads / 4 KV heads, vocab 32000, untied head), bfloat16, K = {n_models} fine-tunes, "
            f"{SHARD_BYTES // 2**20} MiB input shards")


if __name__ == "__main__":
    main()
