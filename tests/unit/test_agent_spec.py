"""The agent's pure parts: what a spec means (argv, ranks, environment, cache key, conda
specs, error text) and the lease rule's timer."""

from __future__ import annotations

from typing import Any

import pytest

from ingest.agent.lease import LeaseGuard
from ingest.agent.runner import run_dir_name
from ingest.agent.spec import (
    RankExit,
    SpecError,
    command_argv,
    conda_to_pip,
    environment_key,
    exit_text,
    failure_text,
    pip_problems,
    process_count,
    rank_variables,
    run_environment,
)
from producer import MpiConfiguration, PyTorchConfiguration, ScriptRunConfig

HOSTILE = ["a b", "it's", 'say "hi"', "$(touch /tmp/pwned)", "`id`", "; rm -rf /", "ünï©ødé ✓",
           "--flag=x y", "", "*", "\\n", "-"]


def spec(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "schema": 1, "source_directory": ".", "script": "train.py", "arguments": [],
        "command": None, "shell_command": None, "target": "local",
        "environment": {"user_managed": True, "interpreter": "python", "variables": {}},
        "distributed": None, "max_run_duration_seconds": None, "environment_variables": {},
    }
    base.update(over)
    return base


def test_script_argv_is_verbatim() -> None:
    assert command_argv(spec(arguments=HOSTILE), "/py") == ["/py", "train.py", *HOSTILE]


def test_argv_from_a_real_script_run_config(tmp_path: Any) -> None:
    (tmp_path / "my script.py").write_text("")
    config = ScriptRunConfig(str(tmp_path), script="my script.py", arguments=[*HOSTILE, 3, 0.5])
    argv = command_argv(config.to_submission(), "/py")
    assert argv == ["/py", "my script.py", *HOSTILE, "3", "0.5"]


def test_command_list_is_an_argv_and_a_string_goes_through_the_shell() -> None:
    command = ["python", "-c", "import sys; print(sys.argv)", *HOSTILE]
    assert command_argv(spec(script=None, command=command), "/py") == command
    line = "echo $HOME && ls"
    assert command_argv(spec(script=None, shell_command=line), "/py") == ["/bin/sh", "-c", line]


@pytest.mark.parametrize("over", [
    {"script": None},
    {"command": ["x"]},
    {"script": None, "command": []},
    {"script": None, "command": [1, 2]},
    {"arguments": "a b"},
    {"script": None, "shell_command": "  "},
])
def test_a_spec_that_cannot_run_is_refused(over: dict[str, Any]) -> None:
    with pytest.raises(SpecError):
        command_argv(spec(**over), "/py")


def test_process_count() -> None:
    assert process_count(spec()) == 1
    torch = ScriptRunConfig(".", script="t.py",
                            distributed_job_config=PyTorchConfiguration(process_count=3))
    assert process_count(torch.to_submission()) == 3
    mpi = ScriptRunConfig(".", script="t.py", distributed_job_config=MpiConfiguration(
        process_count_per_node=2, node_count=2))
    assert process_count(mpi.to_submission()) == 4
    assert process_count(spec(distributed={"kind": "mpi", "process_count_per_node": 3})) == 3
    with pytest.raises(SpecError, match="TensorFlow"):
        process_count(spec(distributed={"kind": "tensorflow", "worker_count": 2}))
    with pytest.raises(SpecError):
        process_count(spec(distributed={"kind": "pytorch", "process_count": 0}))


def test_rank_variables() -> None:
    assert rank_variables(0, 1, master_port=None, distributed=False) == {
        "RUNSTREAM_RANK": "0", "RUNSTREAM_WORLD_SIZE": "1"}
    found = rank_variables(2, 4, master_port=29500, distributed=True)
    assert found == {
        "RUNSTREAM_RANK": "2", "RUNSTREAM_WORLD_SIZE": "4", "RANK": "2", "WORLD_SIZE": "4",
        "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "4", "NODE_RANK": "0",
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500",
    }


def test_environment_order_and_scrubbing() -> None:
    base = {"PATH": "/usr/bin", "HOME": "/root", "RUNSTREAM_DB": "postgresql://secret",
            "RUNSTREAM_WORKSPACE_TOKENS": "{}", "RUNSTREAM_AGENT_TOKENS": "{}",
            "A": "agent", "B": "agent", "C": "agent"}
    s = spec(environment={"variables": {"A": "env", "B": "env", "RUNSTREAM_RUN_ID": "spoof"}},
             environment_variables={"B": "config", "PYTHONUNBUFFERED": "0"})
    env = run_environment(base, s, {"RUNSTREAM_RUN_ID": "real"}, path_prefix=["/venv/bin"])
    assert env["A"] == "env"
    assert env["B"] == "config"
    assert env["C"] == "agent"
    assert env["RUNSTREAM_RUN_ID"] == "real"
    assert env["PYTHONUNBUFFERED"] == "0"  # the spec may turn it off
    assert env["PATH"] == "/venv/bin:/usr/bin"
    assert "RUNSTREAM_DB" not in env
    assert "RUNSTREAM_WORKSPACE_TOKENS" not in env
    assert "RUNSTREAM_AGENT_TOKENS" not in env
    assert run_environment({}, spec(), {})["PYTHONUNBUFFERED"] == "1"
    with pytest.raises(SpecError):
        run_environment({}, spec(environment_variables={"A=B": "x"}), {})


