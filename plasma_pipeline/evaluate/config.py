"""Config of the evaluation stage (stage 12), built by the recipe loader from the recipe's `evaluation:` section.

evaluation:
  val_max_rows: 64                 # val rows per domain scored for loss / bits-per-byte
  batch_size: 8
  prompts_per_domain: 4            # held-out battery prompts per domain
  max_new_tokens: 64
  temperature: 0.0                 # 0 = greedy, reproducible
  top_p: 1.0
  seed: 0
  bpb_regression_threshold: 0.05   # relative: fail when bpb > previous * 1.05
  sample_prompt: "Tell me about the Moon."
  device: auto
"""

from __future__ import annotations

from dataclasses import dataclass


def _pos_int(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")


@dataclass
class EvalConfig:
    """What the evaluation stage measures and how it generates."""

    # Val rows scored per domain (loss, bits-per-byte); rows beyond this are skipped.
    val_max_rows: int = 64
    # Rows per forward pass when scoring the val split.
    batch_size: int = 8
    # Held-out battery prompts generated per domain, per model.
    prompts_per_domain: int = 4
    # Tokens generated at most per battery prompt.
    max_new_tokens: int = 64
    # Sampling temperature for the battery; 0 = greedy (reproducible).
    temperature: float = 0.0
    # Nucleus sampling mass when temperature > 0 (1.0 = off).
    top_p: float = 1.0
    # Sampling seed (used only when temperature > 0).
    seed: int = 0
    # Relative bits-per-byte increase over the previous version that fails the asset check (0.05 = 5 %).
    bpb_regression_threshold: float = 0.05
    # The one user prompt whose chat-model reply is shown as the sample exchange.
    sample_prompt: str = "Tell me about the Moon."
    # "auto" (cuda if available), "cpu" or "cuda".
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("val_max_rows", "batch_size", "prompts_per_domain", "max_new_tokens"):
            _pos_int(getattr(self, name), name)
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) or self.temperature < 0:
            raise ValueError(f"temperature: expected a number >= 0, got {self.temperature!r}")
        if isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p: expected a number in (0, 1], got {self.top_p!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed: expected an integer, got {self.seed!r}")  # noqa: TRY004  (the recipe loader expects ValueError)
        t = self.bpb_regression_threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or t < 0:
            raise ValueError(f"bpb_regression_threshold: expected a number >= 0, got {t!r}")
        if not isinstance(self.sample_prompt, str) or not self.sample_prompt.strip():
            raise ValueError(f"sample_prompt: expected a non-empty string, got {self.sample_prompt!r}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ValueError(f"device: expected auto, cpu, cuda or cuda:N, got {self.device!r}")
