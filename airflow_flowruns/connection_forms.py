"""What each platform's connection form in the Airflow UI shows, described once per connection type.

Airflow 3.2+ reads the form from the provider info (``conn-fields``, ``ui-field-behaviour``) without
importing the hook; older UIs call the hook's ``get_connection_form_widgets`` and ``get_ui_field_behaviour``.
Both are built here from the same ``ConnectionForm``, so the two can never show different fields.

Each extra field carries its real default as the field's value: Airflow 3.3's form fills it in (it shows
no placeholders for extra fields), so a new connection starts from what the code would apply anyway.
Airflow calls ``get_provider_info`` while it is still importing itself, so this module imports nothing
from Airflow or from the rest of the package: the defaults are written here, and a test checks them
against the code that applies them (``HttpOptions``, the platform classes). Each platform's own fields are
in its folder's facts (``platforms/<name>/__init__.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

FieldType = Literal["string", "integer", "number", "boolean"]
Default = str | int | float | bool
StandardField = Literal["description", "host", "port", "login", "password", "schema", "extra"]


@dataclass(frozen=True)
class ExtraField:
    """One key of the connection's extra JSON, shown as its own input."""

    name: str
    label: str
    type: FieldType
    description: str
    default: Default | None = None

    def schema(self) -> dict[str, Any]:
        """The field's JSON schema in ``conn-fields``: its type (empty allowed) and, where it has one, its default."""
        return {"type": [self.type, "null"], **({"default": self.default} if self.default is not None else {})}


@dataclass(frozen=True)
class ConnectionForm:
    label: str
    hidden: tuple[StandardField, ...]
    relabeling: Mapping[str, str]
    placeholders: Mapping[str, str]
    extras: tuple[ExtraField, ...]

    def provider_info(self) -> dict[str, Any]:
        """The ``conn-fields`` and ``ui-field-behaviour`` of this connection type's provider-info entry."""
        return {
            "conn-fields": {
                f.name: {"label": f.label, "description": f.description, "schema": f.schema()} for f in self.extras
            },
            "ui-field-behaviour": {
                "hidden-fields": list(self.hidden),
                "relabeling": dict(self.relabeling),
                "placeholders": dict(self.placeholders),
            },
        }

    def ui_field_behaviour(self) -> dict[str, Any]:
        return {
            "hidden_fields": list(self.hidden),
            "relabeling": dict(self.relabeling),
            "placeholders": dict(self.placeholders),
        }

    def form_widgets(self) -> dict[str, Any]:
        """WTForms fields for UIs before Airflow 3.2; those UIs supply (or mock) these imports themselves."""
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import BooleanField, IntegerField, StringField
        from wtforms.validators import Optional

        classes = {"integer": IntegerField, "boolean": BooleanField}
        return {
            f.name: classes.get(f.type, StringField)(
                lazy_gettext(f.label),
                widget=None if f.type == "boolean" else BS3TextFieldWidget(),
                validators=[Optional()],
                description=f.description,
                # WTForms has no float field: a number is typed as text, so its default is text too.
                default=str(f.default) if f.type == "number" and f.default is not None else f.default,
            )
            for f in self.extras
        }


_CLIENT_FIELDS: tuple[ExtraField, ...] = (
    ExtraField("timeout", "Request timeout (seconds)", "number", "How long one HTTP request may take. Default 30.", 30),
    ExtraField(
        "max_retries",
        "Max retries",
        "integer",
        "Retries of a request after a connection error, 429 or 5xx, with exponential backoff that honours "
        "Retry-After. Default 5.",
        5,
    ),
    ExtraField(
        "verify",
        "Verify TLS",
        "boolean",
        "Check the API's TLS certificate (default on). To trust a private CA, put the path of its bundle "
        "file as verify in the Extra JSON instead.",
        True,
    ),
    ExtraField(
        "max_concurrent_requests",
        "Max concurrent requests",
        "integer",
        "Requests in flight at once on this connection in one triggerer (and TCP connections it keeps). Default 32.",
        32,
    ),
    ExtraField(
        "max_requests_per_second",
        "Max requests per second",
        "number",
        "Client-side rate limit per process (worker or triggerer) on this connection; set it to the plan's "
        "limit, e.g. 5 on Extend's smallest plan. Empty: no limit.",
    ),
)
"""The HTTP client settings every platform's connection takes (read by ``HttpOptions.from_extras``)."""


def run_url_template_field(default: str) -> ExtraField:
    return ExtraField(
        "run_url_template",
        "Run URL template",
        "string",
        "Link of the 'Open flow run' button and the run's url, with {base_url}, {run_id} and {flow_id}.",
        default,
    )


API_KEY_HOST: dict[str, str] = {"host": "API base URL (optional)", "password": "API key"}
_STANDARD: tuple[StandardField, ...] = ("host", "schema", "port", "login", "password")


def platform_form(
    label: str, base_url: str, relabeling: Mapping[str, str], extras: tuple[ExtraField, ...]
) -> ConnectionForm:
    """A platform's form: a standard field left out of ``relabeling`` is hidden; the client settings every
    connection takes follow the platform's own extras."""
    return ConnectionForm(
        label=label,
        hidden=tuple(name for name in _STANDARD if name not in relabeling),
        relabeling=relabeling,
        placeholders={"host": base_url, "password": f"{label} API key"},
        extras=(*extras, *_CLIENT_FIELDS),
    )


def form_of(conn_type: str) -> ConnectionForm:
    """The form of a registered platform's connection type (the registry is read when asked, not imported)."""
    from airflow_flowruns.platforms import facts_of

    return facts_of(conn_type).form


H = TypeVar("H", bound=type)


def has_connection_form(hook: H) -> H:
    """Class decorator for a per-platform hook: the UI form methods of UIs before Airflow 3.2.

    Airflow reads these only from the hook class's own ``__dict__``, never inherited, so each platform
    hook gets its own pair, built from the form of its ``conn_type``.
    """
    builders: dict[str, Callable[[ConnectionForm], dict[str, Any]]] = {
        "get_connection_form_widgets": ConnectionForm.form_widgets,
        "get_ui_field_behaviour": ConnectionForm.ui_field_behaviour,
    }
    for name, build in builders.items():
        setattr(hook, name, classmethod(lambda cls, build=build: build(form_of(cls.conn_type))))
    return hook


__all__ = [
    "API_KEY_HOST",
    "ConnectionForm",
    "ExtraField",
    "form_of",
    "has_connection_form",
    "platform_form",
    "run_url_template_field",
]
