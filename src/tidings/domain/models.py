"""How a `Repository` drives each style: aggregate classes and deciders behind one interface.

A model knows how to make a blank instance, fold one event into it, and encode it for a
snapshot. Both styles' instances carry ``id``, ``version`` and ``pending`` (`Loaded`), so the
repository handles streams, versions, snapshots and retries once for both.
"""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar, cast

import msgspec

from tidings.domain.aggregate import Aggregate
from tidings.domain.decider import Decider, Versioned

__all__ = ["AggregateModel", "DeciderModel", "Loaded", "Model", "model_of"]

A = TypeVar("A", bound=Aggregate)
S = TypeVar("S")
T = TypeVar("T", bound="Loaded")

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(dict[str, object])


class Loaded(Protocol):
    """What a repository loads and saves: an aggregate or a `Versioned` decider state."""

    id: str
    version: int
    pending: list[object]


class Model(Protocol[T]):
    """One style's operations on its loaded instances."""

    stream_prefix: str
    snapshot_version: int

    def blank(self, id: str) -> T:
        """Return the instance of a stream with no events."""
        ...

    def evolve(self, target: T, payload: object, version: int) -> None:
        """Fold one stored event into ``target``, which is then at ``version``."""
        ...

    def subjects(self, target: T) -> set[str]:
        """Return the (mutable) set of data subjects whose personal data ``target`` holds."""
        ...

    def encode(self, target: T) -> bytes:
        """Return the snapshot state of ``target``."""
        ...

    def decode(self, id: str, version: int, state: bytes) -> T:
        """Return the instance a snapshot state describes."""
        ...


class AggregateModel(Generic[A]):
    """`Aggregate` subclasses: handlers mutate the instance."""

    def __init__(self, cls: type[A]) -> None:
        self.cls = cls
        self.stream_prefix = cls.stream_prefix
        self.snapshot_version = cls.snapshot_version

    def blank(self, id: str) -> A:
        return self.cls(id)

    def evolve(self, target: A, payload: object, version: int) -> None:
        target.apply(payload)
        target.version = version

    def subjects(self, target: A) -> set[str]:
        return target._subjects

    def encode(self, target: A) -> bytes:
        return _encoder.encode(target.to_snapshot())

    def decode(self, id: str, version: int, state: bytes) -> A:
        return self.cls.from_snapshot(id, version, _decoder.decode(state))


class DeciderModel(Generic[S]):
    """Deciders: ``evolve`` returns a new state, kept in a `Versioned`."""

    def __init__(self, decider: Decider[Any, S, Any]) -> None:
        self.decider = decider
        self.stream_prefix = decider.stream_prefix
        self.snapshot_version = decider.snapshot_version
        state_type = decider.state_type or type(decider.initial_state)
        self._state_decoder = msgspec.json.Decoder(cast(type[S], state_type))

    def blank(self, id: str) -> Versioned[S]:
        return Versioned(id, self.decider.initial_state)

    def evolve(self, target: Versioned[S], payload: object, version: int) -> None:
        target.state = self.decider.evolve(target.state, payload)
        target.version = version

    def decide(self, target: Versioned[S], command: object) -> list[object]:
        """Decide ``command`` on ``target``; fold the new events in and keep them pending."""
        events = list(self.decider.decide(command, target.state))
        for event in events:
            self.evolve(target, event, target.version + 1)
        target.pending.extend(events)
        return events

    def subjects(self, target: Versioned[S]) -> set[str]:
        return target.subjects

    def encode(self, target: Versioned[S]) -> bytes:
        return _encoder.encode(target.state)

    def decode(self, id: str, version: int, state: bytes) -> Versioned[S]:
        return Versioned(id, self._state_decoder.decode(state), version)


def model_of(model: type[Aggregate] | Decider[Any, Any, Any]) -> Model[Any]:
    """Return the model for an `Aggregate` subclass or a `Decider`."""
    if isinstance(model, Decider):
        return DeciderModel(model)
    if isinstance(model, type) and issubclass(model, Aggregate):
        return AggregateModel(model)
    raise TypeError(f"expected an Aggregate subclass or a Decider, got {model!r}")
