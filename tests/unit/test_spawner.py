"""The spawner's decisions, with Slurm commands faked (the testbed runs the real ones)."""

import asyncio
import json
import logging
import shlex
import subprocess

import pytest
from batchspawner import JobStatus
from conftest import fake_hub, fake_user
from hpchub_config.jobs import JobWatcher
from hpchub_config.options import OptionsError, ResourceRequest
from hpchub_config.spawner import (
    CommandInterrupted,
    ProfilesSlurmSpawner,
    SlurmNotebookSpawner,
    SpawnFailed,
)
from tornado import web

REQUEST = ResourceRequest(
    profile="medium",
    partition="batch",
    cores=2,
    memory_gb=4,
    walltime_minutes=240,
    gpus=0,
    account="",
    sbatch_options=("--qos=interactive",),
)


@pytest.fixture(autouse=True)
def alice_account(monkeypatch):
    """A local account for 'alice' as the login node would have it."""
    import pwd

    real = pwd.getpwnam
    entry = pwd.struct_passwd(("alice", "x", 2002, 2000, "", "/home/alice", "/bin/bash"))
    monkeypatch.setattr(pwd, "getpwnam", lambda name: entry if name == "alice" else real(name))


@pytest.fixture
def wrapper(spawner_config):
    return ProfilesSlurmSpawner(user=fake_user(), hub=fake_hub(), config=spawner_config)


def child_for(wrapper, request=REQUEST):
    wrapper.request = request
    child = wrapper.construct_child()
    child.api_token = "secret-token"
    return child


def script_of(child, **injected):
    return asyncio.run(child._get_batch_script(**injected))


def test_profiles_come_from_settings_and_are_all_slurm_jobs(wrapper):
    assert [p[1] for p in wrapper.profiles] == ["small", "medium"]
    assert all(p[2] is SlurmNotebookSpawner for p in wrapper.profiles)


def test_batch_script_has_the_validated_resources(wrapper):
    script = script_of(child_for(wrapper))
    for line in [
        "#SBATCH --job-name=jupyter-testhub-medium",
        "#SBATCH --no-requeue",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --mem=4G",
        "#SBATCH --time=240",
        "#SBATCH --partition=batch",
        "#SBATCH --qos=interactive",
        "log_dir=/home/alice/.hpchub/logs",
        "#SBATCH --export=NIL",
        "#SBATCH --chdir=/home/alice",
        "/opt/env/bin/batchspawner-singleuser /opt/env/bin/jupyterhub-singleuser &",
    ]:
        assert line in script
    assert "#SBATCH --output=/dev/null" in script
    assert "--gres" not in script and "--account" not in script


def test_user_options_never_reach_the_batch_script(wrapper):
    wrapper.user_options = {"profile": "medium", "runtime": "1:00\n#SBATCH --uid=0"}
    child = child_for(wrapper)
    assert child.user_options == {}
    # batchspawner's submit merges user_options into the template variables: ignored.
    script = script_of(child, runtime="1:00\n#SBATCH --uid=0", cmd="touch /tmp/pwned")
    assert "--uid=0" not in script and "pwned" not in script


def test_restored_server_keeps_its_slurm_child_even_for_an_unknown_profile(wrapper, spawner_config):
    child = child_for(wrapper)
    child.job_id = "42"
    state = wrapper.get_state()
    state["profile"] = "removed-profile"

    restored = ProfilesSlurmSpawner(user=fake_user(), hub=fake_hub(), config=spawner_config)
    restored.load_state(state)
    assert isinstance(restored.child_spawner, SlurmNotebookSpawner)
    assert restored.child_spawner.job_id == "42"
    assert restored.child_spawner.request == REQUEST
    assert "#SBATCH --cpus-per-task=2" in script_of(restored.child_spawner)


def test_start_without_a_validated_request_is_refused(wrapper):
    with pytest.raises(SpawnFailed):
        wrapper.start()


def test_apply_user_options_refuses_with_http_400(wrapper, partitions, monkeypatch):
    async def fake_partitions():
        return partitions

    monkeypatch.setattr(wrapper.cluster, "partitions", fake_partitions)
    hook = wrapper.apply_user_options
    with pytest.raises(web.HTTPError) as info:
        asyncio.run(hook(wrapper, {"profile": "nope"}))
    assert info.value.status_code == 400
    assert "unknown profile" in info.value.log_message
    assert wrapper.request is None

    asyncio.run(hook(wrapper, {"profile": "small", "cores": "3"}))
    assert wrapper.request.cores == 3 and wrapper.request.profile == "small"


