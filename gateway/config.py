"""The gateway's settings: pydantic models of one lot, loaded from a TOML file and the environment.

`load_settings` reads the file, lays the `PARKING_GATEWAY__...` environment variables (and
systemd credentials of the same names) over it, and validates the whole lot at once: every
model forbids unknown keys, so a typo stops start-up, and every problem of a file comes back
together in one `ConfigError`, each with its dotted path (`lanes.0.camera.url`).

Secrets (`SecretStr`) never show in a repr, a dump or an error; each may also be read from
a sibling `<name>_file`.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections import Counter
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from gateway.core.access import AntiPassback, InitialState, NoEntryRecord, OfflineExit
from gateway.core.events import BayType
from gateway.core.operations import Direction, LaneMode
from gateway.core.signs import MAX_OFFSET, Scope, SignMode
from gateway.core.tariff import RateTable
from gateway.core.tickets import TicketMode

ENV_PREFIX = "PARKING_GATEWAY__"
ENV_NESTED_DELIMITER = "__"
DEFAULT_JOURNAL_PATH = Path("/var/lib/parking-gateway/journal.db")

Loc = tuple[str | int, ...]


# --- errors -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a configuration, at its dotted path (`bays.3.sensor.unit_id`)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ConfigError(Exception):
    """A configuration that cannot be used; `problems` holds everything wrong with it."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        super().__init__(problems)
        self.problems = list(problems)

    def __str__(self) -> str:
        return "\n".join(map(str, self.problems))


_PROBLEMS = "config_problems"


def _problems_error(problems: Sequence[tuple[Loc, str]]) -> PydanticCustomError:
    """One pydantic error carrying several problems, each at a location below the validator's.

    A validator can raise only one error, and only at its own location; `ConfigError` unfolds
    this one so that each duplicate id or pin is reported where it is.
    """
    summary = "; ".join(f"{_dotted(loc)}: {message}" for loc, message in problems)
    return PydanticCustomError(_PROBLEMS, "{summary}", {"summary": summary, "problems": problems})


def _check(problems: Iterable[tuple[Loc, str]]) -> None:
    if found := list(problems):
        raise _problems_error(found)


def _dotted(loc: Loc) -> str:
    return ".".join(map(str, loc)) or "<config>"


_MESSAGES = {
    "extra_forbidden": "unknown key (check its spelling and its section)",
    "missing": "required, but not set",
    "finite_number": "must be a finite number, not nan or inf",
}


def _problems_from(error: ValidationError, variables: Mapping[tuple[str, ...], str]
                   ) -> list[ConfigProblem]:
    """Each problem at its dotted path; an unknown key that a variable set, at the variable."""
    problems: list[ConfigProblem] = []
    # An error's input may be a table that holds a secret: only a `_Rejected` one is read.
    for err in error.errors(include_url=False):
        loc = _without_union_tags(err["loc"])
        # A variable below no section is passed on under its own name (see _VariablesSource).
        variable = variables.get(tuple(str(part).lower() for part in loc)) or next(
            (name for name in map(str, loc[:1]) if name.upper().startswith(ENV_PREFIX)), None)
        if err["type"] == _PROBLEMS:
            for sub, message in err["ctx"]["problems"]:
                problems.append(ConfigProblem(_dotted((*loc, *sub)), message))
        elif err["type"] == "extra_forbidden" and variable is not None:
            setting = variable.lower().removeprefix(ENV_PREFIX.lower()).replace(
                ENV_NESTED_DELIMITER, ".")
            problems.append(ConfigProblem(
                variable, f"unknown environment variable: there is no setting {setting}"))
        elif isinstance(rejected := err.get("input"), _Rejected):
            problems.append(ConfigProblem(_dotted(loc), rejected.reason))
        else:
            message = _MESSAGES.get(err["type"], err["msg"].removeprefix("Value error, "))
            problems.append(ConfigProblem(_dotted(loc), message))
    return problems


# --- shared types -------------------------------------------------------------------------


def _matching(pattern: str, description: str) -> AfterValidator:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"must be {description}")
        return value

    return AfterValidator(check)


# Goes into the CloudEvents source `urn:parking:<lot>:<gateway>` and into MQTT topics.
Slug = Annotated[
    str,
    _matching(
        r"[a-z0-9][a-z0-9-]{0,62}",
        "1 to 63 lowercase letters, digits or '-', starting with a letter or digit",
    ),
]
# Lane and bay ids go into MQTT topics and events: no '/', '+', '#' or spaces.
Ident = Annotated[
    str,
    _matching(
        r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}",
        "1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit",
    ),
]
# A Broadcom (BCM) GPIO number on the Pi's 40-pin header.
Pin = Annotated[int, Field(ge=0, le=27)]
# The longest stay a limit may name: a year (of 366 days), in minutes.
MAX_STAY_MINUTES = 366 * 24 * 60


