"""A command's console: its own lines, with Ray's and the library's logs in one file per run."""
import subprocess
import sys

from tests.conftest import REPO_ROOT


def _generate_corpus(tmp_path, *flags: str) -> subprocess.CompletedProcess:
    """The one stage without Ray, so the console set-up is seen alone (a few seconds)."""
    return subprocess.run([sys.executable, "-m", "ray_jobs.generate_corpus", "--config",
                           str(REPO_ROOT / "configs" / "corpus.yaml"), "--set", f"out_dir={tmp_path / 'corpus'}",
                           "--set", "n_images=3", "--set", "workers=1", *flags],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_a_command_names_its_log_file_first_and_verbose_keeps_the_console(tmp_path):
    quiet = _generate_corpus(tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    first = quiet.stdout.splitlines()[0]
    assert first.startswith("log: ") and "--verbose" in first
    log = first.split()[1]
    assert log.startswith(str(tmp_path / "artifacts" / "logs" / "generate_corpus-"))
    assert "3 label files" in quiet.stdout

    verbose = _generate_corpus(tmp_path, "--verbose")
    assert verbose.returncode == 0, verbose.stderr
    assert not verbose.stdout.startswith("log: ") and "3 label files" in verbose.stdout
    assert len(list((tmp_path / "artifacts" / "logs").iterdir())) == 1  # --verbose writes no log of its own


def test_shipped_configs_are_found_from_any_working_directory(tmp_path, monkeypatch):
    """On a cluster jobs run in the shared data folder, not in the checkout (cluster.yaml)."""
    import pytest

    from ray_jobs.common.cli import config_path, load_stage_config
    from ray_jobs.preprocess import PreprocessConfig
    from recsys.config import ConfigError

    monkeypatch.chdir(tmp_path)
    assert config_path("configs/preprocess.yaml") == REPO_ROOT / "configs" / "preprocess.yaml"
    cfg = load_stage_config("x", PreprocessConfig, "configs/preprocess.yaml", ["--set", "labels=data/labels"])
    assert cfg.labels == "data/labels"
    # a file of the same name in the working directory wins: the user's own config
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "preprocess.yaml").write_text("labels: mine\n")
    assert load_stage_config("x", PreprocessConfig, "configs/preprocess.yaml", []).labels == "mine"
    with pytest.raises(ConfigError, match="configs/nowhere.yaml does not exist"):
        load_stage_config("x", PreprocessConfig, "configs/nowhere.yaml", [])
