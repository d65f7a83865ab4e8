"""The agent as subreaper: orphans are adopted and reaped; nothing claimed or fresh is taken.

The sweep itself runs in a child Python (it reaps *this process's* zombies, and
pytest's own children must not be touched); the end-to-end case runs a real
agent whose command leaves a process behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

from session_runtime.agent import reaper
from session_runtime.client import SessionConnection
from tests.agent.conftest import TOKEN
from tests.support.agents import running_agent


def _in_a_child_python(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a Python of its own (its zombies are its own), which must succeed."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    return done


_SCENARIO = textwrap.dedent(
    """
    import json, os, time
    from session_runtime.agent import reaper

    def wait_for(predicate):
        deadline = time.monotonic() + 30
        while not predicate():
            assert time.monotonic() < deadline
            time.sleep(0.01)

    assert reaper.become_subreaper()
    # A grandchild whose parent exits at once: it is adopted by this process.
    told_r, told_w = os.pipe()  # the pid, middle -> us
    go_r, go_w = os.pipe()  # the orphan's cue to exit, us -> orphan
    middle = os.fork()
    if middle == 0:
        orphan = os.fork()
        if orphan == 0:
            os.read(go_r, 1)  # lives until told to exit
            os._exit(0)
        os.write(told_w, b"%d" % orphan)
        os._exit(0)
    os.waitpid(middle, 0)
    orphan = int(os.read(told_r, 32))
    wait_for(lambda: orphan in reaper.children())
    adopted = orphan in reaper.children()
    # A claimed zombie of our own, which its claimant will wait for.
    claimed = os.fork()
    if claimed == 0:
        os._exit(3)
    reaper.claim(claimed)
    os.write(go_w, b"x")
    wait_for(lambda: reaper.is_zombie(orphan) and reaper.is_zombie(claimed))
    sweeper = reaper.OrphanReaper()
    first, second = sweeper.sweep(), sweeper.sweep()
    claimed_status = os.waitstatus_to_exitcode(os.waitpid(claimed, 0)[1])
    print(json.dumps({
        "adopted": adopted, "orphan": orphan, "first": first, "second": second,
        "left": sorted(reaper.children()), "claimed_status": claimed_status,
    }))
    """
)


def test_an_adopted_orphan_is_reaped_on_its_second_sighting_and_a_claimed_one_never() -> None:
    done = _in_a_child_python(_SCENARIO)
    seen = json.loads(done.stdout)
    assert seen["adopted"], "the orphan was not re-parented to the subreaper"
    assert seen["first"] == [], "a zombie seen once may be asyncio's to reap"
    assert seen["second"] == [seen["orphan"]]
    assert seen["left"] == []
    assert seen["claimed_status"] == 3  # its exit status was still there for its claimant


_QUIET_SCENARIO = textwrap.dedent(
    """
    import asyncio, json, os
    from session_runtime.agent import reaper

    sweeps = []

    class Counting(reaper.OrphanReaper):
        def sweep(self):
            sweeps.append(1)
            return super().sweep()

    async def main():
        task = asyncio.create_task(Counting(interval=0.05).run())
        await asyncio.sleep(0.5)
        quiet = len(sweeps)
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        deadline = asyncio.get_running_loop().time() + 30
        while len(sweeps) < 2 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        after_exit = len(sweeps)
        task.cancel()
        print(json.dumps({"quiet": quiet, "after_exit": after_exit}))

    asyncio.run(main())
    """
)


def test_an_agent_whose_children_behave_never_scans_and_a_child_exit_wakes_the_sweep() -> None:
    done = _in_a_child_python(_QUIET_SCENARIO)
    *logged, last = done.stdout.splitlines()
    seen = json.loads(last)
    assert seen["quiet"] == 0
    assert seen["after_exit"] >= 2  # the first look, then the second for the zombie it saw
    assert [json.loads(line)["event"] for line in logged] == ["orphans_reaped"]


def test_a_process_a_command_leaves_behind_is_adopted_and_reaped_by_the_agent(
    tmp_path: Path, fake_gam: str
) -> None:
    with running_agent("orphans", TOKEN, tmp_path=tmp_path, gam_bin=fake_gam) as agent:
        with SessionConnection.open(agent.url, TOKEN) as conn:
            result = conn.run("orphan 0.5")
        assert result.exit_code == 0
        orphan = int(result.stdout)
        agent_process = psutil.Process(agent.process.pid)
        deadline = time.monotonic() + 60
        while psutil.pid_exists(orphan):
            try:
                parent = psutil.Process(orphan).ppid()
            except psutil.NoSuchProcess:
                break
            assert parent == agent_process.pid, "the orphan went past the agent"
            assert time.monotonic() < deadline, "the orphan was never reaped"
            time.sleep(0.05)

        def reaped() -> list[dict[str, object]]:  # logged just after the waitpid
            return [e for e in agent.events("orphans_reaped") if orphan in e["pids"]]  # type: ignore[operator]

        while not reaped():
            assert time.monotonic() < deadline, "the reap was never logged"
            time.sleep(0.05)
        assert len(reaped()) == 1


def test_a_running_process_and_a_missing_one_are_not_zombies() -> None:
    assert not reaper.is_zombie(os.getpid())
    assert not reaper.is_zombie(2**22 + 7)  # above the kernel's pid_max: never exists