def _secret_of_at_least(characters: int) -> AfterValidator:
    def check(value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < characters:
            plural = "s" if characters > 1 else ""
            raise ValueError(f"must be at least {characters} character{plural} long")
        return value

    return AfterValidator(check)


Secret = Annotated[SecretStr, _secret_of_at_least(1)]
NonEmpty = Annotated[str, Field(min_length=1)]


class EnvironmentText(str):
    """The text of an environment variable or credential: the one place a number is text."""


def _kind(annotation: Any) -> type | None:
    """int, float or bool when a field holds one (maybe optional, or a Literal of ints)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _kind(get_args(annotation)[0])
    if origin in (Union, UnionType):
        kinds = {_kind(arg) for arg in get_args(annotation) if arg is not NoneType}
        return kinds.pop() if len(kinds) == 1 else None
    if origin is Literal:
        values = get_args(annotation)
        return int if all(type(value) is int for value in values) else None
    return annotation if annotation in (int, float, bool) else None


@cache
def _number_fields(model: type[BaseModel]) -> dict[str, tuple[type, bool]]:
    """A section's number and boolean fields: name -> (kind, whether a table of them)."""
    found = {}
    for name, field in model.model_fields.items():
        annotation, table = field.annotation, get_origin(field.annotation) is dict
        if (kind := _kind(get_args(annotation)[1] if table else annotation)) is not None:
            found[name] = (kind, table)
    return found


def _surprise(kind: type, value: Any) -> str | None:
    """Why `value` would become a `kind` by a coercion nobody meant (`true` read as pin 1)."""
    if isinstance(value, EnvironmentText):
        return None  # parsed as usual: a variable cannot say 8883 other than as text
    if kind is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if isinstance(value, bool):
        return "must be a number, not true or false"
    if isinstance(value, str):
        return "must be a number, written without quotes"
    if kind is int and isinstance(value, float):
        return "must be a whole number, written without a decimal point"
    return None


class _Section(BaseModel):
    # hide_input_in_errors: a table in an error's input may hold a secret.
    # coerce_numbers_to_str: `floor = 1` means the floor named "1".
    # allow_inf_nan=False: `nan` passes every bound (each comparison with it is false).
    model_config = ConfigDict(
        extra="forbid", frozen=True, hide_input_in_errors=True, coerce_numbers_to_str=True,
        allow_inf_nan=False,
    )

    @model_validator(mode="before")
    @classmethod
    def _no_surprising_coercion(cls, data: Any) -> Any:
        """Numbers and booleans are written as such: pydantic's lax mode would read `true` as 1,
        "512" as 512 and 8883.0 as 8883. Environment variables, text by nature, still parse.

        A value refused here becomes `_Rejected`, which its field reports with the reason, so
        that the section's other problems are reported too.
        """
        if not isinstance(data, dict):
            return data
        checked = dict(data)
        for key, (kind, table) in _number_fields(cls).items():
            if key not in data:
                continue
            values = data[key].values() if table and isinstance(data[key], dict) else [data[key]]
            if reason := next(filter(None, (_surprise(kind, each) for each in values)), None):
                checked[key] = _Rejected(reason)
        return checked


@dataclass(frozen=True, slots=True)
class _Rejected:
    """A `<name>_file` value that could not be used, and why; validating the key reports it.

    Raising in the section's pre-pass instead would hide the section's other problems.
    """

    reason: str


def _not_rejected(value: Any) -> Any:
    if isinstance(value, _Rejected):
        raise ValueError(value.reason)
    return value


SecretFile = Annotated[Path, BeforeValidator(_not_rejected)]


class _SectionWithSecrets(_Section):
    """A section whose secrets may each also come from a sibling `<name>_file` (a `SecretFile`)."""

    _secret_names: ClassVar[tuple[str, ...]]

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name in cls._secret_names:
            file_key = f"{name}_file"
            file = data.get(file_key)
            if not isinstance(file, str | os.PathLike):
                continue  # unset, or a wrong type that validating the key reports
            if data.get(name) is not None:
                data[file_key] = _Rejected(f"set either {name} or {file_key}, not both")
                continue
            try:
                data[name] = _read_secret_file(Path(file))
            except ValueError as exc:
                data[file_key] = _Rejected(str(exc))
        return data


# A lot of 10,000 bays takes about 1 MiB; checking a config costs about a second per MiB.
MAX_CONFIG_BYTES = 4 * 2**20
MAX_SECRET_BYTES = 64 * 2**10


def _read_text(path: Path, limit: int) -> str:
    """The file's text, refused past `limit` bytes before any of it is parsed (`/dev/zero` too)."""
    try:
        with path.open("rb") as file:
            data = file.read(limit + 1)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise ValueError(f"{path} is larger than {limit // 2**10:,} KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:  # its message would quote a byte of the file, maybe of a secret
        raise ValueError(f"{path} is not UTF-8 text") from None


def _read_secret_file(path: Path) -> str:
    # `echo secret > file` adds a newline.
    secret = _read_text(path, MAX_SECRET_BYTES).rstrip("\r\n")
    if not secret:
        raise ValueError(f"{path} is empty")
    return secret


def _reject_password_in_url(url: str, where: str) -> None:
    if urlsplit(url).password is not None:
        raise ValueError(f"must not carry a password; set {where} instead")


# --- gateway ------------------------------------------------------------------------------


class GatewayConfig(_Section):
    lot_id: Slug
    gateway_id: Slug
    timezone: str
    default_tariff: NonEmpty

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name such as 'Europe/Berlin'"
            ) from None
        return value

    @property
    def tzinfo(self) -> ZoneInfo:
        """The lot's local time zone, for tariff bands and calendar days."""
        return ZoneInfo(self.timezone)


# --- lanes --------------------------------------------------------------------------------

PinFactoryKind = Literal["auto", "lgpio", "rpigpio", "mock"]
LogFormat = Literal["auto", "json", "console"]
CaptureKind = Literal["rtsp", "v4l2", "file"]  # what OpenCV opens
CameraKind = CaptureKind | Literal["http"]
_V4L2_DEVICE = re.compile(r"/dev/video[0-9]+")


def _camera_kind(url: str) -> CameraKind:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("rtsp", "rtsps", "http", "https"):
        if not parts.hostname:
            raise ValueError(f"{scheme}:// URL has no host")
        return "rtsp" if scheme.startswith("rtsp") else "http"
    if scheme:
        raise ValueError(
            f"unsupported scheme {scheme!r}: use rtsp://, http(s):// (a snapshot URL), "
            "a V4L2 device /dev/videoN or an absolute file path"
        )
    if _V4L2_DEVICE.fullmatch(url):
        return "v4l2"
    if url.startswith("/dev/"):
        raise ValueError("a capture device must be /dev/videoN")
    if not url.startswith("/"):
        # Under systemd the working directory is /, so a relative path is a mistake.
        raise ValueError("a file path must be absolute")
    return "file"


class CameraConfig(_SectionWithSecrets):
    """Where a lane's plate camera is read; the driver adds the credentials to the URL."""

    _secret_names = ("password",)

    url: NonEmpty
    username: str | None = None
    password: Secret | None = None
    password_file: SecretFile | None = None
    # Alarms: no answer for this long (camera.unreachable), or answering with no new picture
    # for this long (camera.stale: frozen, covered).
    unreachable_alarm_s: float = Field(60.0, ge=1, le=86400)
    stale_alarm_s: float = Field(60.0, ge=1, le=86400)

    @field_validator("url")
    @classmethod
    def _supported_url(cls, value: str) -> str:
        _camera_kind(value)
        # A password in the URL would show in every log line and dump that shows the URL.
        _reject_password_in_url(value, "camera.password or camera.password_file")
        return value

    @property
    def kind(self) -> CameraKind:
        return _camera_kind(self.url)


class LaneGpio(_Section):
    """The lane's BCM pins: loop detector outputs in, barrier controller inputs out."""

    arming_loop: Pin
    safety_loop: Pin
    closing_loop: Pin | None = None
    open_relay: Pin
    close_relay: Pin | None = None
    up_limit: Pin | None = None
    down_limit: Pin | None = None
    lamp: Pin | None = None  # the lane's signal lamp (lit: drive on)

    @property
    def pins(self) -> dict[str, int]:
        """The pins in use, by key."""
        return {name: pin for name, pin in self.model_dump().items() if pin is not None}


class BarrierConfig(_Section):
    drive: Literal["pulse", "level"] = "pulse"
    pulse_ms: int = Field(500, ge=50, le=5000)
    feedback_timeout_s: float = Field(6.0, gt=0, le=60)


class LaneTiming(_Section):
    """How long a lane waits at each step; the defaults suit a barrier at walking pace."""

    debounce_ms: int = Field(50, ge=0, le=2000)  # loop detectors debounce too; this is extra
    identify_timeout_s: float = Field(2.0, gt=0, le=30)
    identify_frames: int = Field(3, ge=1, le=20)
    # The barrier stays up this long for a vehicle that does not move on, then closes
    # (never over an occupied safety loop).
    pass_timeout_s: float = Field(30.0, gt=0, le=600)
    # A loop occupied longer than this is stuck (an alarm): far longer than any car takes. The
    # safety loop's bound is longer: under a barrier held open a slow queue may cover it.
    loop_stuck_after_s: float = Field(600.0, ge=10, le=86400)
    safety_stuck_after_s: float = Field(1800.0, ge=10, le=86400)
    # A loop reading free, unchanged this long while the lane's other loops saw vehicles, is
    # dead (an alarm).
    loop_dead_after_s: float = Field(1800.0, ge=10, le=86400)


class LoopGeometry(_Section):
    """Where the loops lie, for telling two close vehicles from one long one.

    A tailgater less than a metre behind the car ahead makes the loops see one long vehicle.
    The speed of its tail, from the arming loop's trailing edge to the safety loop's, gives the
    length of what went through: times how long since its front reached the closing loop
    (where the lane has one), else times how long the safety loop stayed occupied. The first
    holds for a car that pulled away from a standstill with its front on the safety loop; the
    second counts the standstill too, and runs long.
    """

    # From the arming loop's far edge to the safety loop's far edge, in metres.
    arming_to_safety_end_m: float = Field(2.5, gt=0, le=20)
    # The safety loop's length as it detects (the loop plus its fringe field), in metres.
    safety_length_m: float = Field(2.6, gt=0, le=10)
    # From the safety loop's far edge to the closing loop's near edge as they detect (the gap
    # between the loops less their fringes), in metres. Used where the lane has a closing loop.
    safety_to_closing_m: float = Field(1.0, ge=0, le=10)
    # Anything longer went through as two vehicles. Cars are at most ~5.5 m; the estimate runs
    # long for a car still accelerating. Raise it where long vans or trailers use the lane.
    max_vehicle_m: float = Field(7.1, gt=2, le=30)


# --- tickets: a printer at an entry, a scanner at an exit (gateway.drivers.printer, .scanner) ---


SerialBaud = Literal[9600, 19200, 38400, 57600, 115200]


class PrinterConfig(_Section):
    """An ESC/POS ticket printer on a serial port (8N1, hardware handshake off)."""

    port: NonEmpty  # /dev/ttyUSB1, /dev/serial/by-id/...
    baudrate: SerialBaud = 19200
    # How long the printer may take to answer a status request (DLE EOT) before it counts
    # as not answering (a printer fault).
    timeout_ms: int = Field(500, ge=50, le=5000)
    # The paper and error status is polled this often, so an empty roll raises its alarm before
    # the next car and a refilled one clears it.
    poll_s: float = Field(10.0, ge=1, le=3600)
    qr_module_dots: int = Field(6, ge=1, le=16)  # the QR code's module size (GS ( k fn 167)
    header: str = Field("Parking ticket", min_length=1, max_length=42)  # the ticket's first line


class ScannerConfig(_Section):
    """A serial barcode scanner whose every scan ends with CR (or LF)."""

    port: NonEmpty
    baudrate: SerialBaud = 9600
    max_length: int = Field(128, ge=16, le=1024)  # a longer scan is noise, not a ticket


class LaneConfig(_Section):
    id: Ident
    direction: Direction
    name: NonEmpty
    mode: LaneMode = "auto"
    camera: CameraConfig
    gpio: LaneGpio
    barrier: BarrierConfig = Field(default_factory=BarrierConfig)
    timing: LaneTiming = Field(default_factory=LaneTiming)
    loops: LoopGeometry = Field(default_factory=LoopGeometry)
    # Tickets (docs/operations.md): an entry lane with a printer prints one for a car whose
    # plate is unreadable ("unreadable") or for every visitor ("always"); an exit lane with a
    # scanner takes them back.
    ticket: TicketMode = "unreadable"
    printer: PrinterConfig | None = None
    scanner: ScannerConfig | None = None

    @property
    def ticket_mode(self) -> TicketMode:
        """The mode in force: tickets need an entry lane with a printer."""
        return self.ticket if self.direction == "entry" and self.printer is not None else "off"

    @model_validator(mode="after")
    def _ticket_devices_fit_the_direction(self) -> LaneConfig:
        if self.direction == "exit" and self.printer is not None:
            raise _problems_error([(("printer",), "an exit lane takes tickets back: give it a "
                                                  "scanner, not a printer")])
        if self.direction == "entry" and self.scanner is not None:
            raise _problems_error([(("scanner",), "an entry lane issues tickets: give it a "
                                                  "printer, not a scanner")])
        return self

    @model_validator(mode="after")
    def _close_relay_needs_pulse_drive(self) -> LaneConfig:
        if self.barrier.drive == "level" and self.gpio.close_relay is not None:
            raise _problems_error(
                [
                    (
                        ("gpio", "close_relay"),
                        "a level-driven barrier closes when open_relay is released; "
                        "remove close_relay or use drive = 'pulse'",
                    )
                ]
            )
        return self


# --- bays ---------------------------------------------------------------------------------


class ModbusSensor(_Section):
    """A detector node on the RS-485 bus."""

    kind: Literal["modbus"]
    unit_id: int = Field(ge=1, le=247)  # Modbus RTU slave addresses


class UltrasonicSensor(_Section):
    """An HC-SR04 style distance sensor above the bay, wired to the Pi's GPIO."""

    kind: Literal["ultrasonic"]
    trigger_pin: Pin
    echo_pin: Pin
    threshold_cm: float = Field(150.0, gt=2, le=400)
    hysteresis_cm: float = Field(10.0, ge=0, le=400)
    min_dwell_s: float = Field(3.0, ge=0, le=600)  # a reading must hold this long to count

    @model_validator(mode="after")
    def _hysteresis_below_threshold(self) -> UltrasonicSensor:
        if self.hysteresis_cm >= self.threshold_cm:
            raise _problems_error([(("hysteresis_cm",), "must be less than threshold_cm")])
        return self

    @property
    def pins(self) -> dict[str, int]:
        return {"trigger_pin": self.trigger_pin, "echo_pin": self.echo_pin}


class NoSensor(_Section):
    """A bay counted by the lanes only (entries minus exits)."""

    kind: Literal["none"]


SensorConfig = Annotated[ModbusSensor | UltrasonicSensor | NoSensor, Field(discriminator="kind")]


def _without_union_tags(loc: Loc) -> Loc:
    """Drop the sensor kind that pydantic puts into a location (`bays.3.sensor.modbus.unit_id`).

    The operator's file has no such level.
    """
    if len(loc) > 3 and loc[0] == "bays" and loc[2] == "sensor":
        return (*loc[:3], *loc[4:])
    return loc


BayTypeName = BayType


class BayConfig(_Section):
    id: Ident
    floor: NonEmpty
    zone: NonEmpty
    type: BayTypeName = "regular"
    sensor: SensorConfig
    # Overrides the lot's limit for this bay's type (lot.max_stay_minutes).
    max_stay_minutes: int | None = Field(None, ge=1, le=MAX_STAY_MINUTES)


# --- lot policy ---------------------------------------------------------------------------


def _default_max_stays() -> dict[BayTypeName, int]:
    return {"ev": 240, "loading": 15}


class LotConfig(_Section):
    """How the lot decides: lot-full threshold, anti-passback, exits with no payment or no entry."""

    # The lot is full (visitors refused, permits and reservations admitted) when at most this
    # many bays are free; unknown and out-of-service bays never count as free.
    full_when_free_at_most: int = Field(0, ge=0, le=100_000)
    initial_state: InitialState = "open"
    # hard: refuse a plate already inside; soft: let it in and flag it; timed: refuse for
    # passback_minutes after its entry, then close the stale session as a lost ticket and let in.
    anti_passback: AntiPassback = "soft"
    passback_minutes: int = Field(120, ge=1, le=MAX_STAY_MINUTES)
    # A reservation admits from start - grace to end + grace; it also holds a bay.
    reservation_grace_minutes: int = Field(15, ge=0, le=1440)
    # A visitor's paid session may leave within this time of paying.
    payment_grace_minutes: int = Field(15, ge=0, le=1440)
    # A visitor with no payment while the backend is unreachable: let out and record the fee as
    # uncollected, or hold the barrier for the intercom.
    offline_exit: OfflineExit = "let_out"
    # The backend counts as unreachable after this long without a successful sync.
    offline_after_s: float = Field(120.0, gt=0, le=86400)
    # A plate at an exit with no entry record: charge the lost-ticket fee, or hold for the intercom.
    no_entry_record: NoEntryRecord = "lost_ticket"
    # Longest stay per bay type, in minutes, before an overstay violation.
    max_stay_minutes: dict[BayTypeName, Annotated[int, Field(ge=1, le=MAX_STAY_MINUTES)]] = Field(
        default_factory=_default_max_stays)


def _duplicates(values: Iterable[tuple[Loc, Hashable]]) -> Iterator[tuple[Loc, Loc]]:
    """(location, location of the first use) of every value seen before."""
    first: dict[Hashable, Loc] = {}
    for loc, value in values:
        if value in first:
            yield loc, first[value]
        else:
            first[value] = loc


# --- gpio ---------------------------------------------------------------------------------


class GpioConfig(_Section):
    """How the Pi's pins are reached, and the lot-wide lamps."""

    # auto: $GPIOZERO_PIN_FACTORY, else gpiozero's own choice; lgpio on a Pi 5; mock in tests.
    pin_factory: PinFactoryKind = "auto"
    lot_full_lamp: Pin | None = None


# --- sensor bus ---------------------------------------------------------------------------


class BusConfig(_Section):
    """The RS-485 Modbus RTU line to the bays' detector nodes (`[bus]`)."""

    port: NonEmpty  # /dev/ttyUSB0, /dev/ttyAMA0, /dev/serial/by-id/...
    baudrate: Literal[9600, 19200, 38400, 57600, 115200] = 19200
    parity: Literal["N", "E", "O"] = "E"  # Modbus RTU's default is even
    stopbits: Literal[1, 2] = 1
    timeout_ms: int = Field(100, ge=5, le=5000)  # reply timeout, from the request's last byte
    retries: int = Field(1, ge=0, le=5)  # extra attempts within one poll cycle
    fault_after_failures: int = Field(3, ge=1, le=1000)  # failed cycles before "unknown"
    poll_interval_s: float = Field(0.5, ge=0, le=60)  # 0: poll back to back
    # How long the port may fail, or a node stay silent, before an alarm.
    alarm_after_s: float = Field(30.0, gt=0, le=3600)


# --- free-space signs ---------------------------------------------------------------------


def _sign_scope(value: str) -> str:
    Scope.parse(value)  # the names are checked against the bays in Settings
    return value


class SignConfig(_Section):
    """A free-space count sign (`[[signs]]`) on an RS-485 line of its own (not the detectors').

    Several signs may share one line (multi-drop), each at its own address, if their line
    settings agree. docs/operations.md, "Free-space signs", has the frames and the wiring.
    """

    id: Ident
    kind: Literal["ascii", "modbus"]
    port: NonEmpty  # /dev/ttyUSB1, /dev/serial/by-id/...
    baudrate: Literal[9600, 19200, 38400, 57600, 115200] = 9600
    parity: Literal["N", "E", "O"] | None = None  # None: N for an ASCII sign, E for Modbus
    stopbits: Literal[1, 2] = 1
    address: int | None = Field(None, ge=1, le=99)  # an ASCII sign's address (its DIP switches)
    unit_id: int | None = Field(None, ge=1, le=247)  # a Modbus sign's unit id
    # lot, floor:<name>, zone:<name> or type:<bay type>: whose free bays the sign counts.
    shows: Annotated[str, AfterValidator(_sign_scope)] = "lot"
    mode: SignMode = "auto"  # a technician's `sign mode` overrides it until set again
    offset: int = Field(0, ge=0, le=MAX_OFFSET)  # keep this many free: shows free - offset
    brightness: int = Field(100, ge=0, le=100)  # percent
    timeout_ms: int = Field(300, ge=10, le=5000)  # for the sign's answer, from the frame's end
    retries: int = Field(1, ge=0, le=5)  # extra tries of one update
    refresh_s: float = Field(30.0, ge=1, le=3600)  # sent again this often: a rebooted sign
    alarm_after_s: float = Field(60.0, gt=0, le=86400)  # silent this long: sign.unreachable
    # Modbus: the first of three holding registers (count, mode, brightness), and whether
    # they are written in one 0x10 request or three 0x06 ones (for signs that lack 0x10).
    first_register: int = Field(0, ge=0, le=65533)
    write_function: Literal[6, 16] = 16

    @model_validator(mode="after")
    def _address_of_its_kind(self) -> SignConfig:
        wanted, other = ("address", "unit_id") if self.kind == "ascii" else ("unit_id",
                                                                            "address")
        problems: list[tuple[Loc, str]] = []
        if getattr(self, wanted) is None:
            problems.append(((wanted,), f"a {self.kind} sign needs its {wanted}"))
        if getattr(self, other) is not None:
            problems.append(((other,), f"a {self.kind} sign is addressed by its {wanted}"))
        _check(problems)
        return self

    @property
    def scope(self) -> Scope:
        return Scope.parse(self.shows)

    @property
    def line(self) -> BusConfig:
        """The sign's serial line, in the terms the RS-485 line code takes."""
        return BusConfig(port=self.port, baudrate=self.baudrate,
                         parity=self.parity or ("N" if self.kind == "ascii" else "E"),
                         stopbits=self.stopbits, timeout_ms=self.timeout_ms, retries=0)

    @property
    def station(self) -> int:
        """Its address on the line: an ASCII address or a Modbus unit id."""
        return self.address if self.address is not None else self.unit_id or 0


# --- counted levels -----------------------------------------------------------------------

OUTSIDE = "outside"  # a ramp's `from` when it leads in from the street
QuietHour = Annotated[str, _matching(r"([01][0-9]|2[0-3]):[0-5][0-9]", "a lot-local HH:MM")]


class RampConfig(_Section):
    """A ramp's two loop detectors: a vehicle over A, then B, goes from `from` into `into`.

    Place A on the `from` side; spaced so that a car covers both loops for a moment
    (docs/operations.md, "Ramp loops").
    """

    id: Ident
    loop_a: Pin
    loop_b: Pin
    into: Ident | None = None  # None: the level this ramp is listed under
    from_: Ident = Field(alias="from")  # the level it leaves, or "outside"
    # A loop's pulse or dropout shorter than this is chatter, not a vehicle.
    glitch_ms: int = Field(100, ge=0, le=2000)
    # Both loops clear this long closes a crossing; a car crossing a gap between the loops
    # must reach B within it.
    settle_ms: int = Field(600, ge=50, le=10_000)
    # A loop occupied this long is stuck (loop.stuck:ramp.<id>.<a|b>, critical): a stalled
    # car or a faulty detector. A loop that stays free and unchanged this long while the
    # other saw vehicles is dead (loop.dead:..., critical): the count misses them. As a lane's.
    loop_stuck_after_s: float = Field(600.0, ge=10, le=86400)
    loop_dead_after_s: float = Field(1800.0, ge=10, le=86400)

    @model_validator(mode="after")
    def _settle_after_glitch(self) -> RampConfig:
        if self.settle_ms < self.glitch_ms:
            raise _problems_error([(("settle_ms",), "must be at least glitch_ms")])
        return self


class LevelConfig(_Section):
    """A level counted at its ramps (`[[levels]]`): the cars on it, from the crossings of its
    ramps' loops, kept in the journal; free = capacity - count."""

    id: Ident  # the floor, as the bays name it
    capacity: int = Field(ge=1, le=100_000)
    zone: Ident | None = None  # the zone its count is shown under; None: the level's id
    ramps: tuple[RampConfig, ...] = Field(min_length=1)
    # Where the level also has bay sensors: at this lot-local time each day the count is set
    # to the sensors' (audited as system:correction). Choose an hour with no traffic.
    correct_at: QuietHour | None = None

    @model_validator(mode="after")
    def _ramps_touch_the_level(self) -> LevelConfig:
        problems: list[tuple[Loc, str]] = []
        for i, ramp in enumerate(self.ramps):
            into = ramp.into or self.id
            if into == ramp.from_:
                problems.append((("ramps", i, "from"), f"a ramp leads from one level into"
                                 f" another: into and from are both {into!r}"))
            elif self.id not in (into, ramp.from_):
                problems.append((("ramps", i, "into"), f"a ramp of level {self.id!r} leads"
                                 f" into it or from it (into {into!r}, from {ramp.from_!r})"))
        _check(problems)
        return self

    @property
    def zone_name(self) -> str:
        return self.zone or self.id


# --- journal ------------------------------------------------------------------------------


def _not_a_directory(path: Path) -> Path:
    # Found only when the journal opens, it would fail as an unwritable file: an operational
    # failure, which systemd meets by restarting the daemon for ever.
    if path.is_dir():
        raise ValueError(f"{path} is a directory; name the journal's file in it, e.g. "
                         f"{path / DEFAULT_JOURNAL_PATH.name}")
    return path


class JournalConfig(_Section):
    path: Annotated[Path, AfterValidator(_not_a_directory)] = DEFAULT_JOURNAL_PATH
    group_commit_ms: float = Field(2.0, ge=0, le=50)
    max_batch: int = Field(512, ge=1, le=65536)
    retention_days: int = Field(30, ge=1, le=3660)  # ten years
    max_size_mb: int = Field(512, ge=1, le=1_048_576)  # a TiB
    startup_check: Literal["quick", "full", "off"] = "quick"
    maintenance_interval_s: float = Field(60.0, gt=0, le=86400)
    # A ballast file of this size beside the journal, given up when the disk fills so that
    # writing goes on for hours after the alarm (0: none).
    reserve_mb: int = Field(48, ge=0, le=1024)
    # `journal.disk_low` (warning) when the journal's file system has less free than this.
    min_free_mb: int = Field(256, ge=0, le=65536)
    # When the journal takes no writes at all: the lanes let cars in and hold the records in
    # memory until it does (admit), or send each car to the intercom (intercom).
    on_full: Literal["admit", "intercom"] = "admit"
    # Records a lane holds in memory at most; past it the lane sends cars to the intercom.
    max_held_records: int = Field(20_000, ge=10, le=1_000_000)
    # Personal data (plates) is kept no longer than needed: closed sessions, with their
    # payments, this many days after the car left; audit entries this many days.
    sessions_retention_days: int = Field(90, ge=1, le=3660)
    audit_retention_days: int = Field(365, ge=1, le=3660)
    # The plate of a car the lanes refused or matched to no session (a violation that names a
    # plate but no session) is kept only this many hours once the backend has it.
    refused_retention_h: float = Field(24.0, gt=0, le=87840)
    # Such a plate is journaled as a keyed hash (HMAC-SHA256, docs/privacy.md) instead of its
    # text; the key is made on first use in plate_key_file (default: plate.key beside the
    # journal), never journaled nor synced.
    pseudonymise_refused: bool = False
    plate_key_file: Path | None = None
    # The key that signs tickets' QR codes (gateway.core.tickets), made on first use where a
    # lane has a ticket printer or scanner (default: ticket.key beside the journal); never
    # journaled nor synced. Give every gateway of a lot the same file.
    ticket_key_file: Path | None = None
    # Rows of each kind one maintenance run deletes at most, so a backlog (retention shortened
    # on a full journal) is worked off over several runs without holding up the writer.
    prune_batch: int = Field(5000, ge=100, le=1_000_000)

    @property
    def plate_key_path(self) -> Path:
        return self.plate_key_file or self.path.with_name("plate.key")

    @property
    def ticket_key_path(self) -> Path:
        return self.ticket_key_file or self.path.with_name("ticket.key")

    @model_validator(mode="after")
    def _key_apart_from_journal(self) -> JournalConfig:
        if self.plate_key_path.name.startswith(self.path.name) and (
                self.plate_key_path.parent == self.path.parent):
            raise _problems_error([(("plate_key_file",),
                                    "must not be the journal or one of its files")])
        if self.ticket_key_path.name.startswith(self.path.name) and (
                self.ticket_key_path.parent == self.path.parent):
            raise _problems_error([(("ticket_key_file",),
                                    "must not be the journal or one of its files")])
        return self


# --- sync ---------------------------------------------------------------------------------


class MqttTlsConfig(_Section):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _cert_with_key(self) -> MqttTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            raise _problems_error(
                [((missing,), "a client certificate needs both cert_file and key_file")]
            )
        return self


class MqttConfig(_SectionWithSecrets):
    _secret_names = ("password",)

    host: NonEmpty = "localhost"
    port: int = Field(1883, ge=1, le=65535)
    client_id: NonEmpty | None = None
    keepalive_s: int = Field(60, ge=5, le=3600)
    username: NonEmpty | None = None
    password: Secret | None = None
    password_file: SecretFile | None = None
    tls: MqttTlsConfig | None = None

    @model_validator(mode="after")
    def _password_needs_username(self) -> MqttConfig:
        # MQTT 3.1.1 sends a password only with a user name.
        if self.password is not None and self.username is None:
            raise _problems_error([(("username",), "required when a password is set")])
        return self


class HttpConfig(_SectionWithSecrets):
    _secret_names = ("token",)

    base_url: HttpUrl | None = None
    token: Secret | None = None
    token_file: SecretFile | None = None
    timeout_s: float = Field(10.0, gt=0, le=300)

    @field_validator("base_url")
    @classmethod
    def _no_password(cls, value: HttpUrl | None) -> HttpUrl | None:
        if value is not None:
            _reject_password_in_url(str(value), "sync.http.token or sync.http.token_file")
        return value


class SyncConfig(_SectionWithSecrets):
    _secret_names = ("command_hmac_key",)

    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    # RFC 2104: a key shorter than the hash's output (32 bytes for SHA-256) weakens the MAC.
    command_hmac_key: Annotated[SecretStr, _secret_of_at_least(32)] | None = None
    command_hmac_key_file: SecretFile | None = None
    # Tuning of gateway.sync (docs/sync.md): transport, topics, drain, reconnect, commands.
    transport: Literal["mqtt", "http"] = "mqtt"
    topic_prefix: str = Field("parking/v1", pattern=r"^[^#+/\s][^#+\s]*[^#+/\s]$")  # no wildcard
    http_fallback_after_s: float | None = Field(None, gt=0, le=86400)  # needs http.base_url
    batch_size: int = Field(500, ge=1, le=10000)
    inflight_window: int = Field(256, ge=1, le=65535)
    # Events per MQTT message when draining a backlog (a CloudEvents JSON batch); 1: one each.
    events_per_message: int = Field(100, ge=1, le=1000)
    # None: drain a backlog unthrottled.
    backlog_rate_per_s: float | None = Field(500.0, gt=0, le=1_000_000)
    backlog_burst: int = Field(500, ge=1, le=1_000_000)
    reconnect_min_s: float = Field(1.0, gt=0, le=3600)
    reconnect_max_s: float = Field(60.0, gt=0, le=86400)
    command_window_s: float = Field(300.0, gt=0, le=86400)
    max_command_bytes: int = Field(16384, ge=256, le=1048576)
    config_poll_s: float = Field(300.0, gt=0, le=86400)
    # The backend out of reach this long raises sync.backend_unreachable.
    unreachable_alarm_s: float = Field(300.0, gt=0, le=86400)

    @model_validator(mode="after")
    def _reconnect_bounds_in_order(self) -> SyncConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise _problems_error([(("reconnect_max_s",),
                                    f"must be at least reconnect_min_s ({self.reconnect_min_s})")])
        return self


# --- logging ------------------------------------------------------------------------------


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


class LoggingConfig(_Section):
    level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)] = "info"
    format: LogFormat = "auto"


