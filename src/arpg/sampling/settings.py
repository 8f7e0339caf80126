"""Sampling settings as one typed value.

A :class:`SamplingConfig` holds every knob that decides which images the sampler draws (apart from the
random generator): steps, step schedule, guidance scale and schedule, temperature, top-k / top-p, order
and attention. :func:`arpg.generate`, the editing functions, ``sample-fid`` recipes, the demo and the
CLI all pass this value on, and it is what gets written beside results, so a file never claims settings
that were not used. :meth:`SamplingConfig.validate` is the one place the values are checked.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..errors import ARPGError
from ..model import ATTENTION_MODES
from .guidance import CFG_SCHEDULES, TOKEN_DRAWS
from .orders import ORDERS
from .schedules import SCHEDULES as STEP_SCHEDULES

TEMPERATURE_SCHEDULES = ("constant", "anneal")


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling settings; see :func:`arpg.generate` for what each means."""

    steps: int = 64
    step_schedule: str | tuple[int, ...] = "arccos"
    cfg_scale: float = 1.0
    cfg_schedule: str = "linear"
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    order: str = "random"
    attention: str = "block"
    # Guidance only at steps whose share of decoded cells (counted after the step) lies in (lo, hi]; the
    # unconditional rows are skipped outside it, and dropped for good after its last step.
    guidance_interval: tuple[float, float] = (0.0, 1.0)
    temperature_schedule: str = "constant"  # or "anneal": linear from temperature to temperature_end
    temperature_end: float | None = None
    # Refinement: after the last step, re-predict the least confident refine_fraction of the decoded cells,
    # each round in one step with every other cell known.
    refine_rounds: int = 0
    refine_fraction: float = 0.1
    # How a token is drawn from its probabilities: "multinomial" (published) or "inverse-cdf" (the same
    # distribution from one uniform per token; faster where multinomial's per-entry randomness dominates).
    token_draw: str = "inverse-cdf"

    def __post_init__(self) -> None:
        if isinstance(self.step_schedule, (list, tuple)):  # hashable, and equal however it was given
            object.__setattr__(self, "step_schedule", tuple(int(c) for c in self.step_schedule))
        if isinstance(self.guidance_interval, list):
            object.__setattr__(self, "guidance_interval", tuple(self.guidance_interval))

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes: Any) -> "SamplingConfig":
        """A copy with the given fields changed; ``None`` values are ignored (they mean 'not given')."""
        bad = sorted(set(changes) - set(self.fields()))
        if bad:
            raise ARPGError(f"unknown sampling setting(s) {', '.join(bad)}; valid: {', '.join(self.fields())}")
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if isinstance(d["step_schedule"], tuple):
            d["step_schedule"] = list(d["step_schedule"])
        d["guidance_interval"] = list(d["guidance_interval"])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SamplingConfig":
        """The sampling fields of ``d`` (other keys, e.g. a recipe's seed, are ignored)."""
        nullable = ("top_k", "top_p", "temperature_end")
        return cls(**{k: d[k] for k in cls.fields() if k in d and (d[k] is not None or k in nullable)})

    def validate(self, unknown_cells: int | None = None) -> "SamplingConfig":
        """Check every value; one-line :class:`ARPGError` naming the first bad one. ``unknown_cells``: when
        known, ``steps`` must not exceed it (a step decodes at least one cell)."""
        def bad(name: str, want: str, got: Any) -> None:
            raise ARPGError(f"{name} must be {want}, got {got!r}")

        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            bad("steps", "a positive integer", self.steps)
        if isinstance(self.step_schedule, str):
            if self.step_schedule not in STEP_SCHEDULES:
                bad("step_schedule", f"one of {', '.join(STEP_SCHEDULES)} or a list of counts", self.step_schedule)
            if unknown_cells is not None and self.steps > unknown_cells:
                raise ARPGError(f"steps must be an integer in 1..{unknown_cells} (one cell per step at least), got {self.steps}")
        elif not self.step_schedule or min(self.step_schedule) < 1:
            bad("step_schedule", "a list of positive counts", list(self.step_schedule))
        elif unknown_cells is not None and sum(self.step_schedule) != unknown_cells:
            raise ARPGError(f"step_schedule counts must sum to the {unknown_cells} cells to decode, got "
                            f"{sum(self.step_schedule)} over {len(self.step_schedule)} steps")
        for name in ("cfg_scale", "temperature"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                bad(name, "a finite number", v)
        if self.temperature <= 0:
            bad("temperature", "> 0", self.temperature)
        if self.cfg_schedule not in CFG_SCHEDULES:
            bad("cfg_schedule", f"one of {', '.join(CFG_SCHEDULES)}", self.cfg_schedule)
        if self.top_k is not None and (isinstance(self.top_k, bool) or not isinstance(self.top_k, int)
                                       or self.top_k < 1):
            bad("top_k", "a positive integer or None", self.top_k)
        if self.top_p is not None and (not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1):
            bad("top_p", "in (0, 1] or None", self.top_p)
        gi = self.guidance_interval
        if (not isinstance(gi, tuple) or len(gi) != 2 or not all(isinstance(v, (int, float)) for v in gi)
                or not 0 <= gi[0] < gi[1] <= 1):
            bad("guidance_interval", "two numbers 0 <= lo < hi <= 1", gi)
        if self.temperature_schedule not in TEMPERATURE_SCHEDULES:
            bad("temperature_schedule", f"one of {', '.join(TEMPERATURE_SCHEDULES)}", self.temperature_schedule)
        if self.temperature_schedule == "anneal" and not (
                isinstance(self.temperature_end, (int, float)) and math.isfinite(self.temperature_end)
                and self.temperature_end > 0):
            bad("temperature_end", "a finite number > 0 with temperature_schedule='anneal'", self.temperature_end)
        if isinstance(self.refine_rounds, bool) or not isinstance(self.refine_rounds, int) or self.refine_rounds < 0:
            bad("refine_rounds", "an integer >= 0", self.refine_rounds)
        if not isinstance(self.refine_fraction, (int, float)) or not 0 < self.refine_fraction < 1:
            bad("refine_fraction", "in (0, 1)", self.refine_fraction)
        if self.token_draw not in TOKEN_DRAWS:
            bad("token_draw", f"one of {', '.join(TOKEN_DRAWS)}", self.token_draw)
        if not isinstance(self.order, str) or self.order not in ORDERS:
            bad("order", f"one of {', '.join(ORDERS)}", self.order)
        if self.attention not in ATTENTION_MODES:
            bad("attention", f"one of {', '.join(ATTENTION_MODES)}", self.attention)
        return self

    def temperature_at(self, decoded_before: int, total: int) -> float:
        """The temperature of a step: constant, or (``anneal``) linear from ``temperature`` at the first step
        towards ``temperature_end``, by the share of cells decoded before the step."""
        if self.temperature_schedule == "anneal":
            return self.temperature + (self.temperature_end - self.temperature) * decoded_before / total
        return self.temperature

    def guided_steps(self, counts: Sequence[int]) -> list[bool]:
        """Which steps (of these sizes) apply guidance: ``cfg_scale != 1`` and the share of cells decoded
        after the step in ``guidance_interval`` (lo, hi]."""
        total, done, out = sum(counts), 0, []
        lo, hi = self.guidance_interval
        for c in counts:
            done += c
            out.append(self.cfg_scale != 1.0 and lo < done / total <= hi + 1e-12)
        return out

    @property
    def decode_steps(self) -> int:
        """Steps actually taken: the explicit schedule's length when there is one."""
        return len(self.step_schedule) if isinstance(self.step_schedule, tuple) else self.steps


def parse_step_schedule(value: str | Sequence[int]) -> str | tuple[int, ...]:
    """A schedule name, or counts given as a list or as ``"8,16,40"``."""
    if isinstance(value, str):
        text = value.strip()
        if "," in text or text.isdigit():
            try:
                return tuple(int(x) for x in text.split(",") if x.strip())
            except ValueError:
                raise ARPGError(f"step_schedule: expected a name or comma-separated integers, got {value!r}") from None
        return text
    return tuple(int(c) for c in value)
