"""The package redesign (issue #11) changed no bit of any merge: tensor digests against the
reference written by the commit before it (``tests/reference_outputs.py``)."""

import json

from reference_outputs import REFERENCE, produce


def test_merged_and_compressed_outputs_are_bit_identical_to_the_reference(tmp_path):
    expected = json.loads(REFERENCE.read_text())
    produced = produce(tmp_path)
    assert sorted(produced) == sorted(expected)
    for name in expected:
        changed = sorted(k for k in expected[name] if produced[name].get(k) != expected[name][k])
        assert set(produced[name]) == set(expected[name]), name
        assert changed == [], f"{name}: {len(changed)} tensors differ, e.g. {changed[:3]}"
