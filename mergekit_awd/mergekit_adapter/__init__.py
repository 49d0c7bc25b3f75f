"""Thin adapter between the numerical core and mergekit.

* ``method``: ``PackageMergeMethod``, what every method brings (spec from its settings, the shared
  prologue and finite-input policy, its report file and card lines); ``specs`` generates the specs.
* ``awd_method``, ``tsv_method``: one module per method.
* ``registration``: the list of our methods, registered with mergekit.
* ``planner``: mergekit's planner with the optional-weight fix and the model-scope hook;
  ``model_scope/``: everything ``scope: model`` needs.
* ``report``: what a method records during a merge; ``card_lookup``: mergekit's card made offline-safe.
"""

from mergekit_awd.mergekit_adapter.method import PackageMergeMethod
from mergekit_awd.mergekit_adapter.registration import method_for, our_methods, register_methods

__all__ = ["PackageMergeMethod", "our_methods", "method_for", "register_methods"]
