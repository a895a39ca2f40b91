"""An offline Kaggle kernel for code competitions: its script and metadata, the two datasets it reads, the push.

`write_kernel` fills <workspace>/kernel/ with three folders, written as one (atomically):

    notebook/  kernel-metadata.json and compkit_kernel.py: what `kaggle kernels push` sends
    wheels/    compkit's wheel (and any extra wheels) with dataset-metadata.json: a Kaggle dataset
    weights/   competition.toml, compkit-kernel.json and workspace/ (folds, trained checkpoints, tuned
               parameters and their Optuna study) with dataset-metadata.json: a Kaggle dataset

The kernel runs with internet off and a GPU: the script installs the wheels offline, then calls
compkit.kernel_run.run_kernel on the attached competition and weights. The two datasets are uploaded with the
kaggle client (`kaggle datasets create -p <folder> --dir-mode zip`, then `kaggle datasets version`);
`push_kernel` pushes the notebook and refuses to call it done while Kaggle cannot attach its sources.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import compkit
from compkit.config import CompetitionConfig, is_trained
from compkit.ensemble.final import final_csv_path
from compkit.errors import BackendUnavailable, ConfigError, KaggleError
from compkit.kaggle_client import RetryPolicy, connect, http_status
from compkit.submit.kernel_run import SUBMISSION_FILE, WEIGHTS_CONFIG, WEIGHTS_MARKER, WEIGHTS_WORKSPACE
from compkit.submit.ledger import add_row, update_row
from compkit.submit.upload import artifact_cv, kaggle_name
from compkit.tuning.study import read_tuned
from compkit.workspace import KernelFolder, Workspace, atomic_path, file_sha256, manifest_path, write_json, write_text

KERNEL_FILE = "compkit_kernel.py"
KERNEL_METADATA = "kernel-metadata.json"
DATASET_METADATA = "dataset-metadata.json"
KERNEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*/[a-z0-9][a-z0-9-]{4,49}")
DATASET_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*/[a-z0-9][a-z0-9-]{2,49}")

SCRIPT = '''"""compkit offline kernel for {slug}: written by `compkit submit --kernel` (change the workspace, not this).

