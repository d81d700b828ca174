"""Settings: the example loads, the environment and secret files override, mistakes are named."""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr

from gateway.config import (
    MAX_CONFIG_BYTES,
    ConfigError,
    ConfigProblem,
    Settings,
    describe,
    load_settings,
)
from tests.conftest import EXAMPLE

SECRET = "s3cr3t-hunter2-never-shown-anywhere"  # 35 characters: long enough for the HMAC key

MINIMAL = """
[gateway]
lot_id = "test-lot"
gateway_id = "gw-1"
timezone = "Europe/Berlin"
default_tariff = "standard"

[tariffs.standard]
currency = "EUR"
lines = [{ flat_minor = 100 }]
"""


def lane(
    index: int,
    pins: tuple[int, int, int],
    url: str = "rtsp://10.0.0.1/stream",
    camera_password: str | None = None,
) -> str:
    arming, safety, relay = pins
    password = "" if camera_password is None else f', password = "{camera_password}"'
    return f"""
[[lanes]]
id = "lane-{index}"
direction = "entry"
name = "Lane {index}"
camera = {{ url = "{url}"{password} }}
gpio = {{ arming_loop = {arming}, safety_loop = {safety}, open_relay = {relay} }}
"""


def bay(bay_id: str, sensor: str) -> str:
    return f"""
[[bays]]
id = "{bay_id}"
floor = "0"
zone = "A"
sensor = {sensor}
"""