def test_form_errors_come_back_as_value_errors(wrapper, partitions, monkeypatch):
    async def fake_partitions():
        return partitions

    monkeypatch.setattr(wrapper.cluster, "partitions", fake_partitions)
    options = asyncio.run(
        wrapper.options_from_form({"profile": ["medium"], "cores": ["3"], "_xsrf": ["x"]})
    )
    assert options == {"profile": "medium", "cores": "3"}
    with pytest.raises(ValueError) as info:
        asyncio.run(wrapper.options_from_form({"profile": ["medium"], "cores": ["64"]}))
    assert "at most 4" in str(info.value)
    assert isinstance(info.value.__cause__, OptionsError)


HELPER = ["/usr/bin/sudo", "-n", "/usr/local/libexec/hpchub/hpchub-slurm"]
JOBS = " ".join([*HELPER, "jobs"])
GONE = "slurm_load_jobs error: Invalid job id specified"


class FakeSlurm:
    """Answers the Slurm helper's verbs like Slurm would.

    `queue_states`: what each successive hub-wide `jobs` query shows for alice's job 42
    (`STATE|BATCHHOST|REASON`; "" = not in the queue), the last one repeated.
    """

    def __init__(self, queue_states, final_state="FAILED|NonZeroExitCode", job_id="42"):
        self.queue_states = list(queue_states)
        self.final_state = final_state
        self.job_id = job_id
        self.commands = []

    def per_job(self):
        """The commands that were not the hub-wide query."""
        return [shlex.split(c) for c in self.commands if c != JOBS]

    async def __call__(self, cmd, input=None, env=None):
        self.commands.append(cmd)
        verb = shlex.split(cmd)[len(HELPER)]
        if verb == "submit":
            return self.job_id
        if verb == "cancel":
            return ""
        if verb == "final":
            return self.final_state
        if verb == "query":  # only for a job the hub-wide view does not show
            raise RuntimeError(GONE)
        state = self.queue_states.pop(0) if len(self.queue_states) > 1 else self.queue_states[0]
        return f"{self.job_id}|alice|{state}" if state else ""


def watched_by(child, slurm, fast=0.01, slow=0.05):
    """`child` reads the hub's view from a watcher that asks `slurm`; helpers run there too."""
    child.run_command = slurm
    child.watcher = JobWatcher(JOBS, fast=fast, slow=slow, run=slurm)
    return child.watcher


def run_start(child, slurm):
    watched_by(child, slurm)
    return asyncio.run(asyncio.wait_for(child.start(), 5))


def test_job_that_dies_before_its_server_fails_fast_with_reason_and_log(wrapper):
    child = child_for(wrapper)
    slurm = FakeSlurm(["PENDING|(null)|Priority", "RUNNING|node1|None", ""])
    with pytest.raises(SpawnFailed) as info:
        run_start(child, slurm)
    message = info.value.jupyterhub_message
    assert "job 42 ended (FAILED: NonZeroExitCode)" in message
    assert "~/.hpchub/logs/jupyterlab-42.log" in message
    assert child.job_id == ""
    # Gone from the hub-wide view: Slurm is asked about that one job before the spawn fails.
    assert slurm.per_job() == [
        [*HELPER, "submit", "alice"],
        [*HELPER, "query", "alice", "42"],
        [*HELPER, "final", "alice", "42"],
    ]


def test_a_job_that_ended_is_reported_with_the_state_from_the_hub_wide_view(wrapper):
    """squeue -t all shows a finished job (while MinJobAge keeps it): no per-job call."""
    child = child_for(wrapper)
    slurm = FakeSlurm(["PENDING|(null)|Priority", "FAILED|node1|NonZeroExitCode"], "unused")
    with pytest.raises(SpawnFailed) as info:
        run_start(child, slurm)
    assert "job 42 ended (FAILED: NonZeroExitCode)" in info.value.jupyterhub_message
    assert slurm.per_job() == [[*HELPER, "submit", "alice"]]


