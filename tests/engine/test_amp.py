"""Mixed-precision choices: fp32 on CPU unless bf16 is asked for, fp16 + GradScaler on CUDA."""
import torch

from glip.engine.amp import autocast, make_grad_scaler, resolve_amp_dtype


def test_dtype_resolution():
    assert resolve_amp_dtype("cpu", use_amp=False) is None
    assert resolve_amp_dtype("cpu", use_amp=True) is None
    assert resolve_amp_dtype("cpu", use_amp=True, dtype=torch.bfloat16) is torch.bfloat16
    assert resolve_amp_dtype("cuda", use_amp=True) is torch.float16
    assert resolve_amp_dtype(torch.device("cuda", 0), use_amp=False, dtype=torch.bfloat16) is None


def test_scaler_only_for_float16():
    assert make_grad_scaler("cpu", None) is None
    assert make_grad_scaler("cpu", torch.bfloat16) is None
    assert isinstance(make_grad_scaler("cpu", torch.float16), torch.amp.GradScaler)


def test_autocast_context():
    layer = torch.nn.Linear(3, 2)
    x = torch.randn(4, 3)
    with autocast("cpu", None):
        assert layer(x).dtype == torch.float32
    with autocast("cpu", torch.bfloat16):
        assert layer(x).dtype == torch.bfloat16
