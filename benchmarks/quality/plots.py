"""PNG plots of ``quality.json`` (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping

from benchmarks.quality.report import SHORT

PLOT_FILES = ("accuracy_per_method.png", "accuracy_vs_k.png", "accuracy_vs_lambda.png", "awd_cosines.png")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy_per_method(results: Mapping[str, Any], path: Path,
                             title: str = "Test accuracy per task, each task with its own head") -> None:
    """Grouped bars: test accuracy per task (and the average) for each method."""
    plt = _pyplot()
    tasks = list(results["individual"])
    rows: Dict[str, Dict[str, float]] = {"individual": dict(results["individual"]),
                                         "pretrained": dict(results["pretrained"]["tasks"])}
    rows.update({name: dict(entry["tasks"]) for name, entry in results["methods"].items()})
    columns = [SHORT.get(t, t) for t in tasks] + ["avg"]
    fig, ax = plt.subplots(figsize=(12, 5.2))
    width = 0.8 / len(rows)
    for i, (name, scores) in enumerate(rows.items()):
        values = [scores[t] for t in tasks] + [sum(scores[t] for t in tasks) / len(tasks)]
        ax.bar([j + i * width for j in range(len(columns))], [100 * v for v in values], width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(columns))], columns)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(ncol=min(len(rows), 8), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.07), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_accuracy_vs_k(results: Mapping[str, Any], path: Path) -> None:
    """Normalized test accuracy vs number of merged tasks: subsets as dots, their mean as a line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    methods = list(dict.fromkeys(r["method"] for r in results["subsets"]))
    for i, method in enumerate(methods):
        rows = [r for r in results["subsets"] if r["method"] == method]
        ks = sorted({r["k"] for r in rows})
        means = [sum(r["normalized_avg"] for r in rows if r["k"] == k) / sum(1 for r in rows if r["k"] == k)
                 for k in ks]
        line = ax.plot(ks, [100 * m for m in means], marker="o", label=method)[0]
        offset = (i - (len(methods) - 1) / 2) * 0.06
        ax.scatter([r["k"] + offset for r in rows], [100 * r["normalized_avg"] for r in rows],
                   color=line.get_color(), alpha=0.35, s=14)
    ax.set_xlabel("number of merged tasks K")
    ax.set_ylabel("normalized test accuracy (%)")
    ax.set_title("Merging more tasks (settings chosen for K = 6)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def lambda_curves(results: Mapping[str, Any], name: str) -> List[tuple]:
    """(label, λs, validation normalized) for the configuration of ``name`` chosen on validation."""
    grid = results["validation_grid"][name]
    chosen = {k: v for k, v in results["methods"][name]["params"].items() if k not in ("lambda", "merge_method")}
    points = [p for p in grid["points"]
              if {k: v for k, v in p["params"].items() if k != "lambda"} == chosen]
    points.sort(key=lambda p: p["params"]["lambda"])
    extra = ", ".join(f"{k} {v}" for k, v in chosen.items() if k in ("alpha", "density"))
    label = f"{name} ({extra})" if extra else name
    return [(label, [p["params"]["lambda"] for p in points], [p["normalized_avg"] for p in points])]


def plot_accuracy_vs_lambda(results: Mapping[str, Any], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name in ("task_arithmetic", "awd_tensor", "awd_model"):
        for label, lams, values in lambda_curves(results, name):
            ax.plot(lams, [100 * v for v in values], marker="o", label=label)
    ax.set_xlabel("λ")
    ax.set_ylabel("normalized validation accuracy (%)")
    ax.set_title("Validation accuracy vs λ (six tasks)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_awd_cosines(results: Mapping[str, Any], path: Path) -> None:
    """Pairwise |cos| of the task vectors before and after AWD (model scope, from awd_report.json)."""
    plt = _pyplot()
    cos = results["awd_model_scope_cosines"]
    labels = [SHORT.get(t, t) for t in cos["tasks"]]
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.6))
    top = max(v for key in ("abs_cos_before", "abs_cos_after") for i, row in enumerate(cos[key])
              for j, v in enumerate(row) if i != j) or 1.0  # one colour scale for both panels
    for ax, key, title in ((axes[0], "abs_cos_before", "before AWD"), (axes[1], "abs_cos_after", "after AWD")):
        matrix = [[0.0 if i == j else v for j, v in enumerate(row)] for i, row in enumerate(cos[key])]
        image = ax.imshow(matrix, vmin=0, vmax=top, cmap="viridis")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        for i, row in enumerate(matrix):
            for j, v in enumerate(row):
                if i != j:
                    ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=7, color="white")
        ax.set_title(f"|cos(τ_i, τ_j)| {title}")
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(results: Mapping[str, Any], folder: Path) -> None:
    plot_accuracy_per_method(results, folder / PLOT_FILES[0])
    plot_accuracy_vs_k(results, folder / PLOT_FILES[1])
    plot_accuracy_vs_lambda(results, folder / PLOT_FILES[2])
    plot_awd_cosines(results, folder / PLOT_FILES[3])