# --- plate reading ------------------------------------------------------------------------


def _plate_formats(entries: tuple[str, ...]) -> tuple[str, ...]:
    from gateway.core.plates import formats_for  # plain Python; imported late to keep this light

    formats_for(entries)  # raises ValueError naming the bad entry
    return entries


class LprConfig(_Section):
    """Licence-plate reading (`[lpr]`): the reader's worker process, formats, matching."""

    enabled: bool = True
    # Region codes (eu, uk, us, br, ar, in, or one of de fr it es nl pl cz sk) or "name=MASK"
    # entries.
    formats: Annotated[tuple[str, ...], AfterValidator(_plate_formats)] = (
        "eu", "uk", "us", "br", "in")
    max_match_distance: float = Field(1.0, ge=0, le=3)  # weighted edits; a confusable < 1
    consensus_threshold: float = Field(0.6, ge=0, le=1)
    # ...and no character of it below this: one doubtful glyph makes a doubtful plate.
    min_char_confidence: float = Field(0.8, ge=0, le=1)
    queue_size: int = Field(8, ge=1, le=256)  # frames waiting for the reader; oldest dropped
    timeout_s: float = Field(2.0, gt=0, le=60)  # per passage
    capture_dir: Path | None = None  # keep crops of reads below the threshold here
    capture_max_mb: int = Field(100, ge=1, le=65536)
    # Crops are personal data too: each is deleted this many hours after it was taken.
    capture_max_age_h: float = Field(72.0, gt=0, le=8760)
    # Plate reads shown by `plates recent` are kept in memory this many minutes at most.
    recent_max_age_min: float = Field(60.0, gt=0, le=10080)
    # Where plate candidates come from: "detector" (a learned text detector, shipped),
    # "glyphs" (hand-made glyph-row rules, tuned on openalpr-dev), or "detector+glyphs".
    localizer: Literal["detector", "glyphs", "detector+glyphs"] = "detector"
    # The longer side, in pixels, the detector sees a frame scaled to: 640 halves its time on
    # a slow CPU, at the cost of plates that are small in the frame.
    detector_side: int = Field(960, ge=320, le=2048, multiple_of=32)
    # The recognition engine: "onnx" (ONNX Runtime; the `lpr` extra) or "easyocr" (torch;
    # the `train` extra).
    engine: Literal["onnx", "easyocr"] = "onnx"
    # The onnx engine's networks: "ppocr" (PP-OCRv4's recognizer), "plate" (EasyOCR's
    # english_g2 fine-tuned on plates), or an .onnx made by tools/export_onnx.py; several
    # joined with "+" are an ensemble, where a crop the first is unsure of is read by the next.
    recognizer_networks: NonEmpty = "ppocr"
    # The easyocr engine's weights: "plate", "english_g2", the path of a state dict made by
    # tools/train_recognizer.py, or several joined with "+" (an ensemble, as above).
    recognizer_weights: NonEmpty = "plate+english_g2"


