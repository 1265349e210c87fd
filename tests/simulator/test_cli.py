"""``suno-provider-sim``'s flags become the same configuration a test builds by hand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devenv.simulator import CallbackPlan, Faults, Script, SimConfig, SimConfigError
from devenv.simulator.__main__ import parse_args


class TestParseArgs:
    def test_defaults_are_the_providers(self) -> None:
        """No flag: 20 requests per 10 s, 15 s and 3 attempts per callback, errors mirrored."""
        config, host, port = parse_args([])
        assert config == SimConfig()
        assert (config.rate_limit_requests, config.rate_limit_window_seconds) == (20, 10.0)
        assert (config.callback_timeout_seconds, config.callback_attempts) == (15.0, 3)
        assert (host, port) == ("127.0.0.1", 8090)

    def test_flags(self, tmp_path: Path) -> None:
        key_file = tmp_path / "key"
        key_file.write_text("file-key\n")
        config, _, port = parse_args(
            [
                "--port", "9001", "--seed", "7", "--webhook-key-file", str(key_file),
                "--any-api-key", "--error-status", "ok", "--realistic",
                "--drop-ratio", "0.25", "--api-fault", "429=0.1", "--api-fault", "455=0.05",
                "--script", "src-1=success,drop", "--script", "src-2=failure,delay:5,data",
                "--script", "src-3=empty",
            ]
        )  # fmt: skip
        assert port == 9001 and config.seed == 7 and config.webhook_key == b"file-key"
        assert config.api_key is None and config.error_status == "ok" and config.realistic
        assert config.faults == Faults(drop=0.25, api={429: 0.1, 455: 0.05})
        assert dict(config.scripts) == {
            "src-1": Script("success", CallbackPlan("drop")),
            "src-2": Script("failure", CallbackPlan("delay", 5.0), "data"),
            "src-3": Script("empty"),
        }

    @pytest.mark.parametrize(
        ("flags", "message"),
        [
            (["--script", "src"], "NAME=VALUE"),
            (["--script", "src=maybe"], "outcome"),
            (["--script", "src=success,later"], "callback plan"),
            (["--script", "src=success,drop,data,more"], "more than"),
            (["--api-fault", "404=0.1"], "404"),
            (["--api-fault", "429=lots"], "CODE=RATIO"),
            (["--duplicate-ratio", "1.5"], "ratio"),
        ],
    )
    def test_bad_flags(self, flags: list[str], message: str) -> None:
        with pytest.raises(SimConfigError, match=message):
            parse_args(flags)

    def test_the_script_says_what_is_wrong_in_one_line(self) -> None:
        """A bad flag: exit 1 with one line naming the program and the flag, no traceback."""
        script = Path(sys.executable).parent / "suno-provider-sim"
        result = subprocess.run(
            [script, "--script", "src=maybe"], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 1
        assert result.stderr.strip() == (
            "suno-provider-sim: outcome 'maybe' is not one of success, empty, failure"
        )
