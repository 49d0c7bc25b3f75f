"""PNG plots of ``quality.json`` (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from benchmarks.harness.plots import lambda_curves, plot_accuracy_per_method, plot_awd_cosines, pyplot
from benchmarks.quality.report import SHORT

PLOT_FILES = ("accuracy_per_method.png", "accuracy_vs_k.png", "accuracy_vs_lambda.png", "awd_cosines.png")


def plot_accuracy_vs_k(results: Mapping[str, Any], path: Path) -> None:
    """Normalized test accuracy vs number of merged tasks: subsets as dots, their mean as a line."""
    plt = pyplot()
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


def plot_accuracy_vs_lambda(results: Mapping[str, Any], path: Path) -> None:
    plt = pyplot()
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


def write_plots(results: Mapping[str, Any], folder: Path) -> None:
    plot_accuracy_per_method(results, folder / PLOT_FILES[0], "Test accuracy per task, each task with its own head",
                             SHORT)
    plot_accuracy_vs_k(results, folder / PLOT_FILES[1])
    plot_accuracy_vs_lambda(results, folder / PLOT_FILES[2])
    plot_awd_cosines(results, folder / PLOT_FILES[3], SHORT)