def test_hopeless_pending_job_is_cancelled_at_once(wrapper):
    child = child_for(wrapper)
    slurm = FakeSlurm(["PENDING|(null)|PartitionTimeLimit"])
    with pytest.raises(SpawnFailed) as info:
        run_start(child, slurm)
    assert "PartitionTimeLimit" in str(info.value)
    assert [*HELPER, "cancel", "alice", "42"] in [shlex.split(c) for c in slurm.commands]


def test_start_returns_once_the_reported_port_accepts_connections(wrapper):
    child = child_for(wrapper)
    slurm = FakeSlurm(["RUNNING|127.0.0.1|None"])

    async def scenario():
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        task = asyncio.ensure_future(child.start())
        await asyncio.sleep(0.05)
        child.port = port  # what the port-report API does
        try:
            return await asyncio.wait_for(task, 5), port
        finally:
            server.close()

    watcher = watched_by(child, slurm)
    (host, port), listening = asyncio.run(scenario())
    assert (host, port) == ("127.0.0.1", listening)
    # No per-job query: the job's state came from the hub-wide view only.
    assert slurm.per_job() == [[*HELPER, "submit", "alice"]]
    assert slurm.commands.count(JOBS) == watcher.queries >= 1
    assert "42" in watcher._watched  # JupyterHub will hear at once if the job ends


def test_server_that_crashes_after_reporting_its_port_fails_fast(wrapper):
    """batchspawner-singleuser reports the port before the server listens."""
    child = child_for(wrapper)
    slurm = FakeSlurm(
        ["RUNNING|127.0.0.1|None", "RUNNING|127.0.0.1|None", ""],
        final_state="FAILED|NonZeroExitCode",
    )
    child.port = 9  # reported, but nothing will ever listen there
    watched_by(child, slurm)

    async def scenario():
        task = asyncio.ensure_future(child.start())
        await asyncio.sleep(0.02)
        child.port = 9
        return await asyncio.wait_for(task, 5)

    with pytest.raises(SpawnFailed) as info:
        asyncio.run(scenario())
    assert "job 42 ended (FAILED: NonZeroExitCode)" in str(info.value)


def test_sbatch_refusal_is_shown_to_the_user(wrapper):
    child = child_for(wrapper)

    async def refuse(cmd, input=None, env=None):
        raise RuntimeError("sbatch: error: Invalid account or account/partition combination")

    child.run_command = refuse
    with pytest.raises(SpawnFailed) as info:
        asyncio.run(child.start())
    assert "Slurm refused the notebook job: sbatch: error: Invalid account" in str(info.value)


# --- what the batch script carries, and what the hub logs --------------------------------


def bash(script: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["/bin/bash", "-c", script], capture_output=True, text=True, cwd=cwd, env=env, timeout=30
    )


def test_the_server_environment_is_exported_shell_quoted(wrapper, spawner_config):
    hostile = "x'; touch /tmp/hpchub-pwned; echo '$(id) `id` \"\n"
    spawner_config.Spawner.environment = {
        "JUPYTERHUB_EXTRA": hostile,
        "SOMETHING_ELSE": "not for the job",
    }
    wrapper = ProfilesSlurmSpawner(user=fake_user(), hub=fake_hub(), config=spawner_config)
    script = script_of(child_for(wrapper))
    assert "#SBATCH --export=NIL" in script
    exports = [line for line in script.splitlines() if line.startswith("export ")]
    assert "export JUPYTERHUB_API_TOKEN=secret-token" in exports
    assert "export JUPYTERHUB_USER=alice" in exports
    assert "export HOME=/home/alice" in exports
    assert not any("SOMETHING_ELSE" in line for line in exports)
    assert "JPY_API_TOKEN" not in script  # one copy of the token is enough
    # bash reads every value back exactly as the hub meant it, and runs nothing.
    start, end = script.index("\nexport HOME="), script.index("\nexport PATH=")
    result = bash(script[start:end] + '\nprintf %s "$JUPYTERHUB_EXTRA"')
    assert result.returncode == 0, result.stderr
    assert result.stdout == hostile
    scopes = bash(script[start:end] + '\nprintf %s "$JUPYTERHUB_OAUTH_ACCESS_SCOPES"').stdout
    assert json.loads(scopes) == ["access:servers!server=alice/", "access:servers!user=alice"]


