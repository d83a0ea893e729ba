"""fp8 matmuls for the decoder blocks through torchao's float8 training (dynamic tensorwise scaling).

Our blocks are functions over weight tensors, not nn.Linear modules, so torchao's module swap
(`convert_to_float8_training`) has nothing to swap. The function below is what torchao's `Float8Linear.forward`
calls: e4m3 inputs and weights forward, e5m2 gradients backward, bf16 out. Optional: torchao is imported only
when a run asks for fp8, so the trainer itself still depends on torch alone.
"""

from __future__ import annotations

from typing import Callable

import torch


def float8_linear(emulate: bool = False) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A drop-in for F.linear(x, w) (no bias) doing its three matmuls in fp8. emulate: torchao's reference path
    in high precision (CPU tests); on the GPU the scaled matmuls need compute capability 8.9 or newer."""
    try:
        from torchao.float8 import Float8LinearConfig
        from torchao.float8.float8_linear import Float8Linear, matmul_with_hp_or_float8_args
    except ImportError as e:
        raise ValueError(f"fp8: needs the torchao package (pip install torchao): {e}") from e
    config = Float8LinearConfig(emulate=emulate)
    with torch.device("meta"):  # only for the matmul configs torchao derives from a config
        proto = Float8Linear(16, 16, bias=False, config=config)
    mm_config = proto.linear_mm_config

    def linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type):  # as Float8Linear.forward: the output keeps autocast's dtype
            x = x.to(torch.get_autocast_dtype(x.device.type))
        return matmul_with_hp_or_float8_args.apply(x, w.t(), mm_config, config)

    return linear


def check_fp8_device(device: torch.device) -> None:
    """ValueError before any work where the scaled fp8 matmul cannot run."""
    if device.type != "cuda":
        return  # CPU runs use the emulated path
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        raise ValueError(f"fp8: needs a GPU of compute capability 8.9 or newer (Ada, Hopper); "
                         f"{torch.cuda.get_device_name(device)} is {major}.{minor}")
