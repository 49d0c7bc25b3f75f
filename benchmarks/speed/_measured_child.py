"""Child of ``benchmarks.speed.measure.run_measured``: run a module as __main__, then record this
process's VmHWM.

    python -m benchmarks.speed._measured_child RESULT.json MODULE [ARGS...]
"""

import atexit
import json
import runpy
import sys


def _record(path: str) -> None:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                kib = int(line.split()[1])
                break
    with open(path, "w", encoding="ascii") as handle:
        json.dump({"vm_hwm_kib": kib}, handle)


if __name__ == "__main__":
    result_path, module, *arguments = sys.argv[1:]
    atexit.register(_record, result_path)
    sys.argv = [module, *arguments]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
