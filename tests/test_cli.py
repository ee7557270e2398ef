"""What the ``slac`` command does with errors: a mistake in the request is one line and exit status 2; a
failure (CUDA out of memory, an NCCL error, a bug) keeps its traceback and exits with status 1."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from slac.cli import main
from slac.errors import (
    CheckpointError,
    ChecksumError,
    ConfigError,
    DataError,
    DeviceError,
    DivergenceError,
    MissingDependencyError,
    RunError,
    SlacError,
)


def test_every_project_error_is_also_the_builtin_type_callers_expect():
    for error, builtin in [
        (ConfigError, ValueError),
        (DataError, ValueError),
        (ChecksumError, DataError),
        (CheckpointError, RuntimeError),
        (RunError, ValueError),
        (MissingDependencyError, ImportError),
        (DeviceError, RuntimeError),
        (DivergenceError, FloatingPointError),
    ]:
        assert issubclass(error, SlacError) and issubclass(error, builtin), error


def _fail_in_fit(monkeypatch, error: BaseException) -> None:
    from slac.train import Trainer

    def fit(self):
        raise error

    monkeypatch.setattr(Trainer, "fit", fit)


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("NCCL error in: ProcessGroupNCCL.cpp, unhandled system error"),
        ImportError("cannot import name 'missing' from 'slac.heads'"),
        ZeroDivisionError("division by zero"),
        ValueError("a bug: not enough values to unpack"),
    ],
    ids=["oom", "nccl", "import", "arithmetic", "bug"],
)
def test_failures_are_not_reported_as_user_errors(monkeypatch, tmp_path, error):
    _fail_in_fit(monkeypatch, error)
    with pytest.raises(type(error), match=str(error)[:20]):
        main(["train", "--out_dir", str(tmp_path), "--progress", "false", "--tensorboard", "off"])


@pytest.mark.parametrize(
    "error",
    [
        ConfigError("lr: must be > 0"),
        MissingDependencyError("plots need matplotlib: pip install slac[plot]"),
        FileNotFoundError("no such file: recipe.yaml"),
    ],
    ids=["config", "dependency", "file"],
)
def test_user_errors_are_one_line_and_status_2(monkeypatch, tmp_path, capsys, error):
    _fail_in_fit(monkeypatch, error)
    assert main(["train", "--out_dir", str(tmp_path), "--progress", "false", "--tensorboard", "off"]) == 2
    assert capsys.readouterr().err == f"slac train: error: {error}\n"


def test_unreadable_yaml_and_bad_flags_are_user_errors(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: [lenet\n")
    assert main(["train", "--config", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "recipe.yaml" in err and err.count("\n") == 1  # YAML's own message spans lines: one here
    assert main(["train", "--lr", "-1", "--out_dir", str(tmp_path)]) == 2
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "nothing does not exist" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "not a slac run directory" in capsys.readouterr().err


def test_options_a_command_would_ignore_are_refused(tmp_path, capsys):
    """`slac plot curves --limit 5` (curves have no images to limit), `--band` with another figure, and
    report outputs in a folder that does not exist: refused before any work, in one line."""
    out = str(tmp_path / "f.png")
    assert main(["plot", "curves", str(tmp_path), "--out", out, "--limit", "5"]) == 2
    assert "plot curves takes no --limit; its options are --band" in capsys.readouterr().err
    assert main(["plot", "features", str(tmp_path), "--out", out, "--band"]) == 2
    assert "plot features takes no --band" in capsys.readouterr().err
    assert main(["plot", "histograms", str(tmp_path), "--out", out, "--layer", "x", "--band"]) == 2
    assert "takes no --band" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--markdown", str(tmp_path / "no" / "t.md")]) == 2
    assert "--markdown: the folder" in capsys.readouterr().err


def test_a_crash_prints_its_traceback_and_exits_with_status_1(tmp_path):
    """As a user sees it: a subprocess whose training raises an unexpected error."""
    code = textwrap.dedent(
        """
        import sys
        from slac.cli import main
        from slac.train import Trainer
        def fit(self):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        Trainer.fit = fit
        sys.exit(main(sys.argv[1:]))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "train", "--out_dir", str(tmp_path), "--progress", "false"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback (most recent call last)" in result.stderr
    assert "an illegal memory access" in result.stderr
