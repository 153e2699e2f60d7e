"""Never reaches a step: starts a grandchild in its own process group and sleeps."""
import os
import subprocess
import sys
import time

import torch  # noqa: F401  (the bootstrap imported it already)

child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(sys.argv[1], "w") as f:
    f.write(f"{os.getpid()} {os.getpgid(0)} {child.pid}\n")
time.sleep(600)
