"""Persona service settings (`EDRS_PERSONA_*`)."""

from typing import ClassVar

from edrs_core import ServiceSettings
from pydantic_settings import SettingsConfigDict


class PersonaSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EDRS_PERSONA_")
    service_name: ClassVar[str] = "persona"
