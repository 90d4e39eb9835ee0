"""JupyterLab's walltime clock (roles/jupyter_env/files/hpchub-walltime), loaded the way
JupyterLab's loader loads a prebuilt extension, in Node.js (the one Playwright ships) with a
fake JupyterLab: the browser test on the testbed shows it in a real JupyterLab."""

import json
import subprocess
from pathlib import Path

import playwright
import pytest

EXTENSION = Path(__file__).parents[2] / "roles/jupyter_env/files/hpchub-walltime"
NODE = Path(playwright.__file__).parent / "driver" / "node"

HARNESS = Path(__file__).parent / "walltime_clock_harness.js"


def run_clock(config: dict, now: int) -> dict:
    result = subprocess.run(
        [
            str(NODE),
            str(HARNESS),
            str(EXTENSION / "static/remoteEntry.js"),
            json.dumps(config),
            str(now),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_extension_is_a_prebuilt_jupyterlab_extension():
    package = json.loads((EXTENSION / "package.json").read_text())
    assert package["jupyterlab"]["_build"] == {
        "load": "static/remoteEntry.js",
        "extension": "./extension",
    }
    assert (EXTENSION / package["jupyterlab"]["_build"]["load"]).is_file()


@pytest.mark.parametrize(
    ("left", "text", "warned"),
    [
        (3 * 3600 + 300, "Walltime left: 3 h 05 min", False),
        (125, "Walltime left: 2 min 05 s", True),
    ],
)
def test_the_clock_shows_the_time_left_and_warns_before_the_end(left, text, warned):
    now = 1_800_000_000
    out = run_clock({"hpchubJobEnd": str(now + left), "hpchubWalltimeWarningMinutes": "10"}, now)
    assert out["id"] == "hpchub-walltime:clock" and out["autoStart"] is True
    (clock,) = out["added"]
    assert clock["id"] == "hpchub-walltime" and clock["area"] == "top"
    assert clock["text"] == text
    assert ("hpchub-walltime-warning" in clock["classes"]) is warned
    assert out["timers"] == 1  # it ticks every second
    notes = [n for n in out["notes"] if n["id"] == "apputils:notify"]
    assert bool(notes) is warned
    if warned:
        assert notes[0]["args"]["type"] == "warning"
        assert "ends in 2 min 05 s" in notes[0]["args"]["message"]
        assert notes[0]["args"]["options"]["autoClose"] is False


def test_outside_a_notebook_job_the_clock_stays_away():
    out = run_clock({}, 1_800_000_000)
    assert out["added"] == [] and out["notes"] == []
