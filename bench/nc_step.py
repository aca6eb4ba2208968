"""One netcompose operation in a fresh process (so peak RSS is its own).  Run by run.py."""
import json
import resource
import sys
import time

from netcompose import Project

step, path, project = sys.argv[1], sys.argv[2], sys.argv[3]
started = time.perf_counter()
p = Project.load(path, project=project)
if step == "up":
    changes = len(p.up().plan.changes)
elif step == "plan":
    changes = len(p.plan().plan.changes)
else:
    changes = len(p.down().plan.changes)
print(json.dumps({"seconds": time.perf_counter() - started, "changes": changes,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