# --- control socket -----------------------------------------------------------------------

DEFAULT_CONTROL_SOCKET = Path("/run/parking-gateway/control.sock")


class ControlConfig(_Section):
    """The Unix socket the technician CLI talks to the running daemon over."""

    socket_path: Path = DEFAULT_CONTROL_SOCKET
    # The socket is mode 0660 with this group (when it exists): root and its members may use it.
    group: NonEmpty = "parking"


# --- the local HTTP API -------------------------------------------------------------------

HttpRole = Literal["viewer", "technician", "device"]
# What `parking-gateway user add` writes: `scrypt:N:r:p$<salt>$<key>` (base64), N a power of
# two up to 2^17 and r at most 16, so that checking one costs at most 256 MiB.
ScryptHash = Annotated[str, _matching(
    r"scrypt:(1024|2048|4096|8192|16384|32768|65536|131072):([1-9]|1[0-6]):[1-4]"
    r"\$[A-Za-z0-9+/]{22,}={0,2}\$[A-Za-z0-9+/]{43,}={0,2}",
    "a hash written by `parking-gateway user add` (scrypt:N:r:p$salt$key)")]
DEFAULT_HTTP_LISTEN = "127.0.0.1:8080"


def _listen_address(value: str) -> str:
    """`host:port` or `[v6 address]:port`; port 0 takes any free port (tests)."""
    host, port = _host_port(value)
    if not host or not port.isdigit() or int(port) > 65535:
        raise ValueError("must be host:port, e.g. 127.0.0.1:8080 or [::1]:8080")
    return value


