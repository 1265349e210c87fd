"""Settings: one object from the environment, errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.errors import ConfigError
from services.common.settings import ENVIRONMENT, VARIABLES, Secret, Settings, Variable


class TestFromEnv:
    def test_defaults_match_the_contract(self) -> None:
        """An empty environment gives the documented defaults."""
        settings = Settings.from_env({})
        assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
        assert settings.kafka.topics.callbacks == "suno.midi.callbacks.v1"
        assert settings.kafka.topics.notes == "suno.midi.notes.v1"
        assert settings.kafka.topics.dlq == "suno.midi.dlq.v1"
        assert settings.storage.data_dir == Path("./data")
        assert settings.ingest.port == 8080
        assert settings.ingest.max_body_bytes == 8 * 1024 * 1024
        assert settings.ingest.webhook_secrets == ()

    def test_reads_every_documented_variable(self) -> None:
        """Values from the environment land in the right fields."""
        settings = Settings.from_env(
            {
                "KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
                "DATA_DIR": "/srv/data",
                "INGEST_PORT": "9000",
                "SUNO_WEBHOOK_SECRETS": "new-key, old-key ,",
                "REDIS_URL": "redis://:pw@redis:6379/0",
                "STORAGE_BACKEND": "s3",
                "S3_BUCKET": "midi",
                "LOG_LEVEL": "debug",
            }
        )
        assert settings.kafka.bootstrap_servers == "k1:9092,k2:9092"
        assert settings.storage.data_dir == Path("/srv/data")
        assert settings.ingest.port == 9000
        assert [s.get() for s in settings.ingest.webhook_secrets] == ["new-key", "old-key"]
        assert settings.ingest.redis_url == Secret("redis://:pw@redis:6379/0")
        assert settings.storage.backend == "s3"
        assert settings.log.level == "DEBUG"

    @pytest.mark.parametrize(
        ("env", "message"),
        [
            ({"INGEST_PORT": "eighty"}, "INGEST_PORT must be a whole number"),
            ({"KAFKA_TOPIC_PARTITIONS": "0"}, "KAFKA_TOPIC_PARTITIONS must be at least 1"),
            ({"STORAGE_BACKEND": "ftp"}, "STORAGE_BACKEND must be one of local, s3"),
            ({"KAFKA_CREATE_TOPICS": "maybe"}, "KAFKA_CREATE_TOPICS must be true or false"),
            ({"STORAGE_BACKEND": "s3"}, "needs S3_BUCKET"),
            ({"INGEST_PUBLISH_TIMEOUT_SECONDS": "15"}, "well below the sender's 15 s"),
            ({"INGEST_BODY_TIMEOUT_SECONDS": "0"}, "INGEST_BODY_TIMEOUT_SECONDS must be above 0"),
            (
                {"INGEST_BODY_TIMEOUT_SECONDS": "9", "INGEST_PUBLISH_TIMEOUT_SECONDS": "6"},
                "must stay below the sender's 15 s",
            ),
            (
                {"INGEST_MAX_BODY_BYTES": str(32 * 1024 * 1024)},
                "every accepted callback fits in one Kafka record",
            ),
            (
                {"INGEST_MAX_BUFFERED_BYTES": str(16 * 1024 * 1024)},
                "INGEST_MAX_BUFFERED_BYTES .* must be at least 4 x INGEST_MAX_BODY_BYTES",
            ),
        ],
    )
    def test_bad_values_name_the_variable(self, env: dict[str, str], message: str) -> None:
        """A bad value is a ConfigError that says which variable and what it expects."""
        with pytest.raises(ConfigError, match=message):
            Settings.from_env(env)

    def test_environment_table_lists_every_variable_read(self) -> None:
        """Every variable from_env reads is documented in ENVIRONMENT, and no more."""
        read: list[str] = []

        class Recorder(dict[str, str]):
            def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
                read.append(key)
                return default

        Settings.from_env(Recorder())
        assert sorted(read) == sorted(name for name, _, _ in ENVIRONMENT)


class TestDeclarations:
    def test_an_empty_environment_gives_the_field_defaults(self) -> None:
        """from_env and the dataclasses take their defaults from the same declaration."""
        assert Settings.from_env({}) == Settings()

    @pytest.mark.parametrize("variable", VARIABLES, ids=lambda variable: variable.name)
    def test_the_documented_default_reads_back_as_the_default(self, variable: Variable) -> None:
        """Setting a variable to the README's default changes nothing."""
        env = {variable.name: variable.default_text}
        assert Settings.from_env(env) == Settings.from_env({})

    @pytest.mark.parametrize(
        "variable",
        [variable for variable in VARIABLES if variable.minimum is not None],
        ids=lambda variable: variable.name,
    )
    def test_every_minimum_is_enforced(self, variable: Variable) -> None:
        """A value below a declared minimum names the variable and the minimum."""
        assert variable.minimum is not None
        with pytest.raises(ConfigError, match=f"{variable.name} must be at least"):
            Settings.from_env({variable.name: str(variable.minimum - 1)})

    @pytest.mark.parametrize(
        "variable",
        [variable for variable in VARIABLES if variable.choices],
        ids=lambda variable: variable.name,
    )
    def test_every_choice_is_enforced(self, variable: Variable) -> None:
        """A value outside a declared set names the variable and lists the set."""
        listed = ", ".join(variable.choices)
        with pytest.raises(ConfigError, match=f"{variable.name} must be one of {listed}"):
            Settings.from_env({variable.name: "bogus"})

    def test_secrets_are_the_variables_typed_secret(self) -> None:
        """The README marks exactly the variables whose fields hold a Secret."""
        secret = {variable.name for variable in VARIABLES if variable.secret}
        assert secret == {
            "SUNO_WEBHOOK_SECRETS",
            "REDIS_URL",
            "KAFKA_SASL_PASSWORD",
            "DATABASE_URL",
            "SUNO_API_KEY",
            "TRACKER_API_TOKENS",
            "CONSOLE_OPERATOR_TOKENS",
            "CONSOLE_OPERATOR_CREDENTIALS",
        }


class TestSecret:
    def test_never_printed(self) -> None:
        """repr and str of settings never show a secret."""
        settings = Settings.from_env({"SUNO_WEBHOOK_SECRETS": "hunter2-key"})
        assert "hunter2-key" not in repr(settings)
        assert "hunter2-key" not in str(settings.ingest.webhook_secrets[0])
        assert settings.ingest.webhook_secrets[0].get() == "hunter2-key"
