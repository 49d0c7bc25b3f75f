"""mergekit's merge pipeline, driven with our planner and the merge's context instead of patches.

``run_mergekit`` is ``mergekit.merge.run_merge`` of mergekit 0.1.5, step for step and with mergekit's
own functions (loader cache, ``_model_out_config``, executor, tokenizer, chat template, tag-along
files, card), with three differences, so that nothing of mergekit is patched while a merge runs and
two merges in one process (two threads) never meet:

* the planner is ``AWDMergePlanner`` constructed here with the merge's ``MergeContext`` (mergekit's
  ``run_merge`` names ``MergePlanner`` as a module global, which could only be replaced process-wide);
* mergekit's card is generated inside a guard: if its generator fails the merge is not lost, a
  minimal card is written and the failure returned (``card_failures``);
* ``post_fill_parameters`` architectures (which write a second folder and delete the first) are
  refused up front instead (no architecture of the supported families declares it).

``tests/test_merge_context.py`` checks that mergekit's ``run_merge`` is still the function this one
follows (its source digest): a new mergekit release means re-reading it.  The one patch of mergekit
the package makes is ``mergekit_adapter.patches`` (applied once per process).
"""

from __future__ import annotations

import logging
import os
from typing import List, Optional, Tuple

import tqdm
import transformers
from mergekit.architecture import get_architecture_info
from mergekit.card import generate_card
from mergekit.config import MergeConfiguration
from mergekit.graph import Executor
from mergekit.io.tasks import LoaderCache
from mergekit.merge import (
    _copy_tagalong_files, _copy_tokenizer, _model_out_config, _set_chat_template, _update_config_vocab,
)
from mergekit.multigpu_executor import MultiGPUExecutor
from mergekit.options import MergeOptions
from mergekit.tokenizer import TokenizerInfo

from mergekit_awd.constants import CARD_FILENAME
from mergekit_awd.errors import ConfigError
from mergekit_awd.mergekit_adapter.card_lookup import minimal_card
from mergekit_awd.mergekit_adapter.context import MergeContext
from mergekit_awd.mergekit_adapter.planner import AWDMergePlanner

LOG = logging.getLogger(__name__)

# sha256 of ``inspect.getsource(mergekit.merge.run_merge)`` in the release this module follows
MERGEKIT_RUN_MERGE_SHA256 = "4456933bae68952d5f8afa38c7ff06727261c5a6330d3b82e476f9b3817c0067"


def run_mergekit(merge_config: MergeConfiguration, out_path: str, options: MergeOptions, context: MergeContext,
                 config_source: Optional[str] = None) -> List[Tuple[str, str]]:
    """Merge ``merge_config`` into ``out_path`` as mergekit's ``run_merge`` does (module docstring);
    returns the card failures ((step, reason) pairs; the merge itself succeeded)."""
    if options.random_seed is not None:
        transformers.trainer_utils.set_seed(options.random_seed)
    if not merge_config.models and not merge_config.slices and not merge_config.modules:
        raise ConfigError("No output requested")
    arch_info = get_architecture_info(merge_config, options)
    if getattr(arch_info, "post_fill_parameters", False):
        raise ConfigError(f"architecture {arch_info.name()} fills missing parameters from another repository "
                          "after merging: use mergekit-yaml for it")
    loader_cache = LoaderCache()
    loader_cache.setup(options=options)
    cfg_out = _model_out_config(merge_config, arch_info, trust_remote_code=options.trust_remote_code)
    for model in tqdm.tqdm(merge_config.referenced_models(), desc="Warmup loader cache", disable=options.quiet):
        loader_cache.get(model)
    targets = AWDMergePlanner(merge_config, arch_info, options=options, out_model_config=cfg_out,
                              context=context).plan_to_disk(out_path=out_path)
    tokenizer = _execute(targets, options)
    if tokenizer:
        pad_to = merge_config.tokenizer.pad_to_multiple_of if merge_config.tokenizer else None
        _update_config_vocab(cfg_out, arch_info, tokenizer, pad_to_multiple_of=pad_to or None)
    cfg_out.save_pretrained(out_path)
    failures = _write_card(merge_config, out_path, options, config_source)
    _save_tokenizer(merge_config, out_path, options, tokenizer)
    _copy_tagalong_files(merge_config, out_path, files=arch_info.tagalong_files or [], options=options)
    return failures


def _execute(targets: list, options: MergeOptions) -> Optional[transformers.PreTrainedTokenizerBase]:
    """Run the planned graph with mergekit's executor; the tokenizer it built, if any."""
    if options.multi_gpu:
        executor = MultiGPUExecutor(targets=targets, storage_device=None if options.low_cpu_memory else "cpu")
    else:
        executor = Executor(targets=targets, math_device=options.device,
                            storage_device=options.device if options.low_cpu_memory else "cpu")
    tokenizer = None
    for _task, value in executor.run(quiet=options.quiet):
        if isinstance(value, TokenizerInfo):
            tokenizer = value.tokenizer
    return tokenizer


def _write_card(merge_config: MergeConfiguration, out_path: str, options: MergeOptions,
                config_source: Optional[str]) -> List[Tuple[str, str]]:
    """mergekit's README.md and mergekit_config.yml; a minimal card when its generator fails."""
    if not options.write_model_card:
        return []
    source = config_source or merge_config.to_yaml()
    failures: List[Tuple[str, str]] = []
    name = os.path.basename(out_path)
    try:
        card = generate_card(config=merge_config, config_yaml=source, name=name)
    except Exception as error:  # the merge is finished: never lose it to its card
        failures.append(("mergekit's model card", f"{type(error).__name__}: {error}"))
        card = minimal_card(name, error)
    with open(os.path.join(out_path, CARD_FILENAME), "w", encoding="utf-8") as handle:
        handle.write(card)
    with open(os.path.join(out_path, "mergekit_config.yml"), "w", encoding="utf-8") as handle:
        handle.write(source)
    return failures


def _save_tokenizer(merge_config: MergeConfiguration, out_path: str, options: MergeOptions,
                    tokenizer: Optional[transformers.PreTrainedTokenizerBase]) -> None:
    """The built tokenizer (with the chat template), or a copy of the base's (``copy_tokenizer``)."""
    if tokenizer is not None:
        _set_chat_template(tokenizer, merge_config)
        tokenizer.save_pretrained(out_path, safe_serialization=True)
    elif options.copy_tokenizer:
        try:
            _copy_tokenizer(merge_config, out_path, options=options)
        except Exception as error:
            LOG.error("Failed to copy tokenizer. The merge was still successful, just copy it from somewhere else.",
                      exc_info=error)
    elif merge_config.chat_template:
        LOG.warning("Chat template specified but no tokenizer found. Chat template will not be saved.")


__all__ = ["run_mergekit", "MERGEKIT_RUN_MERGE_SHA256"]
