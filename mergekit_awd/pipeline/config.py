"""Load a merge configuration from a path, YAML text, a dict or a MergeConfiguration.

Rules, checked before mergekit's pydantic models see the data (each breach is one bounded
``ConfigError`` naming the file):

* YAML is read with a safe loader (no Python objects).
* A mapping may not repeat a key (plain YAML keeps the last one silently); the error names the
  key and both line numbers.  Keys brought in by a merge key (``<<: *anchor``) may be overridden.
* Anchors and aliases are fine for reuse, but the document, with every alias expanded, may hold at
  most ``MAX_EXPANDED_NODES`` nodes, and no alias may contain itself.  This is computed on the
  composed node graph in linear time, before anything expands it (a few hundred bytes of nested
  aliases would otherwise expand to hundreds of millions of values).
* Every key must be one that mergekit's configuration models accept at that place (top level,
  ``models[i]``, ``slices[i].sources[j]``, ``modules.NAME``, ``tokenizer`` …); mergekit itself
  ignores unknown keys, so a misspelt ``paramters:`` would silently do nothing.  The contents of
  ``parameters`` blocks are left to ``validation.check_parameters`` (it knows the method).
"""

from __future__ import annotations

import difflib
import os
import types
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union, get_args, get_origin

import yaml
from mergekit.config import MergeConfiguration
from pydantic import AliasChoices, AliasPath, BaseModel
from typing_extensions import Annotated
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from mergekit_awd.errors import ConfigError

ConfigInput = Union[str, os.PathLike, Dict[str, Any], MergeConfiguration]

# Most nodes (scalars, lists, mappings and keys) a YAML configuration may expand to, aliases
# expanded.  A real configuration has a few hundred.
MAX_EXPANDED_NODES = 100_000

# Fields whose contents are not checked here: parameter names depend on the merge method.
UNCHECKED_FIELDS = frozenset({"parameters"})

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _TooLarge(Exception):
    pass


class _SelfReference(Exception):
    def __init__(self, node: Node) -> None:
        super().__init__()
        self.node = node


