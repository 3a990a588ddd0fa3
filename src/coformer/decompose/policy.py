"""A decomposition policy: which units of every block go to which device, and how often they sync.

Units are attention heads and FFN neurons (DESIGN section 2). Each unit of a block belongs to at
most one device; units in no device are dropped. A device may also keep only some of the hidden
channels (a narrower residual stream). The policy is plain data, saved as JSON.

One device has no one to synchronise with: its policy is a compressed single model with no merge
(sync 1, which the executor runs as the plain model, and the aggregator just applies the head),
whatever sync interval was asked for.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError, model_validator

from coformer.errors import PolicyError


class ModelShape(BaseModel):
    """The unit counts of the model a policy was made for."""

    num_layers: int = Field(gt=0)  # L blocks
    num_heads: int = Field(gt=0)  # H heads per block
    ffn_size: int = Field(gt=0)  # F neurons per block
    hidden_size: int = Field(gt=0)  # d residual channels


class DevicePolicy(BaseModel):
    name: str  # device name, as in the fleet
    heads: list[list[int]]  # per block, original indices of the heads this device runs
    neurons: list[list[int]]  # per block, original indices of the FFN neurons this device runs
    channels: list[int] | None = None  # original residual channels it keeps; None = all of them

    def unit_count(self) -> int:
        return sum(map(len, self.heads)) + sum(map(len, self.neurons))


class Policy(BaseModel):
    shape: ModelShape
    sync: int  # 0: independent streams aggregated once; 1: all-reduce every sub-layer; k: every k blocks
    devices: list[DevicePolicy]

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        s, L = self.shape, self.shape.num_layers
        if not self.devices:
            raise PolicyError("the policy has no device; give at least one")
        names = [d.name for d in self.devices]
        if len(set(names)) != len(names):
            raise PolicyError(f"device names must be unique, got {names}")
        if not 0 <= self.sync <= L:
            raise PolicyError(
                f"sync interval s={self.sync} is invalid: use 0 (aggregate once), 1 (every sub-layer) or 2..{L}"
            )
        for kind, size in (("heads", s.num_heads), ("neurons", s.ffn_size)):
            owner: list[dict[int, str]] = [{} for _ in range(L)]
            for d in self.devices:
                per_block = getattr(d, kind)
                if len(per_block) != L:
                    raise PolicyError(f"device '{d.name}' lists {kind} for {len(per_block)} blocks; the model has {L}")
                for b, units in enumerate(per_block):
                    _check_indices(units, size, f"{kind} of block {b} on device '{d.name}'")
                    for u in units:
                        if u in owner[b]:
                            raise PolicyError(
                                f"{kind[:-1]} {u} of block {b} is dealt to both '{owner[b][u]}' and '{d.name}'; "
                                "a unit may belong to one device only"
                            )
                        owner[b][u] = d.name
        for d in self.devices:
            if d.unit_count() == 0:
                raise PolicyError(f"device '{d.name}' holds no head and no neuron; give it units or leave it out")
            if d.channels is not None:
                _check_indices(d.channels, s.hidden_size, f"channels of device '{d.name}'")
                if not d.channels:
                    raise PolicyError(f"device '{d.name}' keeps no hidden channel; use null for all channels")
                if self.sync == 1 and len(d.channels) != s.hidden_size:
                    raise PolicyError(
                        f"device '{d.name}' narrows its residual stream, but sync=1 shares one full-width "
                        "stream; use sync 0 or >1, or keep all channels"
                    )
        if len(self.devices) == 1:
            self._single_model()
        return self

    def _single_model(self) -> None:
        """One device: no sync point, so no merge (see the module docstring); it keeps the full stream."""
        device = self.devices[0]
        if device.channels is not None and len(device.channels) != self.shape.hidden_size:
            raise PolicyError(
                f"device '{device.name}' is the only device but narrows its residual stream to {len(device.channels)} of "
                f"{self.shape.hidden_size} channels: with nothing to merge, the head needs the full stream; keep all "
                "channels (channels: null) or add a device"
            )
        self.sync = 1

    @property
    def single(self) -> bool:
        """A compressed single model (Single-Edge): one device, no merge."""
        return len(self.devices) == 1

    def channels_of(self, device: DevicePolicy) -> list[int]:
        return sorted(device.channels) if device.channels is not None else list(range(self.shape.hidden_size))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        try:
            return cls.model_validate(json.loads(Path(path).read_text()))
        except FileNotFoundError as e:
            raise PolicyError(f"no policy at {path}; run `coformer decompose` or the search stage first") from e
        except (json.JSONDecodeError, ValidationError) as e:
            raise PolicyError(f"{path} is not a valid policy: {e}") from e


def _check_indices(indices: list[int], size: int, what: str) -> None:
    bad = [i for i in indices if not 0 <= i < size]
    if bad:
        raise PolicyError(f"{what}: indices {bad[:5]} are out of range 0..{size - 1}")
    if len(set(indices)) != len(indices):
        raise PolicyError(f"{what}: an index is listed twice")
