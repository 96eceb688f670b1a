"""Every script a person runs answers --help: usage on stdout, exit 0, no code in it.

A usage error (an unknown option) is still exit 2 with the usage on stderr.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.image.conftest import REPO

SCRIPTS = ["deploy/flash.sh", "deploy/setup.sh", "image/build.sh", "image/wheelhouse.sh"]


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_is_usage_on_stdout_and_exit_0(script: str, flag: str) -> None:
    p = subprocess.run([str(REPO / script), flag], capture_output=True, text=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    text = p.stdout
    assert "usage" in text.lower() and script.split("/")[-1] in text
    # Nothing of the script itself leaks into the text (flash.sh printed "set -euo pipefail").
    for code in ("set -e", "pipefail", "usage()", "#!/"):
        assert code not in text, f"{script} {flag} printed {code!r}:\n{text}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_unknown_option_is_exit_2_with_usage_on_stderr(script: str) -> None:
    p = subprocess.run([str(REPO / script), "--no-such-option"], capture_output=True, text=True,
                       timeout=30, stdin=subprocess.DEVNULL)
    assert p.returncode == 2
    assert "--no-such-option" in p.stderr and "usage" in p.stderr.lower()
    assert p.stdout == ""