Kaggle runs it without internet. It installs compkit from the dataset {wheels}, takes the trained
checkpoints and tuned parameters from the dataset {weights}, embeds the test set of {competition} with
them and writes {submission}. While the visible test set is the placeholder (at most {placeholder_rows} rows;
Kaggle swaps in the hidden one when it scores the notebook), the training set stands in for it and is scored.
"""

import subprocess
import sys
from pathlib import Path

INPUT = Path("/kaggle/input")
WORKING = Path("/kaggle/working")
WHEELS = {wheels_slug!r}
WEIGHTS = {weights_slug!r}
COMPETITION = {competition!r}
PLACEHOLDER_ROWS = {placeholder_rows!r}


def attached(name):
    """Return the folder where Kaggle mounted the input `name` (directly under INPUT or a level or two deeper)."""
    for pattern in (name, "*/" + name, "*/*/" + name):
        found = sorted(path for path in INPUT.glob(pattern) if path.is_dir())
        if found:
            return found[0]
    sys.exit(f"{{name}} is not attached to this notebook: add it as an input (found: "
             f"{{', '.join(sorted(path.name for path in INPUT.iterdir()))}})")


wheels = sorted(str(path) for path in attached(WHEELS).glob("*.whl"))
subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--quiet", *wheels], check=True)

from compkit.submit.kernel_run import run_kernel  # noqa: E402  (installed just above)

result = run_kernel(weights_dir=attached(WEIGHTS), competition_dir=attached(COMPETITION), working_dir=WORKING,
                    placeholder_rows=PLACEHOLDER_ROWS, log=print)
print(result.summary())
'''


@dataclass(frozen=True)
class KernelSpec:
    """Where the kernel and its datasets live on Kaggle, and how the kernel tells the placeholder test set."""

    kernel_id: str
    wheels_dataset: str
    weights_dataset: str
    placeholder_rows: int = 3
    extra_wheels: tuple[Path, ...] = ()


@dataclass(frozen=True)
class KernelPush:
    ref: str
    url: str
    version: int | None


def kernel_spec(
    *,
    kernel_id: str | None,
    wheels_dataset: str | None = None,
    weights_dataset: str | None = None,
    placeholder_rows: int = 3,
    extra_wheels: Sequence[Path] = (),
    slug: str,
) -> KernelSpec:
    """Return a checked spec; the datasets default to OWNER/compkit-wheels and OWNER/compkit-<slug>-weights."""
    if not kernel_id:
        raise ConfigError("--kernel needs --kernel-id OWNER/SLUG: the kernel's name on Kaggle (OWNER is your "
                          "Kaggle username)")
    if not KERNEL_ID.fullmatch(kernel_id):
        raise ConfigError(f"--kernel-id must be OWNER/SLUG with a slug of 5 to 50 lowercase letters, digits or "
                          f"hyphens, got {kernel_id!r}")
    owner = kernel_id.split("/")[0]
    wheels_dataset = wheels_dataset or f"{owner}/compkit-wheels"
    weights_dataset = weights_dataset or f"{owner}/compkit-{slug}-weights"
    for option, value in (("--wheels-dataset", wheels_dataset), ("--weights-dataset", weights_dataset)):
        if not DATASET_ID.fullmatch(value):
            raise ConfigError(f"{option} must be OWNER/SLUG with a slug of 3 to 50 lowercase letters, digits or "
                              f"hyphens, got {value!r}")
    if placeholder_rows < 0:
        raise ConfigError(f"--placeholder-rows must be >= 0, got {placeholder_rows}")
    for wheel in extra_wheels:
        if not Path(wheel).is_file() or not str(wheel).endswith(".whl"):
            raise ConfigError(f"--wheel {wheel}: not a .whl file")
    return KernelSpec(kernel_id, wheels_dataset, weights_dataset, placeholder_rows, tuple(map(Path, extra_wheels)))


def write_kernel(
    config: CompetitionConfig, workspace: Workspace, spec: KernelSpec, *, config_path: Path,
    overrides: Sequence[str] = (),
) -> KernelFolder:
    """Write the kernel folder (notebook, wheels and weights) for `config`'s trained and tuned workspace.

    The kernel runs the config file at `config_path` with the same `overrides` and only `config`'s models.
    """
    competition = kaggle_name(config)
    weights = weights_files(config, workspace)
    with atomic_path(workspace.kernel_dir) as staging:
        folder = KernelFolder(staging)
        _write_notebook(folder.notebook, config, spec, competition)
        _write_wheels(folder.wheels, spec)
        for relative in weights:
            _link_or_copy(workspace.root / relative, folder.weights / WEIGHTS_WORKSPACE / relative)
        shutil.copyfile(config_path, folder.weights / WEIGHTS_CONFIG)
        write_json(folder.weights / WEIGHTS_MARKER, {
            "slug": config.slug, "competition": competition, "models": [m.name for m in config.models],
            "overrides": list(overrides), "compkit_version": compkit.__version__,
        })
        _write_dataset_metadata(folder.weights, spec.weights_dataset)
    return workspace.kernel_folder


def weights_files(config: CompetitionConfig, workspace: Workspace) -> list[Path]:
    """Return the workspace files (relative paths) the kernel needs, refusing missing or stale ones."""
    if not config.models:
        raise ConfigError(f"{config.slug} declares no models: nothing for a kernel to predict with")
    wanted = [workspace.folds_path, manifest_path(workspace.folds_path), workspace.study_storage]
    for model in config.models:
        read_tuned(config, model, workspace)  # raises, with the command to run, when missing or stale
        wanted += [workspace.tuned_params(model.name), manifest_path(workspace.tuned_params(model.name))]
        if is_trained(model):
            for fold in workspace.fold_range():
                run_dir = workspace.model_dir(model.name, fold)
                resume = workspace.resume_checkpoint(model.name, fold)
                wanted += [path for path in sorted(run_dir.glob("*")) if path.is_file() and path != resume]
                wanted.append(manifest_path(run_dir))
    ensemble = workspace.tuned_ensemble
    if ensemble.is_file():
        wanted += [ensemble, manifest_path(ensemble)]
    missing = [path for path in wanted if not path.is_file()]
    if missing:
        raise ConfigError(f"{missing[0]}: missing, the kernel needs it (run: compkit run -c {config.slug})")
    return [path.relative_to(workspace.root) for path in wanted]


def build_compkit_wheel(target: Path) -> Path:
    """Return compkit's wheel, built into `target` from the source checkout compkit runs from (no network)."""
    root = Path(compkit.__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise BackendUnavailable("compkit is not running from a source checkout, so its wheel cannot be built: "
                                 "pass compkit's wheel with --wheel")
    command = [sys.executable, "-m", "pip", "wheel", str(root), "--no-deps", "--quiet", "-w", str(target)]
    if importlib.util.find_spec("hatchling") is not None:
        command.append("--no-build-isolation")  # the build backend is already here: build offline
    built = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(target.glob("compkit-*.whl"))
    if built.returncode != 0 or not wheels:
        reason = (built.stderr.strip().splitlines() or ["no wheel written"])[-1]
        raise BackendUnavailable(f"building compkit's wheel failed ({reason}): pass compkit's wheel with --wheel")
    return wheels[0]


def push_kernel(
    config: CompetitionConfig,
    workspace: Workspace,
    spec: KernelSpec,
    *,
    message: str | None = None,
    retry: RetryPolicy | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> KernelPush:
    """Push the written notebook with the official client and record it in the ledger (failures too).

    Raises KaggleError unless Kaggle saved it and can attach every source it names.
    """
    competition = kaggle_name(config)
    folder = workspace.kernel_folder
    script = folder.notebook / KERNEL_FILE
    if not script.is_file():
        raise ConfigError(f"{script}: missing: write the kernel first (compkit submit -c {config.slug} --kernel)")
    final = final_csv_path(config, workspace)[1]
    row_id = add_row(workspace, competition=competition, kind="kernel", model=final, file=spec.kernel_id,
                     sha256=file_sha256(script), message=message if message is not None else f"kernel {spec.kernel_id}",
                     cv_score=artifact_cv(config, workspace, final), status="uploading")
    try:
        pushed = _push(folder, spec, competition=competition, retry=retry, log=log)
    except KeyboardInterrupt:
        update_row(workspace, row_id, status="interrupted", error="interrupted during the push")
        raise
    except Exception as error:
        update_row(workspace, row_id, status="failed", error=str(error) or type(error).__name__)
        raise
    update_row(workspace, row_id, status="pushed", ref=pushed.version or "")
    return pushed


def _push(
    folder: KernelFolder, spec: KernelSpec, *, competition: str, retry: RetryPolicy | None, log: Callable[[str], None]
) -> KernelPush:
    connection = connect(slug=competition, retry=retry, log=log)
    try:
        response = connection.call(functools.partial(connection.api.kernels_push, str(folder.notebook)),
                                   slug=competition)
    except KaggleError as error:
        if http_status(error.__cause__) == 403:
            raise KaggleError(f"Kaggle refused to push kernel {spec.kernel_id} (HTTP 403): its owner must be the "
                              f"account of the credentials from {connection.credentials}") from error
        raise
    if response.error:
        raise KaggleError(f"Kaggle refused kernel {spec.kernel_id}: {response.error}")
    unknown = [*response.invalid_dataset_sources, *response.invalid_competition_sources]
    if unknown:
        raise KaggleError(
            f"Kaggle saved kernel {spec.kernel_id} (version {response.version_number}) but cannot attach "
            f"{', '.join(unknown)}: upload the datasets (kaggle datasets create -p {folder.wheels} --dir-mode zip, "
            f"and the same for {folder.weights}; `kaggle datasets version` once they exist), accept the rules of "
            f"{competition}, then push again"
        )
    return KernelPush(response.ref or "", response.url or "", response.version_number)


def _write_notebook(target: Path, config: CompetitionConfig, spec: KernelSpec, competition: str) -> None:
    kernel_slug = spec.kernel_id.split("/")[1]
    write_json(target / KERNEL_METADATA, {
        "id": spec.kernel_id,
        "title": kernel_slug.replace("-", " "),  # Kaggle derives the slug from the title
        "code_file": KERNEL_FILE,
        "language": "python",
        "kernel_type": "script",
        "is_private": True,
        "enable_gpu": True,
        "enable_tpu": False,
        "enable_internet": False,
        "dataset_sources": [spec.wheels_dataset, spec.weights_dataset],
        "competition_sources": [competition],
        "kernel_sources": [],
        "model_sources": [],
    })
    write_text(target / KERNEL_FILE, SCRIPT.format(
        slug=config.slug, competition=competition, wheels=spec.wheels_dataset, weights=spec.weights_dataset,
        wheels_slug=spec.wheels_dataset.split("/")[1], weights_slug=spec.weights_dataset.split("/")[1],
        placeholder_rows=spec.placeholder_rows, submission=SUBMISSION_FILE,
    ))


def _write_wheels(target: Path, spec: KernelSpec) -> None:
    target.mkdir(parents=True)
    for wheel in spec.extra_wheels:
        shutil.copyfile(wheel, target / wheel.name)
    if not any(wheel.name.startswith("compkit-") for wheel in spec.extra_wheels):
        build_compkit_wheel(target)
    _write_dataset_metadata(target, spec.wheels_dataset)


def _write_dataset_metadata(target: Path, dataset_id: str) -> None:
    title = dataset_id.split("/")[1].replace("-", " ")
    write_json(target / DATASET_METADATA, {
        "title": title if len(title) >= 6 else f"{title} compkit", "id": dataset_id,
        "licenses": [{"name": "CC0-1.0"}],
    })


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard-link `source` at `target` (checkpoints can be large), copying where links are not possible."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