def _children(node: Node) -> List[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def expanded_size(root: Node, limit: int = MAX_EXPANDED_NODES) -> Tuple[int, List[MappingNode]]:
    """Nodes in ``root`` with every alias expanded (size = 1 + children's sizes, memoised per node,
    so shared nodes cost once), and the distinct mapping nodes.  ``_TooLarge`` past ``limit``,
    ``_SelfReference`` for an alias inside its own anchor.  Iterative: deep nesting is fine."""
    sizes: Dict[int, int] = {}
    on_path = set()
    mappings: List[MappingNode] = []
    stack: List[Tuple[Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            total = 1 + sum(sizes[id(child)] for child in _children(node))
            if total > limit:
                raise _TooLarge()
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise _SelfReference(node)
        on_path.add(key)
        if isinstance(node, MappingNode):
            mappings.append(node)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
    return sizes[id(root)], mappings


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that bounds alias expansion and refuses duplicate keys (module doc)."""

    label = "<yaml>"

    def __init__(self, stream: Any, label: str = "<yaml>") -> None:
        super().__init__(stream)
        self.label = label
        self._composed = 0

    def _too_large(self) -> ConfigError:
        return ConfigError(
            f"{self.label}: the YAML document expands to more than {MAX_EXPANDED_NODES} nodes "
            "(YAML anchors/aliases); a merge configuration is far smaller",
            path=self.label,
        )

    def compose_node(self, parent: Optional[Node], index: Any) -> Node:
        # Bounds composing itself (one node per YAML value written out, aliases not counted).
        self._composed += 1
        if self._composed > MAX_EXPANDED_NODES:
            raise self._too_large()
        return super().compose_node(parent, index)

    def get_single_node(self) -> Optional[Node]:
        node = super().get_single_node()
        if node is not None:
            try:
                _, mappings = expanded_size(node)
            except _TooLarge:
                raise self._too_large() from None
            except _SelfReference as error:
                raise ConfigError(
                    f"{self.label}: line {error.node.start_mark.line + 1}: a YAML alias refers to the "
                    "anchor it is inside (a recursive structure)",
                    path=self.label,
                ) from None
            for mapping in mappings:
                self._check_duplicates(mapping)
        return node

    def _check_duplicates(self, mapping: MappingNode) -> None:
        seen: Dict[Any, Any] = {}
        for key_node, _ in mapping.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, ScalarNode):
                continue
            try:
                key = self.construct_object(key_node, deep=True)
                hash(key)
            except (yaml.YAMLError, TypeError):
                continue  # construction reports it
            mark = key_node.start_mark
            if key in seen:
                first = seen[key]
                where = (f"line {mark.line + 1}, column {mark.column + 1} (first at column {first.column + 1})"
                         if first.line == mark.line else f"line {mark.line + 1} (first on line {first.line + 1})")
                raise ConfigError(
                    f"{self.label}: duplicate key {key!r} on {where}; a key may appear only once in a mapping",
                    path=self.label, key=str(key),
                )
            seen[key] = mark


def load_yaml(source: str, label: str) -> Any:
    """Parse ``source`` with ``ConfigLoader``; any YAML problem is a ``ConfigError``."""
    loader = ConfigLoader(source, label)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as error:
        raise ConfigError(f"{label}: not valid YAML: {error}", path=label) from None
    except RecursionError:
        raise ConfigError(f"{label}: the YAML document is nested too deeply", path=label) from None
    finally:
        loader.dispose()


# --------------------------------------------------------------------------- unknown keys


def _accepted_keys(model: type) -> Dict[str, str]:
    """Key accepted in input -> field name, honouring aliases (``validation_alias``, ``alias``)."""
    config = model.model_config
    by_name = bool(config.get("populate_by_name") or config.get("validate_by_name"))
    accepted: Dict[str, str] = {}
    for name, info in model.model_fields.items():
        aliases: List[str] = []
        alias = info.validation_alias
        if isinstance(alias, str):
            aliases.append(alias)
        elif isinstance(alias, AliasChoices):
            for choice in alias.choices:
                if isinstance(choice, str):
                    aliases.append(choice)
                elif isinstance(choice, AliasPath) and choice.path and isinstance(choice.path[0], str):
                    aliases.append(choice.path[0])
        elif isinstance(alias, AliasPath) and alias.path and isinstance(alias.path[0], str):
            aliases.append(alias.path[0])
        elif info.alias:
            aliases.append(info.alias)
        for key in aliases:
            accepted[key] = name
        if not aliases or by_name:
            accepted[name] = name
    return accepted


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _fits(value: Any, annotation: Any) -> bool:
    """Whether ``value`` has the shape (mapping, list) of ``annotation``; scalars fit nothing here."""
    origin = get_origin(annotation)
    if isinstance(value, dict):
        return _is_model(annotation) or origin in (dict, Dict)
    if isinstance(value, (list, tuple)):
        return origin in (list, tuple, List, Tuple)
    return False


def _where(location: str) -> str:
    return f"in {location}" if location else "at the top level"


def _check_value(value: Any, annotation: Any, location: str, label: str) -> None:
    """Raise ``ConfigError`` for a key that ``annotation`` (models, containers, unions) would drop."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        _check_value(value, args[0], location, label)
    elif origin is Union or origin is getattr(types, "UnionType", None):
        candidates = [a for a in args if a is not type(None) and _fits(value, a)]
        if len(candidates) == 1:
            _check_value(value, candidates[0], location, label)
        elif candidates:
            # Several models could take this mapping: fine if one takes it whole; otherwise report
            # for the one that knows most of its keys.
            failures = []
            for candidate in candidates:
                try:
                    _check_value(value, candidate, location, label)
                    return
                except ConfigError as error:
                    known = _accepted_keys(candidate) if _is_model(candidate) else {}
                    failures.append((sum(k in known for k in value), error))
            raise max(failures, key=lambda f: f[0])[1]
    elif _is_model(annotation):
        if isinstance(value, dict):
            check_model_keys(value, annotation, location, label)
    elif origin in (dict, Dict) and isinstance(value, dict) and len(args) == 2:
        for key, item in value.items():
            _check_value(item, args[1], f"{location}.{key}" if location else str(key), label)
    elif origin in (list, List) and isinstance(value, (list, tuple)) and args:
        for i, item in enumerate(value):
            _check_value(item, args[0], f"{location}[{i}]", label)
    elif origin in (tuple, Tuple) and isinstance(value, (list, tuple)) and args:
        item_types = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        for i, (item, item_type) in enumerate(zip(value, item_types)):
            _check_value(item, item_type, f"{location}[{i}]", label)


def check_model_keys(data: Dict[Any, Any], model: type, location: str, label: str) -> None:
    """Every key of ``data`` is a field (or alias) of the pydantic ``model``, recursively.

    The error names the file, the location (``models[1]``), the key, the closest accepted key and
    all accepted keys.  Models that allow extra keys and ``UNCHECKED_FIELDS`` are not looked into.
    """
    if model.model_config.get("extra") == "allow":
        return
    accepted = _accepted_keys(model)
    for key in data:
        if key not in accepted:
            close = difflib.get_close_matches(str(key), list(accepted), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ";"
            raise ConfigError(
                f"{label}: unknown key {str(key)!r} {_where(location)}{hint} "
                f"accepted: {', '.join(sorted(accepted))}",
                path=label, key=str(key),
            )
    for key, value in data.items():
        name = accepted[key]
        if name in UNCHECKED_FIELDS:
            continue
        _check_value(value, model.model_fields[name].annotation, f"{location}.{key}" if location else str(key), label)


# --------------------------------------------------------------------------- loading


def load_config(config: ConfigInput) -> Tuple[MergeConfiguration, str, str]:
    """Return (configuration, YAML source text, a label naming where it came from).

    YAML (a path or text) goes through ``load_yaml``; YAML and dicts then through
    ``check_model_keys`` and only then ``MergeConfiguration.model_validate``.
    """
    if isinstance(config, MergeConfiguration):
        return config, config.to_yaml(), "<MergeConfiguration>"
    if isinstance(config, dict):
        label, data = "<dict>", config
        check_model_keys(data, MergeConfiguration, "", label)
        source = yaml.safe_dump(config, sort_keys=False)
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
        data = load_yaml(source, label)
        if not isinstance(data, dict):
            raise ConfigError(f"{label}: expected a YAML mapping with merge_method, models, ...")
        check_model_keys(data, MergeConfiguration, "", label)
    try:
        return MergeConfiguration.model_validate(data), source, label
    except Exception as error:  # pydantic.ValidationError or mergekit's RuntimeError
        raise ConfigError(f"{label}: invalid merge configuration: {error}") from None


__all__ = ["ConfigError", "ConfigInput", "MAX_EXPANDED_NODES", "ConfigLoader", "load_yaml",
           "check_model_keys", "load_config"]
