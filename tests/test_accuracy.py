"""benchmarks/accuracy.py: unpacking LMDeploy's w4a16 (AWQ) weights back to floats."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("accuracy_bench", ROOT / "benchmarks" / "accuracy.py")
acc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(acc)


def test_dequantized_weights_equal_lmdeploys_own_fake_quantization():
    torch = pytest.importorskip("torch")
    pytest.importorskip("lmdeploy.lite", reason="LMDeploy's quantizer: the lmdeploy environment")
    from lmdeploy.lite.quantization.modules.linear import WeightOnlyQLinear
    from lmdeploy.lite.quantization.weight.quantizer import WeightQuantizer

    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 48, bias=False)
    quantizer = WeightQuantizer(4, symmetry=False, granularity="per_group", group_size=128)
    q = WeightOnlyQLinear.from_linear(linear, quantizer)  # what auto_awq saves for each linear
    expected = quantizer.quant(linear.weight.detach(), real=False)  # LMDeploy's float view of the same
    got = acc.dequantize_linear(q.qweight, q.qzeros, q.scales)
    assert got.shape == linear.weight.shape
    # fp16 scales in the saved form: equal to rounding, and close to the original weights
    torch.testing.assert_close(got, expected.float(), atol=2e-3, rtol=1e-2)
    assert (got - linear.weight).abs().max() < 0.1
    # a wrong nibble order would scramble columns within each group of 8
    scrambled = acc.unpack_awq(q.qweight)[:, [1, 0, 2, 3, 4, 5, 6, 7] + list(range(8, 48))]
    assert not torch.equal(scrambled, acc.unpack_awq(q.qweight))


def test_unpack_reads_the_awq_nibble_order():
    torch = pytest.importorskip("torch")
    # column c of a group of 8 sits in nibble AWQ_ORDER.index(c)
    packed = torch.zeros(1, 1, dtype=torch.int32)
    for nibble, col in enumerate(acc.AWQ_ORDER):
        packed |= (col + 1) << (4 * nibble)
    assert acc.unpack_awq(packed).tolist() == [[1, 2, 3, 4, 5, 6, 7, 8]]
