"""shipyard.toml → typed, validated models; errors name the file, line and key path."""

from shipyard.config.loader import CONFIG_FILE, load_config, parse_config
from shipyard.config.models import (
    Component,
    Config,
    Environment,
    HealthCheck,
    Migrations,
    Project,
    PythonEnv,
    SecretRule,
    SecretsSource,
)

__all__ = [
    "CONFIG_FILE",
    "Component",
    "Config",
    "Environment",
    "HealthCheck",
    "Migrations",
    "Project",
    "PythonEnv",
    "SecretRule",
    "SecretsSource",
    "load_config",
    "parse_config",
]
