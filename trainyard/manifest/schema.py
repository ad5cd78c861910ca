"""The job manifest v1: what a user submits, validated before anything runs.

Every model forbids unknown fields so that a typo fails the submission instead of being
ignored. Paths into storage are confined to the tenant's storage. Every problem is reported
with the dotted path of the field it concerns (see `ManifestError`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from trainyard.jobs.layout import RunMode
from trainyard.limits import (
    ECHO_CHARS,
    MAX_CHECKPOINTS_KEPT,
    MAX_CPUS,
    MAX_DURATION_SECONDS,
    MAX_GPUS,
    MAX_LEARNERS,
    MAX_MEMORY_BYTES,
    LimitError,
    check_document,
    field_name,
    key_length_problem,
    shorten,
)
from trainyard.manifest.sweep import (
    ParameterName,
    ParameterValue,
    SweepSpec,
    fill_placeholders,
    placeholder_problems,
)
from trainyard.manifest.units import format_bytes, parse_cpu, parse_duration, parse_memory
from trainyard.safe_yaml import load_yaml
from trainyard.storage.base import check_key

MAX_NAME_LENGTH = 40
MAX_USER_ERROR_RETRIES = 3
#: The most retries of platform faults, preemptions and hangs a job may have in its whole life.
MAX_TOTAL_RETRIES = 100
_DNS_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_EXPECTATION_RE = re.compile(r"expect_[a-z0-9_]+")
_URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:/")
_ENCODED_SEPARATOR_RE = re.compile(r"%(2e|2f|5c)", re.IGNORECASE)
_STORAGE_PATH_HINT = "use a relative path inside the tenant's storage, such as datasets/digits"


class ManifestError(ValueError):
    """A manifest is invalid: carries one (field path, message) pair per problem.

    The field path is dotted with list indexes (`data.expectations.0.type`); it is empty for
    problems with the document as a whole (YAML syntax, not a mapping).
    """

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__(self.problems)

    def __str__(self) -> str:
        return "\n".join(
            f"{path}: {message}" if path else message for path, message in self.problems
        )


def check_dns_label(value: str) -> str:
    if len(value) > MAX_NAME_LENGTH or not _DNS_LABEL_RE.fullmatch(value):
        raise ValueError(
            f"invalid name {shorten(value)}: use a lowercase DNS label of at most "
            f"{MAX_NAME_LENGTH} characters (a-z, 0-9 and '-', starting and ending with a letter "
            "or digit), such as digits-mlp"
        )
    return value


def confine_storage_path(value: str) -> str:
    """Normalise a path inside the tenant's storage ("./datasets/x/" -> "datasets/x").

    Normalises first (Unicode NFKC, so that look-alikes such as fullwidth dots become the
    characters a filesystem or server may turn them into), then rejects anything that could
    reach outside the tenant's storage: URIs (another bucket, a local file), absolute paths,
    '..' segments, backslashes, percent-encoded dots and slashes, and control characters.
    """
    normal = unicodedata.normalize("NFKC", value)
    if _URI_RE.match(normal) or "://" in normal:
        raise ValueError(
            f"{shorten(value)} is a URI: {_STORAGE_PATH_HINT}, without a scheme or bucket"
        )
    if normal.startswith(("/", "~")):
        raise ValueError(f"{shorten(value)} is an absolute path: {_STORAGE_PATH_HINT}")
    if "\\" in normal:
        raise ValueError(f"{shorten(value)} contains a backslash: separate segments with '/'")
    if _ENCODED_SEPARATOR_RE.search(normal):
        raise ValueError(
            f"{shorten(value)} contains a percent-encoded '.', '/' or backslash: write the "
            "characters as they are"
        )
    if any(unicodedata.category(char) == "Cc" for char in normal):
        raise ValueError(f"{shorten(value)} contains a control character: {_STORAGE_PATH_HINT}")
    segments = [segment for segment in normal.split("/") if segment not in ("", ".")]
    if ".." in segments:
        raise ValueError(
            f"{shorten(value)} leaves the tenant's storage ('..'): {_STORAGE_PATH_HINT}"
        )
    if not segments:
        raise ValueError(f"{shorten(value)} names no directory: {_STORAGE_PATH_HINT}")
    key = "/".join(segments)
    if (problem := key_length_problem(key)) is not None:
        raise ValueError(f"{shorten(value)} {problem}: {_STORAGE_PATH_HINT}")
    return check_key(key)


DnsLabel = Annotated[str, AfterValidator(check_dns_label)]
StoragePath = Annotated[str, AfterValidator(confine_storage_path)]
NonEmptyStr = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
MemoryBytes = Annotated[
    int,
    BeforeValidator(parse_memory),
    Field(gt=0, le=MAX_MEMORY_BYTES),
    PlainSerializer(format_bytes, return_type=str, when_used="json"),
]
Cores = Annotated[float, BeforeValidator(parse_cpu), Field(gt=0, le=MAX_CPUS)]
Seconds = Annotated[float, BeforeValidator(parse_duration), Field(gt=0, le=MAX_DURATION_SECONDS)]


class _Strict(BaseModel):
    # allow_inf_nan=False: NaN passes no comparison, so a threshold of NaN would gate nothing.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class FrameworkName(StrEnum):
    PYTORCH = "pytorch"
    TENSORFLOW = "tensorflow"
    JAX = "jax"
    CUSTOM = "custom"


class Framework(_Strict):
    """The learner image: from the registry by name and version, or an explicit image."""

    name: FrameworkName
    version: NonEmptyStr
    # validate_default: a missing image must still reach the custom-framework check.
    image: NonEmptyStr | None = Field(default=None, validate_default=True)

    @field_validator("version", mode="before")
    @classmethod
    def _version_is_quoted(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise ValueError(
                f'quote the version, such as version: "2.13": unquoted, YAML reads it as the '
                f"number {value}"
            )
        return value

    @field_validator("image", mode="after")
    @classmethod
    def _custom_needs_image(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("name") == FrameworkName.CUSTOM:
            raise ValueError(
                "a custom framework needs an image that follows the learner environment "
                "contract, such as registry.example.com/team/learner:1.0"
            )
        return value


class CodeSource(_Strict):
    """Where the job's code comes from: exactly one of `path` or `uri`."""

    path: NonEmptyStr | None = Field(
        default=None,
        description="local directory or code archive (.tar, .tar.gz, .tgz, .zip), relative to "
        "the manifest; `trainyard submit` packages it",
    )
    uri: StoragePath | None = Field(
        default=None,
        description="key prefix in the tenant's storage, or the key of a code archive there",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> CodeSource:
        if (self.path is None) == (self.uri is None):
            raise ValueError(
                "give exactly one of path (a local directory that `trainyard submit` packages) "
                "or uri (a prefix in the tenant's storage)"
            )
        return self


class Resources(_Strict):
    gpus: int = Field(default=0, ge=0, le=MAX_GPUS, description="GPUs of each learner")
    gpu_type: NonEmptyStr | None = None
    cpus: Cores = 1.0
    memory: MemoryBytes = 2 * 2**30
    learners: int = Field(default=1, ge=1, le=MAX_LEARNERS)

    @field_validator("gpu_type", mode="after")
    @classmethod
    def _gpu_type_needs_gpus(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("gpus") == 0:
            raise ValueError("gpu_type needs gpus > 0: set resources.gpus or remove gpu_type")
        return value

    def learners_in(self, mode: RunMode) -> int:
        """How many learners a run of `mode` starts: all of them to train, one to evaluate."""
        return self.learners if mode is RunMode.TRAIN else 1


class Expectation(_Strict):
    """One great-expectations check run on the staged data before any learner starts."""

    type: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    files: NonEmptyStr = Field(default="*.csv", description="glob of staged files it applies to")

    @field_validator("type", mode="after")
    @classmethod
    def _is_expectation_name(cls, value: str) -> str:
        if not _EXPECTATION_RE.fullmatch(value):
            raise ValueError(
                f"invalid expectation {shorten(value)}: use a great-expectations expectation "
                "name in snake_case starting with expect_, such as "
                "expect_column_values_to_not_be_null"
            )
        return value


class DataSpec(_Strict):
    path: StoragePath
    expectations: list[Expectation] | None = None


class CheckpointSpec(_Strict):
    interval: Seconds = 60.0
    keep: int = Field(default=3, ge=1, le=MAX_CHECKPOINTS_KEPT)


class EvaluationSpec(_Strict):
    command: NonEmptyStr
    metric: NonEmptyStr
    threshold: float | None = None
    higher_is_better: bool = True
    min_improvement: float = Field(
        default=0.0,
        ge=0,
        description="how much better than the production version a new model must be to replace it",
    )


#: Airflow's cron presets (`@daily`, ...) besides five-field cron expressions.
CRON_PRESETS = ("@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")
_CRON_HINT = "use a cron expression such as '0 3 * * *' or a preset (@hourly, @daily, ...)"


def _check_cron(value: str) -> str:
    from croniter import croniter

    if value in CRON_PRESETS or (len(value.split()) == 5 and croniter.is_valid(value)):
        return value
    raise ValueError(f"invalid schedule {shorten(value)}: {_CRON_HINT}")


class DataTrigger(_Strict):
    """Retrain whenever new data is registered under this path of the tenant's storage."""

    on_new_data: StoragePath


def _parse_schedule(value: Any) -> str | DataTrigger:
    """A cron expression or preset, or `{on_new_data: <path>}`; errors name `schedule` only."""
    if isinstance(value, DataTrigger):
        return value
    if isinstance(value, str):
        return _check_cron(value)
    if isinstance(value, Mapping) and set(value) == {"on_new_data"}:
        path = value["on_new_data"]
        if isinstance(path, str):
            return DataTrigger(on_new_data=confine_storage_path(path))
    raise ValueError(
        f"invalid schedule {shorten(value)}: {_CRON_HINT}, or a data trigger "
        "{on_new_data: <path in the tenant's storage>}"
    )


Schedule = Annotated[
    str | DataTrigger,
    PlainValidator(_parse_schedule),
    PlainSerializer(lambda value: value.model_dump() if isinstance(value, DataTrigger) else value),
]


class RetrySpec(_Strict):
    """Retries the job opts into beyond the platform's own (faults and preemptions)."""

    user_errors: int = Field(
        default=0,
        ge=0,
        le=MAX_USER_ERROR_RETRIES,
        description="retry user code that failed (e.g. a flaky data source), at most "
        f"{MAX_USER_ERROR_RETRIES} times; the default fails fast",
    )
    total: int = Field(
        default=MAX_TOTAL_RETRIES,
        ge=0,
        le=MAX_TOTAL_RETRIES,
        description="retries of platform faults, preemptions and hangs over the job's whole "
        "life, progress or not (each class also fails after a few in a row without a new "
        f"checkpoint); at most {MAX_TOTAL_RETRIES}",
    )


class JobManifest(_Strict):
    name: DnsLabel
    description: str = ""
    tenant: DnsLabel
    framework: Framework
    code: CodeSource
    command: NonEmptyStr
    data: DataSpec | None = None
    resources: Resources = Field(default_factory=Resources)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    evaluation: EvaluationSpec | None = None
    retries: RetrySpec = Field(default_factory=RetrySpec)
    schedule: Schedule | None = Field(
        default=None,
        description="retrain on a cron schedule or when new data lands; only for manifests in "
        "the deployment's scheduled-jobs folder",
    )
    watchdog: Seconds | None = Field(
        default=None,
        description="once training has shown progress, stop it as hung after this long "
        "without a new metric row or checkpoint (default: the tenant's default_watchdog)",
    )
    watchdog_startup: Seconds | None = Field(
        default=None,
        description="how long training may take to show its first metric row or checkpoint "
        "(imports, data loading, the first epoch) before it is stopped as hung at start-up "
        "(default: the tenant's default_watchdog_startup)",
    )
    max_runtime: Seconds | None = Field(
        default=None,
        description="learner time the job may use over all its attempts (paused and queued "
        "time not counted); then it stops with a final checkpoint and fails as deadline "
        "(default: the tenant's default_max_runtime)",
    )
    max_queued: Seconds | None = Field(
        default=None,
        description="how long the job may wait for its tenant's quota before its learners "
        "first start; then it fails as deadline (default: the tenant's default_max_queued)",
    )
    hyperparameters: dict[ParameterName, ParameterValue] = Field(
        default_factory=dict,
        description="values the commands name as {name} placeholders, also given to the "
        "learners as TRAINYARD_PARAM_<NAME> (a sweep's trial gets the values it drew here)",
    )
    sweep: SweepSpec | None = Field(
        default=None,
        description="search these parameters instead: each trial is a job of its own",
    )

    def filled(self, command: str) -> str:
        """`command` (the training or the evaluation command) with the hyperparameters filled
        in; a manifest without hyperparameters or a sweep keeps its braces as written."""
        if not (self.hyperparameters or self.sweep):
            return command
        return fill_placeholders(command, self.hyperparameters)

    def placeholder_problems(self) -> list[tuple[str, str]]:
        """(field, problem) for each placeholder no parameter gives, and each parameter both
        fixed and swept. Only a manifest with hyperparameters or a sweep has placeholders."""
        if not (self.hyperparameters or self.sweep):
            return []
        swept = set(self.sweep.parameters) if self.sweep else set()
        known = set(self.hyperparameters) | swept
        problems = [
            (f"sweep.parameters.{name}", "is also in hyperparameters: remove it from one of them")
            for name in sorted(swept & set(self.hyperparameters))
        ]
        problems += [("command", problem) for problem in placeholder_problems(self.command, known)]
        if self.evaluation is not None:
            problems += [
                ("evaluation.command", problem)
                for problem in placeholder_problems(self.evaluation.command, known)
            ]
        if self.sweep is not None and self.schedule is not None:
            problems.append(
                ("sweep", "a scheduled job cannot sweep: run the sweep with trainyard submit")
            )
        return problems


def _strip_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, UnionType):
        members = [arg for arg in get_args(annotation) if arg is not NoneType]
        if len(members) == 1:
            return members[0]
    return annotation


def _model_of(annotation: Any) -> type[BaseModel] | None:
    annotation = _strip_optional(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _tagged_member(annotation: Any, discriminator: str, tag: str) -> type[BaseModel] | None:
    for member in get_args(annotation):
        field = member.model_fields.get(discriminator) if _model_of(member) else None
        if field is not None and (field.default == tag or tag in get_args(field.annotation)):
            return member
    return None


def _element_annotation(annotation: Any) -> tuple[Any, str | None]:
    """A list's or dict's element type, and its union's discriminator if it has one
    (`Annotated[A | B, Field(discriminator=...)]`)."""
    if get_origin(annotation) is Annotated:
        inner, *metadata = get_args(annotation)
        for info in metadata:
            if isinstance(getattr(info, "discriminator", None), str):
                return inner, info.discriminator
        return inner, None
    return annotation, None


def _describe_location(
    model: type[BaseModel], loc: tuple[int | str, ...]
) -> tuple[str, type[BaseModel] | None]:
    """Render a pydantic error location as a dotted field path.

    Also returns the model owning the last element (to list its fields), and drops the tags
    pydantic inserts for discriminated unions, which are not fields a user wrote.
    """
    path: list[str] = []
    current: Any = model
    discriminator: str | None = None
    owner: type[BaseModel] | None = None
    for part in loc:
        if part == "[key]":  # pydantic's mark of a dict key that failed: the key names it
            continue
        if discriminator and isinstance(part, str):
            member = _tagged_member(current, discriminator, part)
            if member is not None:
                current, discriminator = member, None
                continue
        path.append(field_name(part))
        owner = _model_of(current)
        if owner is not None and isinstance(part, str):
            field = owner.model_fields.get(part)
            current = field.annotation if field else None
            discriminator = (
                field.discriminator if field and isinstance(field.discriminator, str) else None
            )
        else:
            args = get_args(_strip_optional(current))
            current, discriminator = _element_annotation(args[-1] if args else None)
            owner = None
    return ".".join(path), owner


_LONG_QUOTE_RE = re.compile(rf"'([^']{{{ECHO_CHARS + 1},}})'")


def validation_problems(error: ValidationError, model: type[BaseModel]) -> list[tuple[str, str]]:
    """Turn a pydantic error on `model` into (field path, message) pairs a user can act on."""
    problems = []
    for detail in error.errors():
        path, owner = _describe_location(model, detail["loc"])
        kind = detail["type"]
        if kind == "extra_forbidden":
            allowed = ", ".join(owner.model_fields) if owner else "none"
            message = f"field is not allowed here; allowed fields: {allowed}"
        elif kind == "missing":
            message = "required field is missing"
        elif kind in ("value_error", "assertion_error"):
            message = str(detail["ctx"]["error"])
        else:
            # pydantic quotes some inputs in its message (a union's tag): cut those short too
            message = _LONG_QUOTE_RE.sub(lambda quoted: shorten(quoted[1]), detail["msg"])
            if isinstance(detail["input"], str | int | float | bool | NoneType):
                message += f" (got {shorten(detail['input'])})"
        problems.append((path, message))
    return problems


def load_document(source: object, what: str) -> dict[str, Any]:
    """Read YAML/JSON text (or take a mapping) into a dict within the limits (see
    trainyard.limits), as a ManifestError naming the field or the document if impossible."""
    try:
        document = source if isinstance(source, Mapping) else _parse_text(source, what)
        if not isinstance(document, Mapping):
            got = "an empty document" if document is None else f"a {type(document).__name__}"
            raise ManifestError(
                [("", f"{what} must be a mapping of fields such as name, got {got}")]
            )
        check_document(document)
    except LimitError as error:
        raise ManifestError([(error.path, error.message)]) from error
    return dict(document)


def _parse_text(source: object, what: str) -> Any:
    if not isinstance(source, str):
        raise ManifestError(
            [("", f"{what} must be YAML or JSON text, or a mapping; got a {type(source).__name__}")]
        )
    try:
        return load_yaml(source)
    except yaml.YAMLError as error:
        where = ""
        mark = getattr(error, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(error, "problem", None) or str(error)
        raise ManifestError(
            [("", f"invalid YAML{where}: {problem}; check the indentation and quoting")]
        ) from error


def parse_manifest(source: str | Mapping[str, Any]) -> JobManifest:
    """Validate a manifest given as YAML or JSON text, or as a mapping (e.g. a DAG run conf).

    Raises:
        ManifestError: naming each invalid field, or the document; nothing else.
    """
    document = load_document(source, "the manifest")
    try:
        manifest = JobManifest.model_validate(document)
    except ValidationError as error:
        raise ManifestError(validation_problems(error, JobManifest)) from error
    if problems := manifest.placeholder_problems():
        raise ManifestError(problems)
    return manifest


def read_manifest_file(path: Path) -> JobManifest:
    """Validate the manifest in a file; problems reading it name the file.

    Raises:
        ManifestError: naming the file, or each invalid field.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ManifestError(
            [("", f"{path} is not UTF-8 text ({error.reason}): save the manifest as UTF-8")]
        ) from error
    except OSError as error:
        raise ManifestError(
            [("", f"cannot read {path}: {error.strerror or error}; check the file name")]
        ) from error
    return parse_manifest(text)
