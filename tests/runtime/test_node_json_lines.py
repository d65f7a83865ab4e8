"""The Node.js ``--json-lines`` example of docs/server-integration.md, run by node on the stack.

The ``gamgui-session.mjs`` block is taken out of the page as printed; a small
driver imports it and runs ``send`` against a fake-GAM session, so the page's
claim (line-by-line events, a 50 MB-safe reader, the exit statuses) is tested
in the language it is written for.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from session_runtime.models import BackendSession
from tests.runtime.conftest import StackHandle

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "server-integration.md"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None, reason="needs node (Debian's nodejs)")

_DRIVER = """
import { gamguiSession, runForUser } from "./gamgui-session.mjs";
const [sessionId, python, ...argv] = process.argv.slice(2);
const opts = { command: python, prefix: ["-m", "session_runtime"] };
const events = [];
const send = ["send", "--id", sessionId, "--", ...argv];
const status = await gamguiSession(send, (e) => events.push(e), opts);
const streamed = [];
let failure = null;
try {
  await runForUser("node-nobody", ["version"], (stream, data) => streamed.push([stream, data]));
} catch (error) {
  failure = error.message;
}
const types = events.map((e) => e.type);
console.log(JSON.stringify({ status, types, events, streamed, failure }));
"""


def _module() -> str:
    blocks = re.findall(r"```js\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)
    (module,) = [b for b in blocks if b.startswith("// gamgui-session.mjs")]
    return module


def test_the_node_example_reads_the_events_line_by_line(
    local_stack: StackHandle, fake_session: BackendSession, tmp_path: Path
) -> None:
    assert NODE is not None
    (tmp_path / "gamgui-session.mjs").write_text(_module(), encoding="utf-8")
    (tmp_path / "main.mjs").write_text(_DRIVER, encoding="utf-8")
    # runForUser runs plain `gamgui-session`: a shim for this checkout's CLI, first on PATH.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "gamgui-session"
    shim.write_text(
        f"#!{sys.executable}\nfrom session_runtime.cli import main\nraise SystemExit(main())\n",
        encoding="utf-8",
    )
    shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBSOCKET_")}
    env.update(
        WEBSOCKET_BACKEND="local",
        WEBSOCKET_LOCAL_STATE_DIR=str(local_stack.state_dir),
        PYTHONPATH=str(ROOT),
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
    )
    proc = subprocess.run(
        [NODE, "main.mjs", fake_session.session_id, sys.executable, "exit", "5"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["status"] == 3  # GAM's own non-zero exit, told apart from a failure
    assert report["types"] == ["started", "exit"]
    assert report["events"][-1]["code"] == 5
    assert report["streamed"] == [["error", report["streamed"][0][1]]]
    assert report["streamed"][0][1].startswith("Error joining session")
    assert report["failure"] == "the session could not run the command"
