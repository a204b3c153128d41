"""Leaving the console: ``q``, ``ctrl+c`` and ``ctrl+q`` quit at once, unless an edit would be
lost; then the console asks (``y`` quits, ``n`` stays). A screen that holds edits says which
(:meth:`tui.screens.base.ConsoleScreen.unsaved_changes`); the submit form is read here."""

from __future__ import annotations

from collections.abc import Iterable

from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Input, Select

from llmbatch.client.lanes import Lane
from shared.priority import DEFAULT_PRIORITY
from tui.screens.base import ConsoleScreen
from tui.screens.confirm import ConfirmScreen
from tui.screens.submit import SubmitScreen

#: The submit form's fields (inputs and choices) and what they hold before anyone touches them.
SUBMIT_FORM = {
    "#submit-path": "",
    "#submit-endpoint": "default",
    "#submit-name": "",
    "#submit-priority": DEFAULT_PRIORITY.value,
    "#submit-lane": Lane.ONLINE.value,
    "#submit-within": "",
}

FormValues = tuple[str, ...]


class QuitConfirmScreen(ConfirmScreen):
    """The question before quitting with unsaved edits."""

    def __init__(self, lost: list[str]) -> None:
        super().__init__(
            "Quit llmbatch?",
            "Quitting now loses: " + "; ".join(lost) + ".",
            confirm_label="Quit",
        )


def submit_form(screen: SubmitScreen) -> FormValues | None:
    """The submit form's values (None before it is built)."""
    try:
        fields = [screen.query_one(selector) for selector in SUBMIT_FORM]
    except NoMatches:
        return None
    return tuple(str(f.value).strip() if isinstance(f, Input | Select) else "" for f in fields)


def unsaved_changes(screens: Iterable[Screen[object]], submitted: FormValues | None) -> list[str]:
    """What quitting would lose on any open screen. The submit form counts when it holds
    something other than its defaults and other than what was last submitted from it
    (``submitted``)."""
    lost: list[str] = []
    for screen in screens:
        if isinstance(screen, ConsoleScreen):
            lost += screen.unsaved_changes()
        if isinstance(screen, SubmitScreen):
            values = submit_form(screen)
            if values is not None and values not in (tuple(SUBMIT_FORM.values()), submitted):
                lost.append("the submit screen's form, filled in but not submitted")
    return lost
