"""The write side of event sourcing: aggregates and deciders, the repository, snapshots,
temporal loads, and crypto-shredding of personal data.

Two styles, one repository:

- `Aggregate` subclasses: command methods check invariants and `Aggregate.record` events;
  ``@when(PayloadType)`` handlers evolve the state.
- `Decider`: pure ``decide(command, state) -> events`` and ``evolve(state, event) -> state``
  functions and an ``initial_state``, tested with ``decider.given(...).when(...).then(...)``.

`Repository` loads either from its stream (starting from the latest `Snapshot` when a
`SnapshotStore` is given), saves new events with optimistic concurrency, retries commands on
conflicts, and loads past states (``as_of``). Payload upcasting lives in `tidings.codecs`.
`Shredder` encrypts fields marked `Personal` per data subject; forgetting the subject deletes
its key, and the fields then read as `Erased`. See docs/domain.md.
"""

from tidings.domain.aggregate import Aggregate, when
from tidings.domain.decider import Decider, Decision, Scenario, Versioned
from tidings.domain.keys import KeyStore
from tidings.domain.personal import Erased, Personal, SubjectId
from tidings.domain.repository import Repository
from tidings.domain.shredding import SUBJECT_FORGOTTEN, Shredder
from tidings.domain.snapshots import (
    EveryNEvents,
    Snapshot,
    SnapshotCheck,
    SnapshotPolicy,
    SnapshotStore,
    SnapshotWhen,
)
from tidings.errors import DomainError, UnhandledEventError

__all__ = [
    "SUBJECT_FORGOTTEN",
    "Aggregate",
    "Decider",
    "Decision",
    "DomainError",
    "Erased",
    "EveryNEvents",
    "KeyStore",
    "Personal",
    "Repository",
    "Scenario",
    "Shredder",
    "Snapshot",
    "SnapshotCheck",
    "SnapshotPolicy",
    "SnapshotStore",
    "SnapshotWhen",
    "SubjectId",
    "UnhandledEventError",
    "Versioned",
    "when",
]