def test_settings_values_in_the_script_are_shell_quoted(wrapper, monkeypatch):
    import pwd

    odd = pwd.struct_passwd(("alice", "x", 2002, 2000, "", "/home/al ice$(id)", "/bin/bash"))
    monkeypatch.setattr(pwd, "getpwnam", lambda name: odd)
    script = script_of(child_for(wrapper))
    (line,) = [line for line in script.splitlines() if line.startswith("log_dir=")]
    assert bash(f'{line}\nprintf %s "$log_dir"').stdout == "/home/al ice$(id)/.hpchub/logs"
    assert "export PATH=/opt/env/bin:" in script
    assert bash(f"set -n\n{script}").returncode == 0  # the whole script parses


def test_job_log_folder_is_0700_and_the_log_0600(wrapper, tmp_path, monkeypatch):
    import pwd

    home = tmp_path / "home"
    home.mkdir()
    entry = pwd.struct_passwd(("alice", "x", 2002, 2000, "", str(home), "/bin/bash"))
    monkeypatch.setattr(pwd, "getpwnam", lambda name: entry)
    script = script_of(child_for(wrapper))
    # The job's start, up to its first line of output, in a shell with umask 022.
    prelude = script[: script.index('echo "hpchub: job')]
    result = bash(
        f"umask 022\nexec 3>&1\n{prelude}\necho logged\numask >&3",
        env={"SLURM_JOB_ID": "7", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0022"  # the server itself runs with the usual umask
    log_dir = home / ".hpchub" / "logs"
    log = log_dir / "jupyterlab-7.log"
    assert log.read_text() == "logged\n"
    assert oct(log_dir.stat().st_mode & 0o777) == "0o700"
    assert oct((home / ".hpchub").stat().st_mode & 0o777) == "0o700"
    assert oct(log.stat().st_mode & 0o777) == "0o600"
    # An existing folder from an older version (0755) is tightened too.
    log_dir.chmod(0o755)
    bash(f"exec 3>&1\n{prelude}", env={"SLURM_JOB_ID": "8", "PATH": "/usr/bin:/bin"})
    assert oct(log_dir.stat().st_mode & 0o777) == "0o700"


def test_submission_logs_neither_the_script_nor_the_environment(wrapper, caplog):
    child = child_for(wrapper)
    slurm = FakeSlurm(["RUNNING|node1|None"])
    child.run_command = slurm
    caplog.set_level(logging.DEBUG)
    child.log.setLevel(logging.DEBUG)
    asyncio.run(child.submit())
    assert child.job_id == "42"
    assert "secret-token" not in caplog.text
    assert "JUPYTERHUB_" not in caplog.text and "#SBATCH" not in caplog.text
    assert "submitting a notebook job: /usr/bin/sudo -n " in caplog.text
    assert "submitted Slurm job 42" in caplog.text


def test_system_accounts_get_no_job(wrapper, monkeypatch):
    import pwd

    system = pwd.struct_passwd(("alice", "x", 999, 999, "", "/home/alice", "/bin/bash"))
    monkeypatch.setattr(pwd, "getpwnam", lambda name: system)
    child = child_for(wrapper)
    slurm = FakeSlurm(["RUNNING|node1|None"])
    child.run_command = slurm
    with pytest.raises(SpawnFailed) as info:
        asyncio.run(child.submit())
    assert "uid 999" in str(info.value) and "at least 1000" in str(info.value)
    assert "Slurm refused" not in str(info.value)
    assert slurm.commands == []


@pytest.mark.parametrize(("output", "job_id"), [("42", "42"), ("43;cluster1", "43"), ("x", "")])
def test_job_id_is_digits_from_sbatch_parsable(wrapper, output, job_id):
    child = child_for(wrapper)

    async def sbatch(cmd, input=None, env=None):
        return output

    child.run_command = sbatch
    assert asyncio.run(child.submit_batch_script()) == job_id


def test_helper_commands_run_without_a_shell_or_the_hub_environment(wrapper, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "hub-token")
    child = child_for(wrapper)
    echoed = asyncio.run(child.run_command("/bin/echo '$HOME;id' `id`"))
    assert echoed == "$HOME;id `id`"
    env = asyncio.run(child.run_command("/usr/bin/env")).splitlines()
    assert sorted(env) == ["LANG=C.UTF-8", "PATH=/usr/bin:/bin"]
    with pytest.raises(RuntimeError, match="refused: no"):
        asyncio.run(child.run_command("/bin/sh -c 'echo refused: no >&2; exit 2'"))


def test_refused_form_options_are_audited(wrapper, partitions, monkeypatch):
    import logging

    from hpchub_config import audit

    async def fake_partitions():
        return partitions

    monkeypatch.setattr(wrapper.cluster, "partitions", fake_partitions)
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    audit.logger.addHandler(handler)
    try:
        with pytest.raises(ValueError):
            asyncio.run(wrapper.options_from_form({"profile": ["medium"], "cores": ["64"]}))
    finally:
        audit.logger.removeHandler(handler)
    (line,) = lines
    assert '"event": "spawn_refused"' in line and "at most 4" in line and '"user": "alice"' in line


def test_submission_is_audited_with_the_job_id_and_the_validated_resources(wrapper):
    import json
    import logging

    from hpchub_config import audit

    child = child_for(wrapper)
    child.run_command = FakeSlurm(["RUNNING|node1|None"])
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(json.loads(record.getMessage()))
    audit.logger.addHandler(handler)
    try:
        asyncio.run(child.submit())
    finally:
        audit.logger.removeHandler(handler)
    (line,) = lines
    assert (line["event"], line["user"], line["job_id"]) == ("spawn", "alice", "42")
    assert (line["cores"], line["memory_gb"], line["walltime_minutes"]) == (2, 4, 240)
    assert "secret-token" not in json.dumps(line)


def test_a_query_without_an_answer_keeps_the_server(wrapper, caplog):
    """systemd kills the hub's whole cgroup on restart: a query killed then is no answer."""
    child = child_for(wrapper)
    child.job_id = "10"
    child.job_status = "RUNNING|node1|None"

    async def killed(cmd, input=None, env=None):
        raise CommandInterrupted("/usr/bin/sudo was killed by signal 15")

    async def broken(cmd, input=None, env=None):
        raise OSError(24, "Too many open files")

    async def garbled(cmd, input=None, env=None):
        return "squeue: error: Unable to contact slurm controller (connect failure)"

    for failure in (killed, broken, garbled):
        watched_by(child, failure)
        assert asyncio.run(child.query_job_status()) == JobStatus.UNKNOWN
        assert asyncio.run(child.poll()) is None  # still running for JupyterHub
        assert child.job_id == "10"
    assert "no answer about job 10" in caplog.text


def test_slurm_saying_the_job_is_gone_still_stops_the_server(wrapper):
    child = child_for(wrapper)
    child.job_id = "10"
    slurm = FakeSlurm([""])  # the hub-wide view shows no job 10; Slurm: invalid job id
    watched_by(child, slurm)
    assert asyncio.run(child.query_job_status()) == JobStatus.NOTFOUND
    assert asyncio.run(child.poll()) == 1
    assert child.job_id == ""


def test_a_command_killed_by_a_signal_is_no_answer(wrapper):
    child = child_for(wrapper)
    with pytest.raises(CommandInterrupted, match="signal 15"):
        asyncio.run(child.run_command("/bin/sh -c 'kill -TERM $$'"))


def test_the_job_builds_the_users_login_environment(wrapper, tmp_path):
    # --export=NIL: no `su - USER` on the node; the script reads the login files itself, as
    # bash does for a login shell: /etc/profile, then the first of the user's own files.
    script = script_of(child_for(wrapper))
    assert "#SBATCH --export=NIL" in script
    start, end = script.index("\nHOME="), script.index("\nset -u\n")
    (tmp_path / ".bash_profile").write_text("export FROM_BASH_PROFILE=yes\n")
    (tmp_path / ".profile").write_text("export FROM_PROFILE=yes\n")
    # Slurm gives a NIL job no HOME: the script sets the account's (tmp_path here).
    block = script[start:end].replace("HOME=/home/alice", f"HOME={tmp_path}")
    result = bash(
        block + '\nprintf "%s|%s|%s" "$FROM_BASH_PROFILE" "$FROM_PROFILE" "$LOGNAME"',
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    # ~/.bash_profile wins, ~/.profile is not read; LOGNAME is the account's.
    assert result.stdout.endswith("yes||alice")
    (tmp_path / ".bash_profile").unlink()
    result = bash(block + '\nprintf "%s" "$FROM_PROFILE"', env={"PATH": "/usr/bin:/bin"})
    assert result.stdout.endswith("yes")
