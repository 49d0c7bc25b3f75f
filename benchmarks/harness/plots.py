"""PNG plots both tracks draw from their results mapping (matplotlib, Agg backend); ``short``: the
column label of each task."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy_per_method(results: Mapping[str, Any], path: Path, title: str, short: Mapping[str, str]) -> None:
    """Grouped bars: test accuracy per task (and the average) for each method."""
    plt = pyplot()
    tasks = list(results["individual"])
    rows: Dict[str, Dict[str, float]] = {"individual": dict(results["individual"]),
                                         "pretrained": dict(results["pretrained"]["tasks"])}
    rows.update({name: dict(entry["tasks"]) for name, entry in results["methods"].items()})
    columns = [short.get(t, t) for t in tasks] + ["avg"]
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


def plot_awd_cosines(results: Mapping[str, Any], path: Path, short: Mapping[str, str]) -> None:
    """Pairwise |cos| of the task vectors before and after AWD (model scope, from awd_report.json)."""
    plt = pyplot()
    cos = results["awd_model_scope_cosines"]
    labels = [short.get(t, t) for t in cos["tasks"]]
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
