"""The email templates (`services/notifier/templates/`), loaded once with Jinja2.

HTML templates (`*.html`) are autoescaped: every value from a section, a student or the catalog is
escaped where it lands, whatever its characters. Text templates (`*.txt`) and the wording of each kind of
email (`*.j2`: subject and sentences, shared by the text and the HTML part) are not, since a plain-text
mail client would show entities literally; their values reach HTML only through an escaping template.
Undefined names fail the render instead of printing nothing, so a typo cannot send a blank email.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

TEMPLATES = Path(__file__).parent / "templates"


@cache
def environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=True, default=False),
        undefined=StrictUndefined,
        # Text layouts are written line by line: a tag alone on its line leaves no blank line behind.
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(name: str, **values: Any) -> str:
    return environment().get_template(name).render(**values)


def wording(name: str, **values: Any) -> dict[str, str]:
    """The top-level `{% set %}` values of a wording template (`subject`, `headline`, ...), as text."""
    module = environment().get_template(name).make_module(values)
    return {key: str(getattr(module, key)) for key in dir(module) if not key.startswith("_")}
