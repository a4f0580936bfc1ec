"""Map Realtime event types to the openai SDK's typed models, to validate our events."""

from __future__ import annotations

from typing import Any, get_args

from openai.types.beta.realtime import RealtimeServerEvent as BetaServerEvent
from openai.types.realtime import RealtimeServerEvent as GAServerEvent
from pydantic import BaseModel


def _classes(union: Any) -> dict[str, type[BaseModel]]:
    inner = get_args(union)[0]  # Annotated[Union[...], PropertyInfo] -> Union[...]
    out = {}
    for cls in get_args(inner):
        (literal,) = get_args(cls.model_fields["type"].annotation)
        out[literal] = cls
    return out


GA_EVENTS = _classes(GAServerEvent)
BETA_EVENTS = _classes(BetaServerEvent)


def validate(event: dict, beta: bool = False) -> BaseModel:
    """Validate a server event (dict) against the SDK model for its type."""
    classes = BETA_EVENTS if beta else GA_EVENTS
    assert event["type"] in classes, f"{event['type']} is not a {'beta' if beta else 'GA'} event"
    return classes[event["type"]].model_validate(event)
