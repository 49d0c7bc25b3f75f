"""Registers this package's merge methods with mergekit, once per process."""

from __future__ import annotations

import threading
from typing import Optional, Tuple

from mergekit.merge_methods import register, registered_methods

from mergekit_awd.errors import PlanError
from mergekit_awd.mergekit_adapter.card_lookup import patch_card_lookup
from mergekit_awd.mergekit_adapter.ace_method import ace_merge_method
from mergekit_awd.mergekit_adapter.awd_method import awd_merge_method
from mergekit_awd.mergekit_adapter.iso_method import iso_c_merge_method, iso_cts_merge_method
from mergekit_awd.mergekit_adapter.method import PackageMergeMethod
from mergekit_awd.mergekit_adapter.tsv_method import tsv_merge_method
from mergekit_awd.mergekit_adapter.wudi_method import wudi_merge_method


_REGISTERING = threading.Lock()


# This package's merge methods; a new method is one more entry here.
OUR_METHODS: Tuple[PackageMergeMethod, ...] = (
    awd_merge_method, tsv_merge_method, wudi_merge_method, iso_c_merge_method, iso_cts_merge_method,
    ace_merge_method,
)
for _method in OUR_METHODS:
    _method.join_registry(OUR_METHODS)


def our_methods() -> Tuple[PackageMergeMethod, ...]:
    """This package's merge methods, in registration order."""
    return OUR_METHODS


def method_for(name: str) -> Optional[PackageMergeMethod]:
    """Our method called ``name``, or None (a mergekit method, or unknown)."""
    return next((method for method in our_methods() if method.spec.name == name), None)


def register_methods() -> None:
    """Register our methods with ``mergekit.merge_methods`` and apply the package's one patch of
    mergekit (``card_lookup.patch_card_lookup``); idempotent and safe from several threads.

    A name already taken by a method that is not ours is an error (mergekit's own rule).
    """
    with _REGISTERING:
        present = {method.spec.name: method for method in registered_methods()}
        for method in our_methods():
            existing = present.get(method.spec.name)
            if existing is None:
                register(method)
            elif type(existing) is not type(method):
                raise PlanError(
                    f"merge method {method.spec.name!r} is already registered by "
                    f"{type(existing).__module__}.{type(existing).__name__}"
                )
    patch_card_lookup()