def _host_port(value: str) -> tuple[str, str]:
    host, _, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


class HttpAccount(_Section):
    """Someone (or a device) the HTTP API knows: `[http.accounts.<name>]`."""

    role: HttpRole
    password_hash: ScryptHash | None = None  # the browser's login
    token_hash: ScryptHash | None = None  # an API token, `Authorization: Bearer <token>`

    @model_validator(mode="after")
    def _some_credential(self) -> HttpAccount:
        if self.password_hash is None and self.token_hash is None:
            raise _problems_error([(("password_hash",),
                                    "an account needs a password_hash, a token_hash or both")])
        return self


class HttpTlsConfig(_Section):
    cert_file: Path
    key_file: Path


class HttpServerConfig(_Section):
    """The local HTTP API, its live stream and metrics (`[http]`, gateway/web/)."""

    enabled: bool = False
    listen: Annotated[str, AfterValidator(_listen_address)] = DEFAULT_HTTP_LISTEN
    tls: HttpTlsConfig | None = None
    # Availability (and only it) may be read by anyone who reaches the port.
    anonymous_viewer: bool = False
    accounts: dict[Slug, HttpAccount] = Field(default_factory=dict)
    session_max_age_s: float = Field(8 * 3600.0, ge=60, le=7 * 86400)
    # Failed logins (and bad tokens) one address, or one account, may have in a minute.
    login_failures_per_min: int = Field(5, ge=1, le=100)
    max_stream_clients: int = Field(16, ge=1, le=256)
    max_body_bytes: int = Field(16384, ge=1024, le=1048576)

    @property
    def host(self) -> str:
        return _host_port(self.listen)[0]

    @property
    def port(self) -> int:
        return int(_host_port(self.listen)[1])


