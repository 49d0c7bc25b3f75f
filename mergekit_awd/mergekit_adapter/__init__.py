"""Thin adapter between the numerical core and mergekit: method specs, planner hook, report."""
