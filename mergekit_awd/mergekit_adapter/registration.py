"""Registers this package's merge methods with mergekit, once per process."""

from __future__ import annotations

from typing import Optional, Tuple

from mergekit.merge_methods import register, registered_methods

from mergekit_awd.errors import PlanError
from mergekit_awd.mergekit_adapter.ace_method import ace_merge_method
from mergekit_awd.mergekit_adapter.awd_method import awd_merge_method
from mergekit_awd.mergekit_adapter.iso_method import iso_c_merge_method, iso_cts_merge_method
from mergekit_awd.mergekit_adapter.method import PackageMergeMethod
from mergekit_awd.mergekit_adapter.tsv_method import tsv_merge_method
from mergekit_awd.mergekit_adapter.wudi_method import wudi_merge_method


def our_methods() -> Tuple[PackageMergeMethod, ...]:
    """This package's merge methods; a new method is one more entry here."""
    return (awd_merge_method, tsv_merge_method, wudi_merge_method, iso_c_merge_method, iso_cts_merge_method,
            ace_merge_method)


def method_for(name: str) -> Optional[PackageMergeMethod]:
    """Our method called ``name``, or None (a mergekit method, or unknown)."""
    return next((method for method in our_methods() if method.spec.name == name), None)


def register_methods() -> None:
    """Register our methods with ``mergekit.merge_methods``; idempotent.

    A name already taken by a method that is not ours is an error (mergekit's own rule).
    """
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