# --- the whole lot ------------------------------------------------------------------------


class Settings(BaseSettings):
    """A lot's whole configuration; `load_settings` builds one from a file and the environment."""

    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        case_sensitive=False,
    )

    gateway: GatewayConfig
    lanes: tuple[LaneConfig, ...] = ()
    bays: tuple[BayConfig, ...] = ()
    tariffs: dict[str, RateTable]
    gpio: GpioConfig = Field(default_factory=GpioConfig)
    lot: LotConfig = Field(default_factory=LotConfig)
    journal: JournalConfig = Field(default_factory=JournalConfig)
    sync: SyncConfig = Field(default_factory=SyncConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    lpr: LprConfig = Field(default_factory=LprConfig)
    bus: BusConfig | None = None
    control: ControlConfig = Field(default_factory=ControlConfig)
    http: HttpServerConfig = Field(default_factory=HttpServerConfig)
    signs: tuple[SignConfig, ...] = ()  # free-space count signs
    levels: tuple[LevelConfig, ...] = ()  # levels counted at their ramps

    # Uniqueness within a list is checked on the list itself, so that it is reported together
    # with the other sections' problems; checks across sections wait for all sections.

    @field_validator("lanes")
    @classmethod
    def _unique_lane_ids(cls, lanes: tuple[LaneConfig, ...]) -> tuple[LaneConfig, ...]:
        _check(
            (loc, f"duplicate lane id, first used at lanes.{first[0]}")
            for loc, first in _duplicates(((i, "id"), lane.id) for i, lane in enumerate(lanes))
        )
        return lanes

    @field_validator("bays")
    @classmethod
    def _unique_bay_ids(cls, bays: tuple[BayConfig, ...]) -> tuple[BayConfig, ...]:
        problems = [
            (loc, f"duplicate bay id, first used at bays.{first[0]}")
            for loc, first in _duplicates(((i, "id"), bay.id) for i, bay in enumerate(bays))
        ]
        units = (
            ((i, "sensor", "unit_id"), bay.sensor.unit_id)
            for i, bay in enumerate(bays)
            if isinstance(bay.sensor, ModbusSensor)
        )
        problems += [
            (loc, f"Modbus unit id already used on the bus by bays.{first[0]}")
            for loc, first in _duplicates(units)
        ]
        _check(problems)
        return bays

    @field_validator("tariffs")
    @classmethod
    def _lower_case_tariff_names(cls, tariffs: dict[str, RateTable]) -> dict[str, RateTable]:
        # An environment variable's name, the backend's pushed tariffs and `tariff quote
        # --tariff` are read in lower case: `Staff` would be a table none of them can reach.
        _check(((name,), f"a tariff name is lower case: write tariffs.{name.lower()}")
               for name in tariffs if name != name.lower())
        return tariffs

    @field_validator("signs")
    @classmethod
    def _signs_apart(cls, signs: tuple[SignConfig, ...]) -> tuple[SignConfig, ...]:
        """Ids unique; signs that share a line agree on its kind and settings and each has
        an address of its own on it."""
        problems = [(loc, f"duplicate sign id, first used at signs.{first[0]}")
                    for loc, first in _duplicates(((i, "id"), s.id) for i, s in enumerate(signs))]
        field = {"ascii": "address", "modbus": "unit_id"}
        problems += [(loc, f"address already used on {signs[int(loc[0])].port} by"
                           f" signs.{first[0]}")
                     for loc, first in _duplicates(((i, field[s.kind]), (s.port, s.station))
                                                   for i, s in enumerate(signs))]
        first_on: dict[str, int] = {}
        for i, sign in enumerate(signs):
            j = first_on.setdefault(sign.port, i)
            if (sign.kind, sign.line) != (signs[j].kind, signs[j].line):
                problems.append(((i, "port"), f"{sign.port} is signs.{j}'s line, with another"
                                 " kind or line settings (baudrate, parity, stopbits, timeout_ms)"))
        _check(problems)
        return signs

    @model_validator(mode="after")
    def _sign_scopes(self) -> Settings:
        """A sign counts bays that exist, and keeps off the detectors' bus."""
        names: dict[str, set[str]] = {"floor": {b.floor for b in self.bays},
                                      "zone": {b.zone for b in self.bays},
                                      "type": {str(b.type) for b in self.bays}}
        for level in self.levels:  # a level counted at its ramps has a count of its own
            names["floor"].add(level.id)
            names["zone"].add(level.zone or level.id)
        problems: list[tuple[Loc, str]] = []
        for i, sign in enumerate(self.signs):
            scope = sign.scope
            if scope.name is not None and scope.name not in names[scope.kind]:
                known = ", ".join(sorted(names[scope.kind])) or "none"
                problems.append((("signs", i, "shows"),
                                 f"no bay has {scope.kind} {scope.name!r} (known: {known})"))
            if self.bus is not None and sign.port == self.bus.port:
                problems.append((("signs", i, "port"), "the detector bus's port: a sign needs"
                                 " a line of its own (the bus master polls without pause)"))
        _check(problems)
        return self

    @model_validator(mode="after")
    def _cross_references(self) -> Settings:
        problems = [
            (loc, f"GPIO pin already used at {_dotted(first)}")
            for loc, first in _duplicates(self._gpio_pins())
        ]
        if self.gateway.default_tariff not in self.tariffs:
            known = ", ".join(sorted(self.tariffs)) or "none"
            problems.append((("gateway", "default_tariff"), f"no such tariff (defined: {known})"))
        problems += self._level_problems()
        _check(problems)
        return self

    def _level_problems(self) -> list[tuple[Loc, str]]:
        """Counted levels: ids and ramp ids unique; a ramp's other end a level, a floor or
        outside; no bay with no sensor on a counted level (the ramps count it); a quiet-hour
        correction only where bay sensors are to correct from."""
        levels = self.levels
        problems = [(loc, f"duplicate level id, first used at {_dotted(first)}")
                    for loc, first in _duplicates((("levels", i, "id"), lv.id)
                                                  for i, lv in enumerate(levels))]
        problems += [(loc, f"duplicate ramp id, first used at {_dotted(first)}")
                     for loc, first in _duplicates((("levels", i, "ramps", j, "id"), ramp.id)
                                                   for i, lv in enumerate(levels)
                                                   for j, ramp in enumerate(lv.ramps))]
        floors = {bay.floor for bay in self.bays} | {lv.id for lv in levels} | {OUTSIDE}
        sensed = {bay.floor for bay in self.bays if bay.sensor.kind != "none"}
        unsensed = {bay.floor: i for i, bay in enumerate(self.bays) if bay.sensor.kind == "none"}
        for i, level in enumerate(levels):
            for j, ramp in enumerate(level.ramps):
                for key, name in (("into", ramp.into), ("from", ramp.from_)):
                    if name is not None and name not in floors:
                        problems.append((("levels", i, "ramps", j, key), f"no level or floor"
                                         f" {name!r} (levels, bays' floors, or {OUTSIDE!r})"))
            if level.id in unsensed:
                problems.append((("bays", unsensed[level.id], "sensor"), f"floor {level.id!r}"
                                 " is counted at its ramps (levels): a bay there has a sensor, or"
                                 " is left out (the lanes' count would take its cars twice)"))
            if level.correct_at is not None and level.id not in sensed:
                problems.append((("levels", i, "correct_at"), f"level {level.id!r} has no bay"
                                 " sensors to correct its count from"))
        return problems

    def _gpio_pins(self) -> Iterator[tuple[Loc, int]]:
        for i, lane in enumerate(self.lanes):
            for key, pin in lane.gpio.pins.items():
                yield ("lanes", i, "gpio", key), pin
        for i, bay in enumerate(self.bays):
            if isinstance(bay.sensor, UltrasonicSensor):
                for key, pin in bay.sensor.pins.items():
                    yield ("bays", i, "sensor", key), pin
        if self.gpio.lot_full_lamp is not None:
            yield ("gpio", "lot_full_lamp"), self.gpio.lot_full_lamp
        for i, level in enumerate(self.levels):
            for j, ramp in enumerate(level.ramps):
                yield ("levels", i, "ramps", j, "loop_a"), ramp.loop_a
                yield ("levels", i, "ramps", j, "loop_b"), ramp.loop_b


# --- loading ------------------------------------------------------------------------------


class _VariablesSource(EnvSettingsSource):
    """`PARKING_GATEWAY__...` variables from a given mapping rather than `os.environ`.

    Serves both the environment and systemd credentials (files named like the variables).
    A prefixed name that is no setting is passed on under its own name, so that `extra="forbid"`
    reports it: pydantic-settings would otherwise drop it silently.
    """

    def __init__(self, variables: Mapping[str, str]) -> None:
        self._variables = variables
        super().__init__(Settings)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name.lower(): value for name, value in self._variables.items()}

    def prepare_field_value(
        self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool
    ) -> Any:
        try:
            return super().prepare_field_value(field_name, field, value, value_is_complex)
        except ValueError as exc:  # pydantic-settings' own error names neither variable nor cause
            variable = f"{ENV_PREFIX}{field_name.upper()}"
            message = f"it, or a variable below it, holds a table or a list that is not JSON: {exc}"
            raise ConfigError([ConfigProblem(variable, message)]) from None

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        prefix = ENV_PREFIX.lower()
        for name, value in self._variables.items():
            if not name.lower().startswith(prefix):
                continue
            field = name.lower().removeprefix(prefix).split(ENV_NESTED_DELIMITER)[0]
            if field not in Settings.model_fields:
                data[name] = value
        marked: dict[str, Any] = _as_environment_text(data)
        return marked