def test_environment_key_is_a_content_hash() -> None:
    one = {"pip": ["numpy==1.26", "pandas"], "pip_options": [], "conda": [], "pip_version": None}
    key = environment_key(one, "/usr/bin/python3", "3.11.7")
    assert key == environment_key(dict(reversed(list(one.items()))), "/usr/bin/python3", "3.11.7")
    assert len(key) == 32
    assert int(key, 16) >= 0
    changed = [
        environment_key({**one, "pip": ["pandas", "numpy==1.26"]}, "/usr/bin/python3", "3.11.7"),
        environment_key({**one, "pip": ["numpy==1.27", "pandas"]}, "/usr/bin/python3", "3.11.7"),
        environment_key({**one, "pip_options": ["--no-index"]}, "/usr/bin/python3", "3.11.7"),
        environment_key({**one, "conda": ["scipy"]}, "/usr/bin/python3", "3.11.7"),
        environment_key({**one, "pip_version": "23"}, "/usr/bin/python3", "3.11.7"),
        environment_key(one, "/opt/python3", "3.11.7"),
        environment_key(one, "/usr/bin/python3", "3.12.1"),
    ]
    assert len({key, *changed}) == len(changed) + 1
    # What does not go into the environment does not change the key.
    assert environment_key({**one, "variables": {"X": "1"}, "name": "other"},
                           "/usr/bin/python3", "3.11.7") == key


@pytest.mark.parametrize(("conda", "pip"), [
    ("numpy", "numpy"),
    ("numpy=1.21", "numpy==1.21.*"),
    ("numpy=1.21.2=py39h_0", "numpy==1.21.2"),
    ("numpy>=1.2,<2", "numpy>=1.2,<2"),
    ("numpy 1.21", "numpy==1.21.*"),
    ("numpy==1.21.2", "numpy==1.21.2"),
    ("conda-forge::scikit-learn=1.*", "scikit-learn==1.*"),
    ("python=3.8", None),
])
def test_conda_specs_as_pip_requirements(conda: str, pip: str | None) -> None:
    assert conda_to_pip(conda) == pip


def test_failure_text_has_the_exit_code_and_the_traceback_end() -> None:
    tail = [f"line {i}" for i in range(60)]
    text = failure_text(RankExit(0, 3, tail), 1)
    assert text.splitlines()[0] == "exit code 3"
    assert text.splitlines()[1:] == tail[-40:]
    assert failure_text(RankExit(1, -9, []), 2) == "rank 1: killed by SIGKILL (exit code -9)"
    assert exit_text(-15) == "killed by SIGTERM (exit code -15)"


def test_pip_problems_names_the_packages() -> None:
    lines = ["ERROR: Could not find a version that satisfies the requirement nopkg==1 (from "
             "versions: none)", "ERROR: No matching distribution found for nopkg==1"]
    assert pip_problems(lines) == ["nopkg==1"]


def test_run_dir_names_are_one_safe_component() -> None:
    assert run_dir_name("exp_1700000000_0123abcd", 2) == "exp_1700000000_0123abcd.2"
    odd = {run_dir_name(r, 0) for r in ("../x", "a/b", "a_b", "..", ".hidden", "a\\b")}
    assert len(odd) == 6
    assert all("/" not in n and not n.startswith(".") for n in odd)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lease_guard_counts_from_the_send_time_of_the_last_success() -> None:
    clock = Clock()
    guard = LeaseGuard(30.0, clock=clock)
    assert guard.kill_after_s == pytest.approx(20.0)
    assert guard.poll_wait_s == pytest.approx(7.5)
    sent = clock.now
    clock.now += 8.0  # a long-poll that waited, then answered
    guard.renewed(sent)
    clock.now += 11.9
    assert not guard.expired()
    clock.now += 0.2  # 20.1 s since that poll was sent, though answered 12.1 s ago
    assert guard.expired()
    guard.renewed(clock.now - 1.0)
    assert not guard.expired()
    assert guard.age() == pytest.approx(1.0)


def test_lease_guard_ignores_an_older_success_answered_late() -> None:
    clock = Clock()
    guard = LeaseGuard(30.0, clock=clock)
    guard.renewed(clock.now)
    guard.renewed(clock.now - 15.0)  # sent long ago, answered now: proves less
    clock.now += 19.0
    assert not guard.expired()


def test_two_chained_long_polls_fit_in_the_kill_bound() -> None:
    clock = Clock()
    guard = LeaseGuard(30.0, clock=clock)
    latency = 1.0
    for _ in range(10):
        sent = clock.now
        clock.now += guard.poll_wait_s + latency
        assert not guard.expired()
        guard.renewed(sent)
    # The cancel rule: a poll is cancelled only while the last success is recent.
    assert guard.may_cancel_poll() == (guard.age() < 10.0)
    clock.now += 10.0
    assert not guard.may_cancel_poll()


def test_lease_guard_follows_the_servers_lease() -> None:
    clock = Clock()
    guard = LeaseGuard(30.0, clock=clock)
    guard.set_lease(3.0)
    clock.now += 2.1
    assert guard.expired()
    guard.set_lease(0.0)  # nonsense is ignored
    assert guard.lease_s == 3.0
    with pytest.raises(ValueError, match="positive"):
        LeaseGuard(0)
