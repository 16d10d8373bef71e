"""Which alerts a student can choose per watch, their defaults, and the change each one answers to."""

from __future__ import annotations

from typing import Literal, get_args

from shared.events import ChangeKind

AlertKind = Literal["seat_opened", "instructor_changed", "closed_again", "waitlist_opened"]
ALERT_KINDS: tuple[AlertKind, ...] = get_args(AlertKind)

# A new watch's choices (also the column default of `watch.alerts`, migration 0003).
DEFAULT_ALERTS: dict[str, bool] = {
    "seat_opened": True,
    "instructor_changed": True,
    # "The seat you were told about is gone": only to watchers told about the opening it ends.
    "closed_again": False,
    "waitlist_opened": False,
}

# The change that triggers each alert. A cancelled or vanished section is always told (once), whatever the
# choices: it ends the watch.
ALERT_OF_CHANGE: dict[ChangeKind, AlertKind] = {
    "seat_opened": "seat_opened",
    "instructor_changed": "instructor_changed",
    "seat_filled": "closed_again",
    "waitlist_opened": "waitlist_opened",
}
ALWAYS_TOLD: frozenset[ChangeKind] = frozenset({"section_cancelled", "section_gone"})


def wants(alerts: dict[str, bool], kind: ChangeKind) -> bool:
    """Whether a watch with these choices is emailed about a change of this kind."""
    if kind in ALWAYS_TOLD:
        return True
    alert = ALERT_OF_CHANGE.get(kind)
    return alert is not None and alerts.get(alert, DEFAULT_ALERTS[alert])