def _as_environment_text(value: Any) -> Any:
    """Every text in a source's tables and lists as `EnvironmentText`."""
    if isinstance(value, str):
        return EnvironmentText(value)
    if isinstance(value, dict):
        return {key: _as_environment_text(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_environment_text(item) for item in value]
    return value


def _variables_by_location(names: Iterable[str]) -> dict[tuple[str, ...], str]:
    """Each `PARKING_GATEWAY__A__B` variable under the location it sets, ("a", "b")."""
    prefix = ENV_PREFIX.lower()
    return {tuple(name.lower().removeprefix(prefix).split(ENV_NESTED_DELIMITER)): name
            for name in names if name.lower().startswith(prefix)}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = _read_text(path, MAX_CONFIG_BYTES)
    except ValueError as exc:
        raise ConfigError([ConfigProblem("<file>", str(exc))]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # the message ends "(at line L, column C)"
        raise ConfigError([ConfigProblem("<toml>", f"syntax error: {exc}")]) from None


def _read_credentials(directory: Path) -> dict[str, str]:
    """systemd credentials (`LoadCredential=PARKING_GATEWAY__SYNC__MQTT__PASSWORD:...`)."""
    try:
        files = [file for file in directory.iterdir() if file.name.upper().startswith(ENV_PREFIX)]
        return {file.name: _read_secret_file(file) for file in files}
    except OSError as exc:
        message = f"cannot read $CREDENTIALS_DIRECTORY {directory}: {exc.strerror or exc}"
        raise ConfigError([ConfigProblem("<credentials>", message)]) from None
    except ValueError as exc:
        raise ConfigError([ConfigProblem("<credentials>", str(exc))]) from None


def load_settings(path: Path, env: Mapping[str, str] | None = None) -> Settings:
    """Load and validate a lot's settings: `env` (default `os.environ`) wins over the file.

    Priority, highest first: `PARKING_GATEWAY__...` environment variables, systemd credentials
    of the same names in `$CREDENTIALS_DIRECTORY`, the TOML file. Raises `ConfigError`.
    """
    environ = os.environ if env is None else env
    file = InitSettingsSource(Settings, _read_toml(path))
    sources: list[PydanticBaseSettingsSource] = [_VariablesSource(environ)]
    variables = _variables_by_location(environ)
    if credentials := environ.get("CREDENTIALS_DIRECTORY"):
        named = _read_credentials(Path(credentials))
        sources.append(_VariablesSource(named))
        variables = _variables_by_location(named) | variables
    sources.append(file)
    try:
        # The file and the environment are per call, which the class-level
        # settings_customise_sources hook cannot express; _build_sources takes them as given.
        return Settings(_build_sources=(tuple(sources), {}))
    except ValidationError as exc:
        # `from None`: the pydantic error, printed in a traceback, would show the inputs.
        raise ConfigError(_problems_from(exc, variables)) from None


# --- summary ------------------------------------------------------------------------------


def _counts(values: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(values).items()))


def describe(settings: Settings) -> dict[str, Any]:
    """What `parking-gateway config check` prints: the shape of the lot, never a secret."""
    mqtt, http = settings.sync.mqtt, settings.sync.http
    bays = settings.bays
    return {
        "lot_id": settings.gateway.lot_id,
        "gateway_id": settings.gateway.gateway_id,
        "timezone": settings.gateway.timezone,
        "lanes": {
            "total": len(settings.lanes),
            "by_direction": _counts(lane.direction for lane in settings.lanes),
            "cameras": _counts(lane.camera.kind for lane in settings.lanes),
        },
        "bays": {
            "total": len(bays),
            "by_floor": _counts(bay.floor for bay in bays),
            "by_zone": _counts(bay.zone for bay in bays),
            "by_type": _counts(bay.type for bay in bays),
            "by_sensor": _counts(bay.sensor.kind for bay in bays),
        },
        "tariffs": {"names": sorted(settings.tariffs), "default": settings.gateway.default_tariff},
        "journal": {
            "path": str(settings.journal.path),
            "max_size_mb": settings.journal.max_size_mb,
            "retention_days": settings.journal.retention_days,
            "startup_check": settings.journal.startup_check,
        },
        "sync": {
            "mqtt": {
                "broker": f"{mqtt.host}:{mqtt.port}",
                "tls": mqtt.tls is not None,
                "username": mqtt.username,
                "password_set": mqtt.password is not None,
            },
            "http": {
                "base_url": None if http.base_url is None else str(http.base_url),
                "token_set": http.token is not None,
            },
            "command_hmac_key_set": settings.sync.command_hmac_key is not None,
        },
        "logging": {"level": settings.logging.level, "format": settings.logging.format},
        # Where a technician finds the daemon, and what its hardware is.
        "control": {"socket_path": str(settings.control.socket_path),
                    "group": settings.control.group},
        "http": {"enabled": settings.http.enabled, "listen": settings.http.listen,
                 "tls": settings.http.tls is not None,
                 "anonymous_viewer": settings.http.anonymous_viewer,
                 "accounts": _counts(a.role for a in settings.http.accounts.values())},
        "lpr": {"enabled": settings.lpr.enabled, "formats": list(settings.lpr.formats)},
        "bus": None if settings.bus is None else {
            "port": settings.bus.port, "baudrate": settings.bus.baudrate,
            "nodes": sum(1 for bay in bays if bay.sensor.kind == "modbus")},
    }
