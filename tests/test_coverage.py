"""No op can be added to minivae.functional without a gradient check: every name in
`functional.__all__` must appear in some test module's GRADCHECK_CASES."""
import importlib
from pathlib import Path

from minivae import functional as F


def all_cases():
    cases = []
    for path in sorted(Path(__file__).parent.glob("test_*.py")):
        module = importlib.import_module(path.stem)
        cases += getattr(module, "GRADCHECK_CASES", [])
    return cases


def test_every_functional_op_has_a_gradcheck_case():
    checked = {case.op for case in all_cases()}
    missing = sorted(set(F.__all__) - checked)
    assert not missing, f"ops without a gradient check: {missing}"


def test_cases_name_real_ops():
    unknown = sorted({case.op for case in all_cases()} - set(F.__all__))
    assert not unknown, f"GRADCHECK_CASES name ops that minivae.functional does not export: {unknown}"
