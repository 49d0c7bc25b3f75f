"""Load a merge configuration from a path, YAML text, a dict or a MergeConfiguration."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Tuple, Union

import yaml
from mergekit.config import MergeConfiguration

from mergekit_awd.errors import ConfigError

ConfigInput = Union[str, os.PathLike, Dict[str, Any], MergeConfiguration]


def load_config(config: ConfigInput) -> Tuple[MergeConfiguration, str, str]:
    """Return (configuration, YAML source text, a label naming where it came from)."""
    if isinstance(config, MergeConfiguration):
        return config, config.to_yaml(), "<MergeConfiguration>"
    if isinstance(config, dict):
        source, label, data = yaml.safe_dump(config, sort_keys=False), "<dict>", config
    else:
        text = os.fspath(config)
        is_path = isinstance(config, os.PathLike) or ("\n" not in text and ":" not in text.split("/")[-1])
        if is_path or os.path.isfile(text):
            path = Path(text)
            if not path.is_file():
                raise ConfigError(f"config file {text!r} does not exist")
            source, label = path.read_text(encoding="utf-8"), str(path)
        else:
            source, label = text, "<yaml text>"
        try:
            data = yaml.safe_load(source)
        except yaml.YAMLError as error:
            raise ConfigError(f"{label}: not valid YAML: {error}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{label}: expected a YAML mapping with merge_method, models, ...")
    try:
        return MergeConfiguration.model_validate(data), source, label
    except Exception as error:  # pydantic.ValidationError or mergekit's RuntimeError
        raise ConfigError(f"{label}: invalid merge configuration: {error}") from None
