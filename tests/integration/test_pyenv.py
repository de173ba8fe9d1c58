"""Python environments: pip's index settings reach uv, and pip-built environments move.

Real interpreters, real uv and pip, installing from this machine's package indexes; a
test that needs a package skips with the reason when no index offers it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from shipyard.config import PythonEnv
from shipyard.effects.artifacts import build_path_references
from shipyard.effects.pyenv import (
    RELOCATABLE_SHEBANG,
    EnvStore,
    IndexSettings,
    env_digest,
    find_interpreter,
    find_uv,
    make_relocatable,
    pip_index_settings,
)
from shipyard.errors import DeploymentFailed


def test_uv_gets_the_index_settings_pip_has(tmp_path: Path) -> None:
    system = tmp_path / "pip.conf"
    system.write_text(
        "[global]\nindex-url = https://mirror.example/simple\n"
        "extra-index-url = file:///opt/a/simple\n  file:///opt/b/simple\n"
        "constraint = /etc/constraints.txt\n"
    )
    user = tmp_path / "user.conf"
    user.write_text(
        "[global]\nfind-links = /opt/wheels\n[install]\ntrusted-host = mirror.example\n"
    )
    settings = pip_index_settings(
        {"PIP_FIND_LINKS": "/srv/wheels /opt/wheels", "PIP_CERT": "/etc/ca.pem"},
        files=[system, user],
    )
    assert settings == IndexSettings(
        index_url="https://mirror.example/simple",
        extra_index_urls=("file:///opt/a/simple", "file:///opt/b/simple"),
        find_links=("/srv/wheels", "/opt/wheels"),  # the variable wins over the files
        constraints=("/etc/constraints.txt",),
        trusted_hosts=("mirror.example",),
        cert="/etc/ca.pem",
    )
    args = settings.uv_args()
    assert args.count("--find-links") == 2
    # pip picks the best version across indexes: so must uv.
    assert args[args.index("--index-strategy") + 1] == "unsafe-best-match"
    assert "--allow-insecure-host" in args and "--constraint" in args
    assert "--constraint" not in settings.uv_args(constraints=False)
    # Index URLs (which may hold a token) go to uv through its variables, never argv.
    assert not any("mirror.example/simple" in a or "file:///opt" in a for a in args)
    assert settings.uv_environment() == {
        "SSL_CERT_FILE": "/etc/ca.pem",
        "UV_INDEX_URL": "https://mirror.example/simple",
        "UV_EXTRA_INDEX_URL": "file:///opt/a/simple file:///opt/b/simple",
    }


def test_pip_config_file_devnull_means_no_settings(tmp_path: Path) -> None:
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nfind-links = /opt/wheels\n")
    assert pip_index_settings({"PIP_CONFIG_FILE": os.devnull}, files=[conf]) == IndexSettings()


def local_index_has(package: str) -> bool:
    settings = pip_index_settings()
    for url in settings.extra_index_urls:
        if url.startswith("file://") and Path(url[7:], package).is_dir():
            return True
    return False


def build(store: EnvStore, folder: Path, spec: PythonEnv) -> str:
    interpreter = find_interpreter(None, store.uv)
    assert interpreter is not None, "no python3 on PATH"
    digest = env_digest(spec, "lock", interpreter, store.tool)
    asyncio.run(
        store.build(
            digest, spec, folder, interpreter, where="test", redact=lambda s: s, timeout=300
        )
    )
    return digest


@pytest.mark.parametrize("tool", ["uv", "pip"])
def test_an_environment_still_works_after_it_moves(tmp_path: Path, tool: str) -> None:
    if not local_index_has("six"):
        pytest.skip("no local package index with `six` on this machine (pip config)")
    uv = find_uv() if tool == "uv" else None
    if tool == "uv" and uv is None:
        pytest.skip("uv is not installed")
    (tmp_path / "requirements.txt").write_text("six==1.17.0\n")
    store = EnvStore(tmp_path / "envs", tmp_path / "cache", uv, pip_index_settings())
    digest = build(store, tmp_path, PythonEnv(requirements="requirements.txt"))
    built = store.path(digest)
    moved = tmp_path / "elsewhere" / "env"
    moved.parent.mkdir()
    shutil.copytree(built, moved, symlinks=True)
    shutil.rmtree(built)
    assert build_path_references(moved, built) == []
    done = subprocess.run(
        [str(moved / "bin" / "python"), "-c", "import six, sys; print(six.__file__, sys.prefix)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        str(moved / "lib" / f"python{_minor(moved)}" / "site-packages" / "six.py"),
        str(moved),
    ]


def _minor(venv: Path) -> str:
    return next(venv.glob("lib/python3.*")).name.removeprefix("python")


def test_a_requirements_file_that_includes_another_is_refused(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("six==1.17.0\n-r base.txt\n")
    store = EnvStore(tmp_path / "envs", tmp_path / "cache", find_uv(), IndexSettings())
    with pytest.raises(DeploymentFailed) as info:
        build(store, tmp_path, PythonEnv(requirements="requirements.txt"))
    assert "requirements.txt:2: `-r …`" in info.value.message
    assert "pinned" in (info.value.hint or "")
    assert not store.root.exists() or not any(store.root.iterdir())  # nothing half-built


def test_an_index_token_is_in_no_error_of_a_failed_install(tmp_path: Path) -> None:
    """A token in pip's index URL (PIP_INDEX_URL in CI, say) reaches uv, never the error
    that shows the failed command, nor an `-e git+https://…@` line that is refused."""
    uv = find_uv()
    if uv is None:
        pytest.skip("uv is not installed")
    token = "S3cretT0ken4u"
    index = IndexSettings(index_url=f"https://ci:{token}@127.0.0.1:9/simple", no_index=False)
    (tmp_path / "requirements.txt").write_text("surely-no-such-package-here==1.0\n")
    store = EnvStore(tmp_path / "envs", tmp_path / "cache", uv, index)
    with pytest.raises(DeploymentFailed) as info:
        build(store, tmp_path, PythonEnv(requirements="requirements.txt"))
    shown = f"{info.value.message}\n{info.value.hint}"
    assert "uv pip install" in shown and token not in shown, shown
    (tmp_path / "requirements.txt").write_text(f"-e git+https://ci:{token}@git.example/x.git\n")
    with pytest.raises(DeploymentFailed) as info:
        build(store, tmp_path, PythonEnv(requirements="requirements.txt"))
    assert "`-e …`" in info.value.message and token not in info.value.message


def test_a_pip_made_venv_is_made_relocatable(tmp_path: Path) -> None:
    venv = tmp_path / "env"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text(
        f"home = /usr/bin\nversion = 3.11.7\ncommand = /usr/bin/python3 -m venv {venv}\n"
    )
    tool = venv / "bin" / "tool"
    tool.write_text(f"#!{venv}/bin/python\nimport sys\nprint('tool')\n")
    tool.chmod(0o755)
    (venv / "bin" / "activate").write_text(f"VIRTUAL_ENV={venv}\n")
    (venv / "bin" / "python").symlink_to("/usr/bin/python3")
    assert len(build_path_references(venv, venv)) == 2  # the #! line and pyvenv.cfg
    make_relocatable(venv)
    assert build_path_references(venv, venv) == []
    assert tool.read_text().startswith(RELOCATABLE_SHEBANG)
    assert tool.read_text().endswith("import sys\nprint('tool')\n")
    assert tool.stat().st_mode & 0o111
    assert not (venv / "bin" / "activate").exists()
    assert (venv / "pyvenv.cfg").read_text() == "home = /usr/bin\nversion = 3.11.7\n"


def test_a_uv_project_is_installed_from_its_lock_without_the_project_itself(
    tmp_path: Path,
) -> None:
    uv = find_uv()
    if uv is None:
        pytest.skip("uv is not installed")
    index = next(
        (u for u in pip_index_settings().extra_index_urls if Path(u[7:], "six").is_dir()), None
    )
    if index is None:
        pytest.skip("no local package index with `six` on this machine (pip config)")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "app"\nversion = "1.0"\nrequires-python = ">=3.9"\n'
        'dependencies = ["six==1.17.0"]\n'
    )
    locked = subprocess.run(
        [uv, "lock", "--index-url", index, "--cache-dir", str(tmp_path / "cache")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert locked.returncode == 0, locked.stderr
    store = EnvStore(tmp_path / "envs", tmp_path / "cache", uv, IndexSettings())
    env = store.path(build(store, tmp_path, PythonEnv(project=".")))
    done = subprocess.run(
        [str(env / "bin" / "python"), "-c", "import six; print(six.__version__)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == "1.17.0", done.stderr
    # The project's code is the artifact: it is not installed into its environment.
    assert not list(env.glob("lib/python*/site-packages/app*"))
    assert build_path_references(env, tmp_path) == []


def test_an_interpreter_is_found_by_version_or_not_at_all() -> None:
    found = find_interpreter(None)
    assert found is not None and found.version.startswith("3.")
    assert found.platform.startswith(("cpython-", "pypy-"))
    same = find_interpreter(".".join(found.version.split(".")[:2]))
    assert same is not None and same.version == found.version
    assert find_interpreter("3.99") is None
