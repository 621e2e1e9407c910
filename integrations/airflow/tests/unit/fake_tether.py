"""A scripted stand-in for the tether CLI (see conftest.FakeTether).

$FAKE_TETHER_DIR/script.json maps a subcommand to a list of replies; the
n-th call of that subcommand gets the n-th reply (the last one repeats).
Every argv is appended to $FAKE_TETHER_DIR/calls.jsonl.
"""

import fcntl
import json
import os
import signal
import sys
import time

d = os.environ["FAKE_TETHER_DIR"]
argv = ["tether", *sys.argv[1:]]
cmd = argv[1] if len(argv) > 1 else ""
with open(os.path.join(d, "calls.jsonl"), "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    f.write(json.dumps(argv) + "\n")
for a in argv:
    # keep the elements an operator passed (it removes its file afterwards)
    if a.startswith("array.params="):
        with open(a.split("=", 1)[1]) as src, open(os.path.join(d, "params.jsonl"), "a") as dst:
            dst.write(src.read())
counter = os.path.join(d, f"count.{cmd}")
n = int(open(counter).read()) if os.path.exists(counter) else 0
open(counter, "w").write(str(n + 1))
try:
    replies = json.load(open(os.path.join(d, "script.json"))).get(cmd) or []
except FileNotFoundError:
    replies = []
if not replies:
    sys.stderr.write(f"fake tether: no reply scripted for {cmd!r}\n")
    sys.exit(97)
r = replies[min(n, len(replies) - 1)]
sys.stderr.write(r["stderr"])
sys.stderr.flush()
if r.get("sleep"):
    time.sleep(r["sleep"])
sys.stdout.write(r["stdout"])
sys.stdout.flush()
if r.get("signal"):
    os.kill(os.getpid(), r["signal"])
sys.exit(r["rc"])