def write(tmp_path: Path, text: str, name: str = "gateway.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Settings:
    return load_settings(write(tmp_path, text), env={} if env is None else env)


def revealed(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """Every problem of a config, message by dotted path."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env)
    return {problem.path: problem.message for problem in info.value.problems}


# --- the example -----------------------------------------------------------------------------


def test_the_example_describes_a_small_lot() -> None:
    settings = load_settings(EXAMPLE, env={})

    assert settings.gateway.lot_id == "riverside-garage"
    assert settings.gateway.tzinfo == ZoneInfo("Europe/Berlin")
    assert [lane.direction for lane in settings.lanes] == ["entry", "entry", "exit"]
    assert settings.lanes[1].barrier.drive == "level"
    assert settings.lanes[2].barrier.pulse_ms == 500  # left out: the default
    assert settings.bays[0].sensor.kind == "ultrasonic"
    assert settings.tariffs["standard"].currency == "EUR"
    assert settings.journal.path == Path("/var/lib/parking-gateway/journal.db")
    assert settings.sync.mqtt.tls is not None

    summary = describe(settings)
    assert summary["lanes"]["by_direction"] == {"entry": 2, "exit": 1}
    assert summary["bays"]["total"] == 12
    assert summary["bays"]["by_floor"] == {"0": 6, "1": 6}
    assert set(summary["bays"]["by_type"]) == {"regular", "disabled", "ev", "vip", "reserved"}
    assert set(summary["bays"]["by_sensor"]) == {"modbus", "ultrasonic", "none"}
    assert summary["tariffs"] == {"names": ["staff", "standard"], "default": "standard"}
    assert summary["sync"]["mqtt"] == {
        "broker": "mqtt.operator.example:8883",
        "tls": True,
        "username": "riverside-garage-gw-1",
        "password_set": False,
    }


def test_a_minimal_config_takes_the_documented_defaults(tmp_path: Path) -> None:
    settings = load(tmp_path, MINIMAL)

    assert (settings.lanes, settings.bays) == ((), ())
    journal = settings.journal
    assert journal.path == Path("/var/lib/parking-gateway/journal.db")
    assert (journal.group_commit_ms, journal.max_batch, journal.retention_days) == (2.0, 512, 30)
    assert (journal.max_size_mb, journal.maintenance_interval_s) == (512, 60.0)
    assert journal.startup_check == "quick"
    mqtt = settings.sync.mqtt
    assert (mqtt.host, mqtt.port, mqtt.tls, mqtt.password) == ("localhost", 1883, None, None)
    assert settings.sync.command_hmac_key is None
    assert (settings.logging.level, settings.logging.format) == ("info", "auto")


# --- the environment -------------------------------------------------------------------------


def test_environment_overrides_nested_keys_and_wins_over_the_file(tmp_path: Path) -> None:
    text = MINIMAL + "\n[journal]\nretention_days = 90\nmax_size_mb = 64\n"
    env = {
        "PARKING_GATEWAY__JOURNAL__RETENTION_DAYS": "7",
        "PARKING_GATEWAY__SYNC__MQTT__HOST": "broker.test",
        "PARKING_GATEWAY__SYNC__MQTT__PORT": "8883",
        "PARKING_GATEWAY__SYNC__MQTT__USERNAME": "gw",
        "PARKING_GATEWAY__SYNC__MQTT__PASSWORD": SECRET,
        "PARKING_GATEWAY__LOGGING__LEVEL": "DEBUG",
        "UNRELATED": "ignored",
    }
    settings = load(tmp_path, text, env)

    assert settings.journal.retention_days == 7
    assert settings.journal.max_size_mb == 64  # the file's, not overridden
    assert (settings.sync.mqtt.host, settings.sync.mqtt.port) == ("broker.test", 8883)
    assert revealed(settings.sync.mqtt.password) == SECRET
    assert settings.logging.level == "debug"


def test_no_env_argument_means_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARKING_GATEWAY__JOURNAL__MAX_BATCH", "64")
    assert load_settings(write(tmp_path, MINIMAL)).journal.max_batch == 64


def test_unknown_environment_variables_are_errors_named_as_such(tmp_path: Path) -> None:
    env = {"PARKING_GATEWAY__JOURNEL__PATH": "/tmp/j.db", "PARKING_GATEWAY__JOURNAL__SIZE": "9"}
    found = problems(tmp_path, MINIMAL + "\n[journal]\ncolour = 'red'\n", env)

    # The technician looks for the variable in the unit's environment, not for a key in the file.
    assert found == {
        "PARKING_GATEWAY__JOURNEL__PATH":
            "unknown environment variable: there is no setting journel.path",
        "PARKING_GATEWAY__JOURNAL__SIZE":
            "unknown environment variable: there is no setting journal.size",
        "journal.colour": "unknown key (check its spelling and its section)",
    }


def test_numbers_from_the_environment_are_text_and_still_parse(tmp_path: Path) -> None:
    env = {"PARKING_GATEWAY__GPIO__LOT_FULL_LAMP": "7", "PARKING_GATEWAY__LPR__ENABLED": "false",
           "PARKING_GATEWAY__JOURNAL__GROUP_COMMIT_MS": "2.5",
           "PARKING_GATEWAY__LOT__MAX_STAY_MINUTES": '{"ev": 120}',
           "PARKING_GATEWAY__TARIFFS__STANDARD__GRACE_MINUTES": "10"}
    settings = load(tmp_path, MINIMAL, env)

    assert (settings.gpio.lot_full_lamp, settings.lpr.enabled) == (7, False)
    assert settings.journal.group_commit_ms == 2.5
    assert settings.lot.max_stay_minutes == {"ev": 120}
    assert settings.tariffs["standard"].grace_minutes == 10


def test_a_table_from_the_environment_must_be_json(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL, {"PARKING_GATEWAY__SYNC__MQTT": "host=broker"})
    assert "not JSON" in found["PARKING_GATEWAY__SYNC"]


# --- secrets ---------------------------------------------------------------------------------


def test_secrets_are_read_from_files_without_the_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "mqtt").write_text(SECRET + "\n")
    (tmp_path / "token").write_text("token-value\r\n")
    (tmp_path / "hmac").write_text(SECRET)
    text = (
        MINIMAL
        + f"""
[sync]
command_hmac_key_file = "{tmp_path / "hmac"}"
[sync.mqtt]
username = "gw"
password_file = "{tmp_path / "mqtt"}"
[sync.http]
base_url = "https://backend.test/api"
token_file = "{tmp_path / "token"}"
"""
    )
    settings = load(tmp_path, text)
    sync = settings.sync

    assert revealed(sync.mqtt.password) == SECRET
    assert revealed(sync.http.token) == "token-value"
    assert revealed(sync.command_hmac_key) == SECRET


def test_a_secret_file_may_be_named_in_the_environment(tmp_path: Path) -> None:
    (tmp_path / "mqtt").write_text(SECRET + "\n")
    env = {
        "PARKING_GATEWAY__SYNC__MQTT__USERNAME": "gw",
        "PARKING_GATEWAY__SYNC__MQTT__PASSWORD_FILE": str(tmp_path / "mqtt"),
    }
    assert revealed(load(tmp_path, MINIMAL, env).sync.mqtt.password) == SECRET


def test_a_secret_and_its_file_together_or_an_unreadable_file_are_errors(tmp_path: Path) -> None:
    (tmp_path / "mqtt").write_text("from-file")
    text = (
        MINIMAL
        + f"""
[sync]
command_hmac_key_file = "{tmp_path / "missing"}"
[sync.mqtt]
username = "gw"
password = "{SECRET}"
password_file = "{tmp_path / "mqtt"}"
"""
    )
    found = problems(tmp_path, text)

    assert found["sync.mqtt.password_file"] == "set either password or password_file, not both"
    assert found["sync.command_hmac_key_file"] == (
        f"cannot read {tmp_path / 'missing'}: No such file or directory"
    )


def test_secrets_come_from_systemd_credentials_below_the_environment(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "PARKING_GATEWAY__SYNC__COMMAND_HMAC_KEY").write_text(SECRET + "\n")
    (credentials / "PARKING_GATEWAY__SYNC__MQTT__HOST").write_text("from-credential")
    (credentials / "some-other-credential").write_text("not ours")
    env = {
        "CREDENTIALS_DIRECTORY": str(credentials),
        "PARKING_GATEWAY__SYNC__MQTT__HOST": "from-environment",
    }
    settings = load(tmp_path, MINIMAL, env)

    assert revealed(settings.sync.command_hmac_key) == SECRET
    assert settings.sync.mqtt.host == "from-environment"


def with_every_secret(hmac_key: str = SECRET, mqtt_extra: str = "", http_extra: str = "") -> str:
    return (
        MINIMAL
        + lane(0, (5, 6, 17), camera_password=SECRET)
        + f"""
[sync]
command_hmac_key = "{hmac_key}"
[sync.mqtt]
username = "gw"
password = "{SECRET}"
{mqtt_extra}
[sync.http]
token = "{SECRET}"
{http_extra}
"""
    )


def test_a_secret_never_shows_in_repr_str_dumps_or_the_summary(tmp_path: Path) -> None:
    settings = load(tmp_path, with_every_secret())
    assert settings.lanes[0].camera.password is not None  # the secrets did load
    assert settings.sync.http.token is not None

    shown = [
        repr(settings),
        str(settings),
        str(settings.model_dump()),
        settings.model_dump_json(),
        json.dumps(describe(settings)),
    ]
    assert [text for text in shown if SECRET in text] == []
    assert describe(settings)["sync"]["http"]["token_set"] is True


def test_a_secret_never_shows_in_errors(tmp_path: Path) -> None:
    text = with_every_secret(
        hmac_key="short-hunter2",
        mqtt_extra=f'port = "not a port"\npasswd = "{SECRET}"',  # a typo'd key's value too
        http_extra='token_file = "/nonexistent"',
    )
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    error = info.value

    assert {p.path for p in error.problems} == {
        "sync.command_hmac_key",
        "sync.mqtt.port",
        "sync.mqtt.passwd",
        "sync.http.token_file",
    }
    assert "sync.command_hmac_key: must be at least 32 characters long" in str(error)
    shown = [str(error), repr(error), "".join(traceback.format_exception(error))]
    assert [text for text in shown if SECRET in text or "hunter2" in text] == []


# --- mistakes --------------------------------------------------------------------------------


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    text = (
        MINIMAL.replace('timezone = "Europe/Berlin"', 'timezone = "Europe/Berlin"\ncolour = "red"')
        + lane(0, (5, 6, 17), url="ftp://10.0.0.1/cam")
        + bay("A-01", '{ kind = "modbus", unit_id = 1 }')
        + bay("A-01", '{ kind = "modbus", unit_id = 2 }')
        + "\n[journal]\nretention_days = 0\n"
    )
    found = problems(tmp_path, text)

    assert set(found) == {
        "gateway.colour",
        "lanes.0.camera.url",
        "bays.1.id",
        "journal.retention_days",
    }
    assert found["gateway.colour"].startswith("unknown key")
    assert found["lanes.0.camera.url"].startswith("unsupported scheme 'ftp'")
    assert found["bays.1.id"] == "duplicate bay id, first used at bays.0"


def test_a_reconnect_cap_below_its_start_is_refused(tmp_path: Path) -> None:
    """The one Backoff refuses a shrinking policy; the config says so at start-up instead."""
    found = problems(tmp_path, MINIMAL + "\n[sync]\nreconnect_min_s = 10\nreconnect_max_s = 5\n")
    assert found == {"sync.reconnect_max_s": "must be at least reconnect_min_s (10.0)"}


def test_config_error_lists_one_problem_per_line() -> None:
    error = ConfigError([ConfigProblem("a.0.b", "bad"), ConfigProblem("c", "worse")])
    assert str(error) == "a.0.b: bad\nc: worse"


def test_a_gpio_pin_is_used_once_in_the_whole_config(tmp_path: Path) -> None:
    text = (
        MINIMAL
        + lane(0, (5, 6, 17))
        + lane(1, (12, 5, 18))
        + bay("A-01", '{ kind = "ultrasonic", trigger_pin = 4, echo_pin = 17 }')
    )
    found = problems(tmp_path, text)

    assert found == {
        "lanes.1.gpio.safety_loop": "GPIO pin already used at lanes.0.gpio.arming_loop",
        "bays.0.sensor.echo_pin": "GPIO pin already used at lanes.0.gpio.open_relay",
    }


def test_duplicate_lane_ids_are_errors(tmp_path: Path) -> None:
    text = MINIMAL + lane(0, (5, 6, 17)) + lane(0, (12, 13, 18))
    assert problems(tmp_path, text) == {"lanes.1.id": "duplicate lane id, first used at lanes.0"}


def test_a_modbus_unit_id_is_used_once_on_the_bus(tmp_path: Path) -> None:
    text = (
        MINIMAL
        + bay("A-01", '{ kind = "modbus", unit_id = 7 }')
        + bay("A-02", '{ kind = "none" }')
        + bay("A-03", '{ kind = "modbus", unit_id = 7 }')
    )
    found = problems(tmp_path, text)
    assert found == {"bays.2.sensor.unit_id": "Modbus unit id already used on the bus by bays.0"}


def test_a_sensor_error_is_reported_at_its_key(tmp_path: Path) -> None:
    text = (
        MINIMAL
        + bay("A-01", '{ kind = "modbus", unit_id = 248 }')
        + bay("A-02", '{ kind = "laser" }')
        + bay("A-03", '{ kind = "ultrasonic", trigger_pin = 4, echo_pin = 8, hysteresis_cm = 160 }')
    )
    found = problems(tmp_path, text)

    assert set(found) == {
        "bays.0.sensor.unit_id",
        "bays.1.sensor",
        "bays.2.sensor.hysteresis_cm",
    }
    assert "'laser'" in found["bays.1.sensor"]


def test_a_tariff_error_is_reported_at_its_key(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "lines = [{ flat_minor = 100 }]",
        "lines = [{ until_minutes = 60, flat_minor = 100 }, { until_minutes = 0, flat_minor = 1 }]",
    )
    assert "tariffs.standard.lines.1.until_minutes" in problems(tmp_path, text)


def test_the_default_tariff_must_be_defined(tmp_path: Path) -> None:
    text = MINIMAL.replace('default_tariff = "standard"', 'default_tariff = "premium"')
    found = problems(tmp_path, text)
    assert found == {"gateway.default_tariff": "no such tariff (defined: standard)"}


def test_the_timezone_must_be_an_iana_name(tmp_path: Path) -> None:
    text = MINIMAL.replace("Europe/Berlin", "Mars/Olympus_Mons")
    assert "unknown time zone 'Mars/Olympus_Mons'" in problems(tmp_path, text)["gateway.timezone"]


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("rtsp://10.0.0.1:554/stream1", "rtsp"),
        ("rtsps://cam.lot.test/stream1", "rtsp"),
        ("http://10.0.0.2/snapshot.jpg", "http"),
        ("https://cam.lot.test/snapshot.jpg", "http"),
        ("/dev/video0", "v4l2"),
        ("/srv/replays/entry.mp4", "file"),
    ],
)
def test_camera_sources(tmp_path: Path, url: str, kind: str) -> None:
    assert load(tmp_path, MINIMAL + lane(0, (5, 6, 17), url=url)).lanes[0].camera.kind == kind


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://10.0.0.1/cam", "unsupported scheme 'ftp'"),
        ("rtsp:///stream1", "rtsp:// URL has no host"),
        ("rtsp://admin:pw@10.0.0.1/stream1", "must not carry a password"),
        ("/dev/ttyUSB0", "a capture device must be /dev/videoN"),
        ("replays/entry.mp4", "a file path must be absolute"),
    ],
)
def test_bad_camera_sources(tmp_path: Path, url: str, message: str) -> None:
    found = problems(tmp_path, MINIMAL + lane(0, (5, 6, 17), url=url))
    assert found["lanes.0.camera.url"].startswith(message)


def test_a_level_driven_barrier_has_no_close_relay(tmp_path: Path) -> None:
    text = (
        MINIMAL
        + lane(0, (5, 6, 17)).replace("open_relay = 17", "open_relay = 17, close_relay = 27")
        + 'barrier = { drive = "level" }\n'
    )
    assert set(problems(tmp_path, text)) == {"lanes.0.gpio.close_relay"}


def test_a_toml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    text = MINIMAL + "\n[journal]\npath = /var/lib/x.db\n"
    line = text.splitlines().index("path = /var/lib/x.db") + 1
    found = problems(tmp_path, text)
    assert set(found) == {"<toml>"}
    assert f"(at line {line}, column 8)" in found["<toml>"]


# --- what would break the daemon --------------------------------------------------------------


def test_a_coercion_nobody_meant_is_refused(tmp_path: Path) -> None:
    """pydantic's lax mode took each of these: `true` became GPIO pin 1."""
    text = MINIMAL + """
[journal]
max_batch = "512"
group_commit_ms = true

[sync.mqtt]
port = 8883.0

[gpio]
lot_full_lamp = true

[lot]
max_stay_minutes = { ev = true }

[lpr]
enabled = 1

[tariffs.staff]
currency = "EUR"
lines = [{ flat_minor = true }]
"""
    found = problems(tmp_path, text)

    assert found == {
        "journal.max_batch": "must be a number, written without quotes",
        "journal.group_commit_ms": "must be a number, not true or false",
        "sync.mqtt.port": "must be a whole number, written without a decimal point",
        "gpio.lot_full_lamp": "must be a number, not true or false",
        "lot.max_stay_minutes": "must be a number, not true or false",
        "lpr.enabled": "must be true or false",
        "tariffs.staff.lines.0.flat_minor":
            "must be a whole number, written without quotes or a decimal point",
    }


@pytest.mark.parametrize(("setting", "path"), [
    ("[journal]\nretention_days = 999999", "journal.retention_days"),  # OverflowError in a prune
    ("[journal]\nmax_size_mb = 99999999999999999", "journal.max_size_mb"),
    ("[sync]\nreconnect_min_s = 1e300", "sync.reconnect_min_s"),
    ("[lot]\npassback_minutes = 99999999999", "lot.passback_minutes"),
    ("[lot]\nmax_stay_minutes = { ev = 99999999999 }", "lot.max_stay_minutes.ev"),
    ("[tariffs.big]\ncurrency = 'EUR'\nlines = [{ flat_minor = 1000000000000000000 }]",
     "tariffs.big.lines.0.flat_minor"),
    ("[tariffs.big]\ncurrency = 'EUR'\nlines = [{ per_minutes = 1000000000000000000, "
     "amount_minor = 1 }]", "tariffs.big.lines.0.per_minutes"),
])
def test_every_number_has_an_upper_bound(tmp_path: Path, setting: str, path: str) -> None:
    found = problems(tmp_path, f"{MINIMAL}\n{setting}\n")
    assert list(found) == [path]
    assert "less than or equal to" in found[path]


@pytest.mark.parametrize("value", ["nan", "inf", "-nan"])
def test_nan_and_inf_are_not_numbers_here(tmp_path: Path, value: str) -> None:
    """`nan` passes every bound (each comparison with it is false): it said "must be ≤ 50"."""
    found = problems(tmp_path, f"{MINIMAL}\n[journal]\ngroup_commit_ms = {value}\n")
    assert found == {"journal.group_commit_ms": "must be a finite number, not nan or inf"}


def test_a_file_too_large_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    """A 50 MB config took 45 s and 1.46 GB to check; a lot of 10,000 bays is about 1 MiB."""
    path = write(tmp_path, MINIMAL + "#" * MAX_CONFIG_BYTES)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert [str(p) for p in info.value.problems] == [
        f"<file>: {path} is larger than 4,096 KiB"]


def test_an_endless_file_is_refused_too() -> None:
    with pytest.raises(ConfigError, match="larger than"):
        load_settings(Path("/dev/zero"), env={})


def test_a_directory_as_the_journal_is_a_config_error(tmp_path: Path) -> None:
    """Found when the journal opened, it was an operational failure that systemd retried."""
    found = problems(tmp_path, f"{MINIMAL}\n[journal]\npath = '{tmp_path}'\n")
    assert found == {"journal.path": f"{tmp_path} is a directory; name the journal's file in"
                                     f" it, e.g. {tmp_path / 'journal.db'}"}


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "nowhere.toml", env={})
    assert [str(p) for p in info.value.problems] == [
        f"<file>: cannot read {tmp_path / 'nowhere.toml'}: No such file or directory"
    ]
